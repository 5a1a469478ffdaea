"""Correlation and causation stay exact although the bus makes the envelope of a command,
a query or a synchronously handled event only when something needs it: whatever the order
in which handlers, nested messages, copied contexts and threads ask for envelopes, every
message handled while another is handled carries that one's correlation id and has its id
as causation id, and a message has one envelope, wherever it is read."""

from __future__ import annotations

import contextvars
import threading
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite.bus import MessageBus
from eventlite.envelope import Envelope, current_envelope
from eventlite.messages import Registry, command, event, query
from eventlite.middleware import CallNext

registry = Registry()


@command(registry=registry)
class Step:
    node: int


@query(registry=registry)
class Ask:
    node: int


@event(registry=registry)
class Happened:
    node: int


@event(registry=registry)
class HappenedLater:
    node: int


KINDS = {"dispatch": Step, "ask": Ask, "publish": Happened, "background": HappenedLater}

# A node: (how it is sent, when its handler reads its envelope, how it sends its children,
# children). "copy" runs the sending in a copy of the context, "thread" in a thread started
# with a copy of it (which also reads the envelope there).
Node = tuple[str, str, str, list[Any]]

nodes: st.SearchStrategy[Node] = st.recursive(
    st.tuples(
        st.sampled_from(list(KINDS)),
        st.sampled_from(["before", "after", "both"]),
        st.just("direct"),
        st.just([]),
    ),
    lambda children: st.tuples(
        st.sampled_from(list(KINDS)),
        st.sampled_from(["before", "after", "both"]),
        st.sampled_from(["direct", "copy", "thread"]),
        st.lists(children, max_size=3),
    ),
    max_leaves=12,
)


class Run:
    """Runs a tree of nodes on a bus and remembers every envelope each handler saw."""

    def __init__(self, bus: MessageBus, root: Node) -> None:
        self.bus = bus
        self.specs: dict[int, Node] = {}
        self.parent: dict[int, int | None] = {}
        self.seen: dict[int, list[Envelope]] = defaultdict(list)
        self._number(root, None)
        for kind, cls in KINDS.items():
            if kind in ("dispatch", "ask"):
                bus.register(cls, self.handle)
            else:
                bus.subscribe(cls, self.handle, background=kind == "background")

    def _number(self, node: Node, parent: int | None) -> int:
        n = len(self.specs)
        self.specs[n] = node
        self.parent[n] = parent
        for child in node[3]:
            self._number(child, n)
        return n

    def children(self, n: int) -> list[int]:
        return [c for c, p in self.parent.items() if p == n]

    def send(self, n: int) -> None:
        kind = self.specs[n][0]
        message = KINDS[kind](n)
        if kind in ("dispatch", "ask"):
            getattr(self.bus, kind)(message)
        else:
            self.bus.publish(message)

    def look(self, n: int) -> None:
        env = current_envelope()
        assert env is not None
        self.seen[n].append(env)

    def handle(self, message: Any) -> None:
        n = message.node
        _, when, via, _ = self.specs[n]
        if when in ("before", "both"):
            self.look(n)
        for child in self.children(n):
            if via == "direct":
                self.send(child)
            elif via == "copy":
                contextvars.copy_context().run(self.send, child)
            else:

                def in_thread(child: int = child) -> None:
                    self.look(n)
                    self.send(child)

                ctx = contextvars.copy_context()
                thread = threading.Thread(target=ctx.run, args=(in_thread,))
                thread.start()
                thread.join()
        if when in ("after", "both"):
            self.look(n)

    def check(self) -> None:
        envelopes: dict[int, Envelope] = {}
        for n in self.specs:
            seen = self.seen[n]
            assert seen, f"node {n} never ran"
            assert all(env is seen[0] for env in seen), f"node {n} saw two envelopes"
            envelopes[n] = seen[0]
        root = envelopes[0]
        assert (root.id, None) == (root.correlation_id, root.causation_id)
        for n, env in envelopes.items():
            parent = self.parent[n]
            if parent is None:
                continue
            assert (root.id, envelopes[parent].id) == (env.correlation_id, env.causation_id)
            assert envelopes[parent].id < env.id
        assert len(self.specs) == len({env.id for env in envelopes.values()})


def _stamp(envelope: Envelope, call_next: CallNext) -> Any:
    return call_next(envelope)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes, st.booleans())
def test_every_message_is_linked_to_the_one_being_handled(root: Node, middleware: bool) -> None:
    """For any tree of nested dispatches, asks and publishes (synchronous and background),
    sent directly, from a copied context or from a thread with a copied context, with
    handlers that read their envelope before or after their children, with or without
    middleware: each handler sees one envelope wherever it reads it, every child's causation
    is its parent's id and its correlation the root's id, and a parent's id sorts first."""
    with MessageBus(registry, middleware=[_stamp] if middleware else []) as bus:
        run = Run(bus, root)
        run.send(0)
        assert bus.drain(10)
    run.check()


def test_a_dispatch_that_needs_no_envelope_makes_none() -> None:
    """A handler that reads nothing leaves no envelope behind; one that reads it gets a
    first message's envelope (its own correlation id, no causation)."""
    with MessageBus(registry) as bus:
        bus.register(Step, lambda c: "done")
        bus.register(Ask, lambda q: current_envelope())
        assert "done" == bus.dispatch(Step(1))
        env = bus.ask(Ask(2))
    assert (Ask(2), env.id, None) == (env.message, env.correlation_id, env.causation_id)
    assert None is current_envelope()


def test_the_envelope_made_in_a_copied_context_is_the_handlers_own() -> None:
    """When a copy of the handler's context asks first, the handler later reads the very
    same envelope, and so do messages sent from either."""
    seen: list[Envelope | None] = []

    def handle(command: Step) -> None:
        contextvars.copy_context().run(lambda: seen.append(current_envelope()))
        seen.append(current_envelope())

    with MessageBus(registry) as bus:
        bus.register(Step, handle)
        bus.dispatch(Step(1))
    assert seen[0] is seen[1]


@pytest.mark.parametrize("kind", ["dispatch", "ask", "publish"])
def test_error_hooks_and_middleware_get_the_pending_envelope(kind: str) -> None:
    """A middleware, and an error hook told of a failing synchronous subscriber, receive
    the message's envelope, the same one the handler reads."""
    seen: list[Envelope | None] = []

    def middleware(envelope: Envelope, call_next: CallNext) -> Any:
        seen.append(envelope)
        return call_next(envelope)

    def handle(message: Any) -> None:
        seen.append(current_envelope())
        raise RuntimeError("boom")

    hooks: list[Envelope] = []
    with MessageBus(registry, middleware=[middleware]) as bus:
        bus.add_error_hook(lambda env, name, exc: hooks.append(env))
        cls = KINDS[kind]
        if kind == "publish":
            bus.subscribe(cls, handle)
            bus.publish(cls(1))
            seen.extend(hooks)
        else:
            bus.register(cls, handle)
            with pytest.raises(RuntimeError):
                getattr(bus, kind)(cls(1))
    assert all(env is seen[0] for env in seen)
    assert (2 if kind != "publish" else 3) == len(seen)
