"""``graph``: the application's message flow as a Mermaid flowchart."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._base import (
    EXIT_OK,
    CliError,
    CommandContext,
    app_from_factory,
    load_target,
    register_command,
)

if TYPE_CHECKING:
    from ..app import App
    from ..bus import MessageBus
    from ..messages import Registry

__all__ = ["graph", "mermaid"]


# -- graph -----------------------------------------------------------------------------------


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:APP",
        help="the application: an App, a MessageBus, or a function that returns one (given "
        "a temporary file when it takes a store: a parameter named db, or a first "
        "positional parameter)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="wrap the diagram in a ```mermaid fence"
    )


def _short(name: str) -> str:
    return name.rsplit("<locals>.", 1)[-1]


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def _aggregates(registry: Registry, module: str | None) -> list[type[Any]]:
    """The Aggregate subclasses to draw: those defined in ``module``, and those whose
    applied events are all in ``registry``; sorted by name."""
    from ..aggregate import Aggregate

    found: list[type[Any]] = []
    seen: set[type[Any]] = set()
    todo: list[type[Any]] = list(Aggregate.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        applied = list(cls._appliers)
        if not applied:
            continue
        if cls.__module__ == module or all(registry.find(t) is not None for t in applied):
            found.append(cls)
    return sorted(found, key=lambda c: (c.__qualname__, c.__module__))


def mermaid(
    target: App | MessageBus, registry: Registry | None = None, *, module: str | None = None
) -> list[str]:
    """The lines of a Mermaid ``flowchart`` of an app or a bus: commands and queries to
    their handlers, events to their subscribers (dotted when in the background), and the
    registry's messages that nothing handles.

    For an :class:`~eventlite.app.App`, also: aggregates to the events they record,
    events to durable subscribers, projections, the sagas they start and process
    managers (thick arrows: delivered from the log). Aggregates are the subclasses of
    :class:`~eventlite.aggregate.Aggregate` defined in ``module`` or whose applied events
    are all in the registry."""
    from ..app import App
    from ..messages import MessageKind

    app = target if isinstance(target, App) else None
    bus = target.bus if isinstance(target, App) else target
    if registry is None:
        registry = target.registry
    ids: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    nodes: list[str] = []
    edges: list[str] = []

    def node_id(
        prefix: str, key: str, shape: tuple[str, str], label: str, ident: str | None = None
    ) -> str:
        known = ids.get((prefix, key))
        if known is not None:
            return known
        text = label if ident is None else ident
        base = prefix + "".join(c if c.isascii() and c.isalnum() else "_" for c in text)
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

    def message_name(cls: type[Any]) -> str:
        entry = registry.find(cls)
        return entry.name if entry is not None else cls.__qualname__

    def handler_node(fn: Callable[..., Any], name: str) -> str:
        module = getattr(fn, "__module__", None) or ""
        local = name[len(module) + 1 :] if module and name.startswith(module + ".") else name
        return node_id("h_", f"{module}:{local}", ("[", "]"), _short(local))

    handlers = bus.handlers()
    for cls in sorted(handlers, key=lambda c: c.__qualname__):
        fn = handlers[cls]
        source = message_node(cls)
        target_id = handler_node(fn, getattr(fn, "__qualname__", repr(fn)))
        edges.append(f"    {source} --> {target_id}")
    for sub in bus.subscriptions():
        arrow = " -.->|background| " if sub.background else " --> "
        source = message_node(sub.event_type)
        target_id = handler_node(sub.handler, sub.name)
        edges.append(f"    {source}{arrow}{target_id}")

    for agg in _aggregates(registry, module) if app is not None else []:
        source = node_id(
            "a_", f"{agg.__module__}:{agg.__qualname__}", ("[[", "]]"), _short(agg.__qualname__)
        )
        for event_type in sorted(agg._appliers, key=message_name):
            edges.append(f"    {source} -- records --> {message_node(event_type)}")

    if app is not None and app.database is not None:
        starts = app.saga_starts()
        managers = app.processes.managers
        skip = set(managers) | {subscriber for _, subscriber in starts.values()}
        for name, event_type in sorted(app.durable_subscriptions(), key=lambda s: s[0]):
            if name in skip:
                continue
            source = message_node(event_type)
            edges.append(f"    {source} ==>|durable| {node_id('d_', name, ('[', ']'), name)}")
        for name, projection in sorted(app.projector.projections.items()):
            target_id = node_id("p_", name, ("[(", ")]"), name)
            for event_type in sorted(type(projection).handled_types(), key=message_name):
                edges.append(f"    {message_node(event_type)} ==> {target_id}")
        for name, saga in sorted(app.sagas.sagas.items()):
            steps = ", ".join(step.name for step in saga.steps)
            target_id = node_id("s_", name, (">", "]"), f"saga {name}: {steps}", name)
            if name in starts:
                edges.append(f"    {message_node(starts[name][0])} ==>|starts| {target_id}")
        for name, manager in sorted(managers.items()):
            target_id = node_id("pm_", name, ("[/", "\\]"), name)
            starting = manager.starting_types()
            for event_type in sorted(manager.handled_types(), key=message_name):
                arrow = " ==>|starts| " if event_type in starting else " ==> "
                edges.append(f"    {message_node(event_type)}{arrow}{target_id}")

    for entry in sorted(registry, key=lambda e: e.name):
        message_node(entry.cls)
    return ["flowchart LR", *nodes, *edges]


@register_command(
    "graph",
    help="the app's message flow as a Mermaid flowchart",
    arguments=_graph_arguments,
    needs_db=False,
)
def graph(ctx: CommandContext) -> int:
    """Import the named app and print its commands, handlers, aggregates, events,
    subscribers, projections, sagas and process managers."""
    from ..app import App
    from ..bus import MessageBus

    spec = ctx.args.target
    target = load_target(spec)
    if callable(target) and not isinstance(target, (App, MessageBus)):
        with app_from_factory(spec, target, None) as made:
            lines = _draw(spec, made)
    else:
        lines = _draw(spec, target)
    if ctx.args.markdown:
        lines = ["```mermaid", *lines, "```"]
    for line in lines:
        ctx.emit(line)
    return EXIT_OK


def _draw(spec: str, target: Any) -> list[str]:
    from ..app import App
    from ..bus import MessageBus

    if not isinstance(target, (App, MessageBus)):
        raise CliError(f"{spec} is not an App or a MessageBus: {type(target).__name__}")
    return mermaid(target, module=spec.partition(":")[0])
