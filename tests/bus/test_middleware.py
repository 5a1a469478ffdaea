"""Middleware around every handling, the built-in middleware, and RetryPolicy."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlite.bus import MessageBus
from eventlite.envelope import Envelope, current_envelope
from eventlite.messages import Registry, command, event, query
from eventlite.middleware import (
    CallNext,
    logging_middleware,
    retry_middleware,
    timing_middleware,
)
from eventlite.retry import RetryPolicy

registry = Registry()


@command(registry=registry)
class Deposit:
    account: str
    amount: int


@query(registry=registry)
class Balance:
    account: str


@event(registry=registry)
class Deposited:
    account: str
    amount: int


class Failure(Exception):
    """An exception raised on purpose by a test handler."""


def recording(log: list[str], label: str) -> Any:
    """A middleware that notes when it enters and leaves, and what it wrapped."""

    def middleware(envelope: Envelope, call_next: CallNext) -> Any:
        log.append(f"{label} in {envelope.type} {call_next.handler_name}")
        result = call_next(envelope)
        log.append(f"{label} out")
        return result

    return middleware


def test_middleware_wraps_commands_queries_and_each_subscriber_outermost_first() -> None:
    """Every handling, command, query and each subscriber delivery, runs inside the
    middleware chain, the first middleware given outermost."""
    log: list[str] = []
    with MessageBus(registry, middleware=[recording(log, "a"), recording(log, "b")]) as bus:
        bus.register(Deposit, lambda c: log.append("deposit"), name="deposit")
        bus.register(Balance, lambda q: 42, name="balance")
        bus.subscribe(Deposited, lambda e: log.append("s1"), name="s1")
        bus.subscribe(Deposited, lambda e: log.append("s2"), name="s2")
        bus.dispatch(Deposit("acc", 5))
        answer = bus.ask(Balance("acc"))
        bus.publish(Deposited("acc", 5))
    assert 42 == answer
    assert [
        "a in Deposit deposit", "b in Deposit deposit", "deposit", "b out", "a out",
        "a in Balance balance", "b in Balance balance", "b out", "a out",
        "a in Deposited s1", "b in Deposited s1", "s1", "b out", "a out",
        "a in Deposited s2", "b in Deposited s2", "s2", "b out", "a out",
    ] == log  # fmt: skip


def test_middleware_receives_the_current_envelope() -> None:
    """The envelope given to a middleware is the one current while the handler runs."""
    given_envs: list[Envelope] = []
    current_envs: list[Envelope | None] = []

    def spy(envelope: Envelope, call_next: CallNext) -> Any:
        given_envs.append(envelope)
        return call_next(envelope)

    with MessageBus(registry, middleware=[spy]) as bus:
        bus.register(Deposit, lambda c: current_envs.append(current_envelope()))
        bus.dispatch(Deposit("acc", 1))
    assert given_envs == current_envs
    assert Deposit("acc", 1) == given_envs[0].message


def test_the_chain_is_composed_once_not_per_call() -> None:
    """Every call of a handler passes the middleware the same call_next object: the chain
    was built when the handler was registered."""
    nexts: list[CallNext] = []

    def middleware(envelope: Envelope, call_next: CallNext) -> Any:
        nexts.append(call_next)
        return call_next(envelope)

    with MessageBus(registry, middleware=[middleware]) as bus:
        bus.register(Deposit, lambda c: None)
        for i in range(3):
            bus.dispatch(Deposit("acc", i))
    assert 3 == len(nexts)
    assert 1 == len({id(n) for n in nexts})


def test_a_middleware_can_answer_without_calling_the_handler() -> None:
    """A middleware's return value is the result; not calling call_next skips the handler."""
    called: list[Any] = []

    def cache(envelope: Envelope, call_next: CallNext) -> Any:
        return "cached"

    with MessageBus(registry, middleware=[cache]) as bus:
        bus.register(Balance, called.append)
        assert "cached" == bus.ask(Balance("acc"))
    assert [] == called


