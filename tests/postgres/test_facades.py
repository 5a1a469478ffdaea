"""The delivery and process facades users build run unchanged on a PostgreSQL storage."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from eventlite import Registry, command
from eventlite.clock import FakeClock
from eventlite.codec import Codec
from eventlite.dlq import DeadLetterQueue
from eventlite.idempotency import Idempotency
from eventlite.postgres import PostgresStorage
from eventlite.queue import WorkQueue
from eventlite.saga import Saga, SagaOrchestrator, SagaStep, StepContext

pytestmark = pytest.mark.services

Open = Callable[..., PostgresStorage]
registry = Registry()


@command(registry=registry, name="pgfacade.SendEmail")
class SendEmail:
    email: str


def test_work_queue_with_dead_letters(open_storage: Open) -> None:
    """A WorkQueue over PostgreSQL sends, receives and acks; a message failing its last
    receive becomes a dead letter, and a retried one comes back to the queue."""
    storage = open_storage(codec=Codec(registry))
    clock = FakeClock()
    dlq = DeadLetterQueue(storage, Codec(registry), clock=clock)
    emails = WorkQueue(storage, "emails", Codec(registry), max_receives=1, dlq=dlq, clock=clock)
    emails.send(SendEmail("ada@example.com"))
    emails.send(SendEmail("bob@example.com"))
    first, second = emails.receive(max=10)
    emails.ack(first.receipt)
    emails.nack(second.receipt, error=RuntimeError("smtp down"))
    [dead] = dlq.list()
    assert ("queue:emails", "RuntimeError", "smtp down") == (
        dead.source,
        dead.error_type,
        dead.error_message,
    )
    dlq.retry(dead.id)
    [again] = emails.receive()
    assert ("bob@example.com", 1) == (again.message.email, again.receive_count)
    emails.ack(again.receipt)
    assert (0, 0) == (emails.stats().total, dlq.count())


def test_idempotency_runs_once(open_storage: Open) -> None:
    """Idempotency.run over PostgreSQL runs the function once per key and hands its
    result to the later calls."""
    idempotency = Idempotency(open_storage())
    calls: list[int] = []

    def charge() -> dict[str, int]:
        calls.append(1)
        return {"charge": 7}

    assert {"charge": 7} == idempotency.run("order-1", charge)
    assert {"charge": 7} == idempotency.run("order-1", charge)
    assert 1 == len(calls)


def test_saga_compensates(open_storage: Open) -> None:
    """A saga over PostgreSQL whose second step fails compensates the first, and its
    instance is stored failed."""

    def reserve(ctx: StepContext) -> None:
        ctx.data.reserved = True

    def release(ctx: StepContext) -> None:
        ctx.data.reserved = False

    def charge(ctx: StepContext) -> None:
        raise RuntimeError("card declined")

    storage = open_storage(codec=Codec(registry))
    checkout = Saga("checkout", [SagaStep("reserve", reserve, release), SagaStep("charge", charge)])
    orchestrator = SagaOrchestrator(storage, Codec(registry))
    orchestrator.register(checkout)
    instance = orchestrator.start("checkout", {"order_id": "o-1"})
    stored = storage.sagas.load(instance.id)
    assert stored is not None
    assert ("failed", ("reserve",), "charge") == (
        stored.status.value,
        stored.compensated,
        stored.failed_step,
    )
