"""Sagas under SIGKILL: a child process runs sagas and is killed between steps, inside a
step, and during compensation; after each restart ``resume()`` carries on. In the end every
saga is ``completed`` or ``failed``, no step ran again after it was recorded as done, and
no compensation was skipped."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

STEPS = ["reserve", "charge", "ship", "notify"]

# Runs the sagas of a plan file (creating those not yet stored), after resuming the
# unfinished ones. Each step's effect is one committed row of ``effects``, which records
# whether the orchestrator had already stored the step as done when it ran (it never
# should have), and one row of ``outside``, an idempotent external system keyed by the
# step's idempotency key. ``block`` names a point ("<saga>:<step>:<do|undo>:<before|after>")
# where the child says BLOCKED and waits to be killed.
CHILD = r"""
import json, sys, threading
from eventlite.sqlite import SQLiteStorage
from eventlite.dlq import DeadLetterQueue
from eventlite.saga import Saga, SagaOrchestrator, SagaStep

path, plan_path, block, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
plan = json.load(open(plan_path))
storage = SQLiteStorage(path, synchronous="normal")
db = storage.database
with db.transaction() as tx:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS effects (n INTEGER PRIMARY KEY, saga_id TEXT NOT NULL, "
        "step TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, already_done INT NOT NULL)"
    )
    tx.execute("CREATE TABLE IF NOT EXISTS outside (key TEXT PRIMARY KEY)")
out_lock = threading.Lock()


def out(line):
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def effect(ctx, kind):
    with db.transaction() as tx:
        completed, compensated, errors = tx.execute(
            "SELECT completed, compensated, compensation_errors FROM sagas WHERE id = ?",
            (ctx.saga_id,),
        ).fetchone()
        if kind == "do":
            already = ctx.step in json.loads(completed)
        else:
            already = ctx.step in json.loads(compensated) + [
                e["step"] for e in json.loads(errors)
            ]
        tx.execute(
            "INSERT INTO effects (saga_id, step, kind, key, already_done) VALUES (?, ?, ?, ?, ?)",
            (ctx.saga_id, ctx.step, kind, ctx.idempotency_key, int(already)),
        )
        tx.execute("INSERT INTO outside (key) VALUES (?) ON CONFLICT DO NOTHING",
                   (ctx.idempotency_key,))
    out(f"{kind} {ctx.saga_id} {ctx.step}")


def pause(ctx, kind, when):
    if block == f"{ctx.saga_id}:{ctx.step}:{kind}:{when}":
        out("BLOCKED")
        sys.stdin.readline()


def make(step):
    def execute(ctx):
        pause(ctx, "do", "before")
        effect(ctx, "do")
        pause(ctx, "do", "after")
        if ctx.data.fail_at == step:
            raise RuntimeError(f"{step} failed")

    def compensate(ctx):
        pause(ctx, "undo", "before")
        effect(ctx, "undo")
        pause(ctx, "undo", "after")
        if step in ctx.data.bad_undo:
            raise RuntimeError(f"cannot undo {step}")

    return SagaStep(step, execute, compensate)


saga = Saga("order", [make(s) for s in ["reserve", "charge", "ship", "notify"]])
sagas = SagaOrchestrator(storage, dlq=DeadLetterQueue(storage))
sagas.register(saga)
for saga_id, (fail_at, bad_undo) in sorted(plan.items()):
    if sagas.find(saga_id) is None:
        sagas.create(saga, {"fail_at": fail_at, "bad_undo": bad_undo}, saga_id=saga_id)
if threads == 1:
    sagas.resume()