def test_a_middleware_can_hand_on_a_changed_envelope() -> None:
    """When a middleware calls call_next with another envelope, the handler gets that
    envelope's message, and that envelope is current while it runs."""
    seen: list[tuple[Any, str | None]] = []

    def add_header(envelope: Envelope, call_next: CallNext) -> Any:
        meta = envelope.metadata
        changed = envelope.replace(
            metadata=type(meta)(
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
                headers={"tenant": "t-1"},
            )
        )
        return call_next(changed)

    def handler(c: Deposit) -> None:
        env = current_envelope()
        seen.append((c, env.metadata.headers.get("tenant") if env else None))

    with MessageBus(registry, middleware=[add_header]) as bus:
        bus.register(Deposit, handler)
        bus.dispatch(Deposit("acc", 3))
    assert [(Deposit("acc", 3), "t-1")] == seen


def test_logging_middleware_logs_each_handling_and_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """logging_middleware logs the start and end of a handling at its level, and a failure
    at WARNING with the exception, which still propagates."""
    logger = logging.getLogger("test.bus.handling")
    boom = Failure("declined")

    def decline(c: Deposit) -> None:
        raise boom

    with MessageBus(registry, middleware=[logging_middleware(logger)]) as bus:
        bus.register(Balance, lambda q: 1, name="balance")
        bus.register(Deposit, decline, name="decline")
        with caplog.at_level(logging.DEBUG, logger="test.bus.handling"):
            bus.ask(Balance("acc"))
            with pytest.raises(Failure) as info:
                bus.dispatch(Deposit("acc", 1))
    assert boom is info.value
    records = [(r.levelno, r.getMessage().split(" ")[:3]) for r in caplog.records]
    assert [
        (logging.DEBUG, ["balance", "handling", "Balance"]),
        (logging.DEBUG, ["balance", "handled", "Balance"]),
        (logging.DEBUG, ["decline", "handling", "Deposit"]),
        (logging.WARNING, ["decline", "failed", "on"]),
    ] == records
    assert "Failure: declined" in caplog.records[-1].getMessage()


def test_logging_middleware_is_silent_when_its_logger_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the logger above the middleware's level, nothing is logged on success."""
    with MessageBus(registry, middleware=[logging_middleware(level=logging.DEBUG)]) as bus:
        bus.register(Balance, lambda q: 7)
        with caplog.at_level(logging.INFO, logger="eventlite.bus"):
            assert 7 == bus.ask(Balance("acc"))
    assert [] == caplog.records


def fake_clock(*readings: float) -> Any:
    values: Iterator[float] = iter(readings)
    return lambda: next(values)


def test_timing_middleware_reports_type_handler_duration_and_success() -> None:
    """timing_middleware calls its callback with the registered type name, the handler's
    name, the seconds the handling took and whether it succeeded."""
    reports: list[tuple[str, str, float, bool]] = []

    def fail(c: Deposit) -> None:
        raise Failure("no")

    timing = timing_middleware(
        lambda *args: reports.append(args), clock=fake_clock(10.0, 10.25, 20.0, 20.5)
    )
    with MessageBus(registry, middleware=[timing]) as bus:
        bus.register(Balance, lambda q: 1, name="balance")
        bus.register(Deposit, fail, name="fail")
        bus.ask(Balance("acc"))
        with pytest.raises(Failure):
            bus.dispatch(Deposit("acc", 1))
    assert [("Balance", "balance", 0.25, True), ("Deposit", "fail", 0.5, False)] == reports


def test_a_failing_timing_callback_is_logged_and_does_not_break_handling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Metrics never break handling: a callback's exception is logged and swallowed."""

    def broken(*args: Any) -> None:
        raise RuntimeError("metrics down")

    with MessageBus(registry, middleware=[timing_middleware(broken)]) as bus:
        bus.register(Balance, lambda q: 3)
        with caplog.at_level(logging.ERROR, logger="eventlite.bus"):
            assert 3 == bus.ask(Balance("acc"))
    assert ["timing callback"] == [r.getMessage()[:15] for r in caplog.records]


