"""OpenTelemetry spans for the bridges (``pip install 'eventlite[otel]'``), optional.

When ``opentelemetry-api`` is installed and an application configured a tracer provider,
each message an inbound bridge handles runs inside a ``CONSUMER`` span that continues the
trace of the W3C ``traceparent`` it carries (the sender's trace: one trace from the first
request through every service), and each batch an outbound bridge sends runs inside a
``PRODUCER`` span. Without the package, or without a configured provider (the API's no-op
tracer), nothing is recorded and nothing is imported at startup: the cost is one check per
batch.

Attributes follow OpenTelemetry's messaging conventions: ``messaging.system`` (the
broker's name), ``messaging.destination.name``, ``messaging.operation.type``
(``process``/``send``), ``messaging.message.id`` and ``messaging.batch.message_count``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from ..envelope import Envelope

__all__ = ["process_span", "send_span", "tracer"]

_NAME = "eventlite.bridges"


def tracer() -> Any | None:
    """The OpenTelemetry tracer of the bridges, or None when ``opentelemetry-api`` is not
    installed or no tracer provider is configured (spans would go nowhere). Asked once
    per batch, so a provider configured after the bridge started is used from then on."""
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider.get_tracer(_NAME)


def _parent(envelope: Envelope) -> Any | None:
    headers = envelope.metadata.headers
    parent = headers.get("traceparent")
    if parent is None:
        return None
    carrier = {"traceparent": parent}
    state = headers.get("tracestate")
    if state is not None:
        carrier["tracestate"] = state
    module = importlib.import_module("opentelemetry.trace.propagation.tracecontext")
    return module.TraceContextTextMapPropagator().extract(carrier)


_NO_SPAN: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def process_span(
    tracer: Any | None, envelope: Envelope, system: str, source: str
) -> contextlib.AbstractContextManager[None]:
    """A ``CONSUMER`` span around the handling of ``envelope`` received from ``source``,
    child of the trace its ``traceparent`` names; nothing when ``tracer`` is None (a
    shared do-nothing context: the cost of a message without tracing)."""
    if tracer is None:
        return _NO_SPAN
    return _process_span(tracer, envelope, system, source)


@contextlib.contextmanager
def _process_span(tracer: Any, envelope: Envelope, system: str, source: str) -> Iterator[None]:
    kind = importlib.import_module("opentelemetry.trace").SpanKind.CONSUMER
    with tracer.start_as_current_span(
        f"process {envelope.type}",
        context=_parent(envelope),
        kind=kind,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": source,
            "messaging.operation.type": "process",
            "messaging.message.id": envelope.id,
        },
    ):
        yield


@contextlib.contextmanager
def send_span(tracer: Any | None, system: str, destination: str, count: int) -> Iterator[None]:
    """A ``PRODUCER`` span around one confirmed batch of ``count`` messages; nothing when
    ``tracer`` is None."""
    if tracer is None:
        yield
        return
    kind = importlib.import_module("opentelemetry.trace").SpanKind.PRODUCER
    with tracer.start_as_current_span(
        f"send {destination}",
        kind=kind,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": destination,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": count,
        },
    ):
        yield