else:
    todo = [i.id for i in sagas.list(status="running") + sagas.list(status="compensating")]
    workers = [
        threading.Thread(target=lambda ids: [sagas.run(i) for i in ids], args=(todo[t::threads],))
        for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
out("DONE")
"""

Plan = dict[str, tuple[str | None, list[str]]]


def _plan(n: int, seed: int | None = None) -> Plan:
    """Which step fails (or none) and which compensations fail, per saga."""
    if seed is None:
        fixed: list[tuple[str | None, list[str]]] = [
            (None, []),
            ("ship", []),
            ("notify", ["charge"]),
            ("charge", []),
            (None, []),
            ("reserve", []),
            ("notify", []),
            (None, []),
        ]
        return {f"s-{i:03d}": fixed[i % len(fixed)] for i in range(n)}
    rnd = random.Random(seed)
    plan: Plan = {}
    for i in range(n):
        fail_at = rnd.choice([None, None, *STEPS])
        bad = [s for s in STEPS if rnd.random() < 0.1]
        plan[f"s-{i:03d}"] = (fail_at, bad)
    return plan


def _child(path: Path, plan_path: Path, block: str, threads: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(plan_path), block, str(threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_until(child: subprocess.Popen[str], stop: Any) -> bool:
    """Read the child's lines until ``stop(line)`` says kill (then SIGKILL it: True) or
    the child ends by itself (False)."""
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if stop(line.rstrip("\n")):
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                return True
        _, err = child.communicate()
        assert 0 == child.returncode, err
        return False
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()


def _check(path: Path, plan: Plan, repeats_allowed: set[str] | None) -> None:
    """Every saga ended as its plan says, with no step run after it was stored as done and
    every completed step compensated; with ``repeats_allowed``, exactly those idempotency
    keys ran twice (the steps killed after their effect, before being stored)."""
    raw = sqlite3.connect(path)
    try:
        sagas = {
            r[0]: (r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]))
            for r in raw.execute(
                "SELECT id, status, completed, compensated, compensation_errors FROM sagas"
            )
        }
        effects = raw.execute(
            "SELECT saga_id, step, kind, key, already_done FROM effects ORDER BY n"
        ).fetchall()
        outside = {r[0] for r in raw.execute("SELECT key FROM outside")}
        dead = {
            r[0] for r in raw.execute("SELECT key FROM dead_letters WHERE source = 'saga:order'")
        }
    finally:
        raw.close()
    assert sorted(plan) == sorted(sagas)
    assert [] == [e for e in effects if e[4]], "a step ran after it was recorded as done"
    expected_dead = set()
    for saga_id, (fail_at, bad_undo) in plan.items():
        status, completed, compensated, errors = sagas[saga_id]
        mine = [e for e in effects if e[0] == saga_id]
        did = [e[1] for e in mine if e[2] == "do"]
        undid = [e[1] for e in mine if e[2] == "undo"]
        if fail_at is None:
            assert ("completed", STEPS, []) == (status, completed, undid), saga_id
            assert STEPS == list(dict.fromkeys(did)), saga_id
            continue
        k = STEPS.index(fail_at)
        done = STEPS[:k]
        assert ("failed", done) == (status, completed), saga_id
        assert STEPS[: k + 1] == list(dict.fromkeys(did)), saga_id
        # no compensation skipped, none for the failed step, last completed first
        assert list(reversed(done)) == list(dict.fromkeys(undid)), saga_id
        failing = [s for s in reversed(done) if s in bad_undo]
        assert [s for s in reversed(done) if s not in bad_undo] == compensated, saga_id
        assert failing == [e["step"] for e in errors], saga_id
        if failing:
            expected_dead.add(saga_id)
    assert expected_dead == dead
    keys = Counter(e[3] for e in effects)
    assert set(keys) == outside
    if repeats_allowed is not None:
        assert repeats_allowed == {k for k, n in keys.items() if n > 1}
        assert {1, 2} >= set(keys.values())


BLOCKS = [
    "s-000:charge:do:before",  # between steps: reserve stored, charge not begun
    "s-000:ship:do:after",  # inside a step: its effect made, not yet stored as done
    "s-001:charge:undo:before",  # compensating: the first compensation not begun
    "s-001:reserve:undo:after",  # compensating: an effect undone, not yet stored
    "s-002:ship:undo:after",  # compensating a saga whose compensation of charge fails
    "s-006:ship:undo:before",
    "s-006:charge:undo:after",
]


def _key(block: str) -> str:
    """The idempotency key of the step or compensation a kill point is in."""
    saga_id, step, kind, _ = block.split(":")
    return f"{saga_id}:{step}" + (":compensate" if kind == "undo" else "")


def test_sigkill_between_steps_and_during_compensation(tmp_path: Path) -> None:
    """Killed at seven chosen points (each one reached: the child says so before it is
    killed), then run to the end: the outcome is exact, and only the steps killed after
    their effect ran twice, with the same idempotency key both times."""
    path = tmp_path / "sagas.db"
    plan = _plan(8)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    for block in BLOCKS:
        killed = _run_until(_child(path, plan_path, block), lambda line: line == "BLOCKED")
        assert killed, f"the child never reached {block}"
    assert not _run_until(_child(path, plan_path, "-"), lambda line: False)
    repeats = {_key(b) for b in BLOCKS if b.endswith(":after")}
    _check(path, plan, repeats)


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """A few kills after a random number of effects, wherever the process happens to be."""
    _random_kills(tmp_path, sagas=12, seed=7, threads=1, max_rounds=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_random_moments_repeated(tmp_path: Path, seed: int) -> None:
    """Many rounds of random kills over more sagas, run by two threads at once."""
    _random_kills(tmp_path, sagas=60, seed=seed, threads=2, max_rounds=40)


def _random_kills(tmp_path: Path, *, sagas: int, seed: int, threads: int, max_rounds: int) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "sagas.db"
    plan = _plan(sagas, seed)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    for _ in range(max_rounds):
        budget = [rnd.randint(1, 25)]

        def after_some(line: str, budget: list[int] = budget) -> bool:
            budget[0] -= 1
            return budget[0] == 0

        if not _run_until(_child(path, plan_path, "-", threads), after_some):
            break
    else:
        assert not _run_until(_child(path, plan_path, "-", threads), lambda line: False)
    _check(path, plan, None)