@given(max_attempts=st.integers(1, 4), failures=st.integers(0, 5))
def test_retry_middleware_retries_a_command_and_reraises_the_last_failure(
    max_attempts: int, failures: int
) -> None:
    """retry_middleware calls a failing handler up to max_attempts times; the result of the
    first success is returned, else the last attempt's exception propagates."""
    calls: list[int] = []

    def flaky(c: Deposit) -> str:
        calls.append(c.amount)
        if len(calls) <= failures:
            raise Failure(f"attempt {len(calls)}")
        return "ok"

    policy = RetryPolicy(max_attempts=max_attempts)
    with MessageBus(registry, middleware=[retry_middleware(policy)]) as bus:
        bus.register(Deposit, flaky)
        if failures < max_attempts:
            assert "ok" == bus.dispatch(Deposit("acc", 1))
        else:
            with pytest.raises(Failure) as info:
                bus.dispatch(Deposit("acc", 1))
            assert f"attempt {max_attempts}" == str(info.value)
    assert min(failures + 1, max_attempts) == len(calls)


# -- RetryPolicy -------------------------------------------------------------------------------


def test_retry_policy_defaults() -> None:
    """RetryPolicy() gives three attempts with a 0.1 s initial backoff doubling to 30 s."""
    assert (3, 0.1, 2.0, 30.0, 0.1) == (
        RetryPolicy().max_attempts,
        RetryPolicy().initial,
        RetryPolicy().multiplier,
        RetryPolicy().max_delay,
        RetryPolicy().jitter,
    )


def test_retry_policy_delays_grow_exponentially_up_to_the_cap() -> None:
    """Without jitter the wait before attempt n is initial * multiplier**(n-2), capped; the
    first attempt has no wait."""
    policy = RetryPolicy(max_attempts=10, initial=0.5, multiplier=3.0, max_delay=10.0, jitter=0)
    assert [0.0, 0.5, 1.5, 4.5, 10.0, 10.0] == [policy.delay(n) for n in range(1, 7)]
    assert 10.0 == policy.delay(5000)


@given(
    attempt=st.integers(2, 60),
    jitter=st.floats(0, 1),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_retry_policy_jitter_stays_within_its_fraction_and_the_cap(
    attempt: int, jitter: float, draw: float
) -> None:
    """A jittered wait lies within jitter of the plain wait, and never above max_delay."""
    policy = RetryPolicy(initial=0.2, multiplier=2.0, max_delay=5.0, jitter=jitter)
    plain = min(0.2 * 2.0 ** (attempt - 2), 5.0)
    delay = policy.delay(attempt, random=lambda: draw)
    assert plain * (1 - jitter) - 1e-9 <= delay <= min(plain * (1 + jitter), 5.0) + 1e-9


def test_retry_policy_jitter_is_repeatable_with_a_fixed_random() -> None:
    """The random source can be fixed: 0 gives the shortest wait, 0.5 the plain one."""
    policy = RetryPolicy(initial=1.0, multiplier=2.0, jitter=0.5)
    assert [0.5, 1.0, 2.0] == [
        policy.delay(2, random=lambda: 0.0),
        policy.delay(2, random=lambda: 0.5),
        policy.delay(3, random=lambda: 0.5),
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial": -1}, "initial"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_delay": -0.1}, "max_delay"),
        ({"jitter": 1.5}, "jitter"),
        ({"initial": float("nan")}, "initial"),
    ],
)
def test_retry_policy_refuses_values_out_of_range(kwargs: dict[str, Any], field: str) -> None:
    """A policy with a field out of range raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_retry_policy_attempts_are_numbered_from_one() -> None:
    """delay(0) is a mistake and says so."""
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().delay(0)
