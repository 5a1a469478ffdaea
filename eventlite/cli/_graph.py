"""``graph``: the application's message flow as a Mermaid flowchart."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import EXIT_OK, CliError, CommandContext, load_target, register_command

if TYPE_CHECKING:
    from ..bus import MessageBus
    from ..messages import Registry

__all__ = ["graph", "mermaid"]


# -- graph -----------------------------------------------------------------------------------


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:APP",
        help="the application: an App, a MessageBus, or a function that returns one",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="wrap the diagram in a ```mermaid fence"
    )


def _short(name: str) -> str:
    return name.rsplit("<locals>.", 1)[-1]


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def mermaid(bus: MessageBus, registry: Registry | None = None) -> list[str]:
    """The lines of a Mermaid ``flowchart`` of a bus: commands and queries to their
    handlers, events to their subscribers (dotted when in the background), and the
    registry's messages that nothing handles."""
    from ..messages import MessageKind

    registry = registry if registry is not None else bus.registry
    ids: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    nodes: list[str] = []
    edges: list[str] = []

    def node_id(prefix: str, key: str, shape: tuple[str, str], label: str) -> str:
        known = ids.get((prefix, key))
        if known is not None:
            return known
        base = prefix + "".join(c if c.isalnum() else "_" for c in label)
        new, n = base, 1
        while new in taken:
            n += 1
            new = f"{base}_{n}"
        taken.add(new)
        ids[(prefix, key)] = new
        nodes.append(f"    {new}{shape[0]}{_label(label)}{shape[1]}")
        return new

    def message_node(cls: type[Any]) -> str:
        entry = registry.find(cls)
        name = entry.name if entry is not None else cls.__qualname__
        kind = entry.kind if entry is not None else None
        if cls is object:
            return node_id("e_", "object", ("([", "])"), "every event")
        if kind is MessageKind.QUERY:
            return node_id("q_", name, ("{{", "}}"), name)
        if kind is MessageKind.EVENT:
            return node_id("e_", name, ("([", "])"), name)
        if kind is MessageKind.COMMAND:
            return node_id("c_", name, ("[/", "/]"), name)
        return node_id("m_", name, ("[", "]"), name)

    def handler_node(fn: Callable[..., Any], name: str) -> str:
        module = getattr(fn, "__module__", None) or ""
        local = name[len(module) + 1 :] if module and name.startswith(module + ".") else name
        return node_id("h_", f"{module}:{local}", ("[", "]"), _short(local))

    handlers = bus.handlers()
    for cls in sorted(handlers, key=lambda c: c.__qualname__):
        fn = handlers[cls]
        source = message_node(cls)
        target = handler_node(fn, getattr(fn, "__qualname__", repr(fn)))
        edges.append(f"    {source} --> {target}")
    for sub in bus.subscriptions():
        arrow = " -.->|background| " if sub.background else " --> "
        source = message_node(sub.event_type)
        target = handler_node(sub.handler, sub.name)
        edges.append(f"    {source}{arrow}{target}")
    handled = set(handlers) | {s.event_type for s in bus.subscriptions()}
    for entry in sorted(registry, key=lambda e: e.name):
        if entry.cls not in handled:
            message_node(entry.cls)
    return ["flowchart LR", *nodes, *edges]


@register_command(
    "graph",
    help="the app's message flow as a Mermaid flowchart",
    arguments=_graph_arguments,
    needs_db=False,
)
def graph(ctx: CommandContext) -> int:
    """Import the named app and print its commands, handlers, events and subscribers."""
    from ..app import App
    from ..bus import MessageBus

    spec = ctx.args.target
    target = load_target(spec)
    made = False
    if callable(target) and not isinstance(target, (App, MessageBus)):
        try:
            target = target()
        except Exception as exc:
            raise CliError(f"calling {spec} failed: {type(exc).__name__}: {exc}") from None
        made = True
    try:
        if isinstance(target, App):
            lines = mermaid(target.bus, target.registry)
        elif isinstance(target, MessageBus):
            lines = mermaid(target)
        else:
            raise CliError(f"{spec} is not an App or a MessageBus: {type(target).__name__}")
    finally:
        if made and isinstance(target, (App, MessageBus)):
            target.close()
    if ctx.args.markdown:
        lines = ["```mermaid", *lines, "```"]
    for line in lines:
        ctx.emit(line)
    return EXIT_OK
