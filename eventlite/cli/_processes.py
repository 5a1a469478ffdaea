"""``projections`` and ``sagas``: read models and saga instances.

``projections list``, ``sagas list`` and ``sagas show`` read through the library over the
store opened read-only (:meth:`Projector.status <eventlite.projection.Projector.status>`,
:meth:`SagaOrchestrator.list <eventlite.saga.SagaOrchestrator.list>` and ``get``), so they
need none of the application's code. ``projections rebuild`` does: a rebuild replays the
log through the projection's handlers, so it imports the application named by ``--app``
(a factory is called by :func:`~eventlite.app.call_app_factory` with the ``--db`` store)
and calls :meth:`Projector.rebuild <eventlite.projection.Projector.rebuild>` on its
projector.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from ..projection import ProjectionStatus, Projector
from ..saga import SagaInstance, SagaNotFound, SagaOrchestrator, SagaStatus
from ..store.storage import Storage
from ._base import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    CommandContext,
    add_subcommands,
    app_from_factory,
    load_target,
    register_command,
)
from ._format import cut, iso, positive, table, when

__all__ = ["projections", "sagas"]


# -- projections -----------------------------------------------------------------------------


def _projections_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per projection")


def _rebuild_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the projection's name")
    parser.add_argument(
        "--app",
        required=True,
        metavar="MODULE:APP",
        help="the application whose projector holds the projection: an App with a "
        "projector, a Projector, or a function returning one (given the --db store when it "
        "takes one: a parameter named db, or a first positional parameter)",
    )


def _projections_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(
        parser,
        {
            "list": (
                "each projection's mode, state, checkpoint and lag",
                _projections_list_arguments,
            ),
            "rebuild": ("empty a read model and replay the log into it", _rebuild_arguments),
        },
    )


def _status_dict(s: ProjectionStatus) -> dict[str, Any]:
    return {
        "name": s.name,
        "mode": s.mode,
        "state": s.state,
        "position": s.position,
        "head": s.head,
        "lag": s.lag,
        "error": s.error,
        "updated_at": iso(s.updated_at),
        "rebuilt_at": iso(s.rebuilt_at),
    }


def _projections_list(ctx: CommandContext) -> int:
    found = Projector(ctx.storage).status()
    if not found:
        raise CliError("no projection has a checkpoint in this store", EXIT_NOT_FOUND)
    if ctx.args.json:
        for s in found:
            ctx.emit(json.dumps(_status_dict(s), ensure_ascii=False))
        return EXIT_OK
    table(
        ctx,
        ["PROJECTION", "MODE", "STATE", "CHECKPOINT", "LAG", "UPDATED", "REBUILT", "ERROR"],
        [
            [
                s.name,
                s.mode,
                s.state,
                f"{s.position}/{s.head}",
                s.lag,
                when(s.updated_at),
                when(s.rebuilt_at),
                cut(s.error) if s.error else "-",
            ]
            for s in found
        ],
    )
    return EXIT_OK


def _projector_of(target: Any) -> Projector | None:
    if isinstance(target, Projector):
        return target
    found = getattr(target, "projector", None)
    return found if isinstance(found, Projector) else None


def _same_store(a: Storage, b: Storage) -> bool:
    """Whether two storages are the same store: one file, or one URL and schema."""
    if a.description == b.description:
        return True
    try:
        return os.path.exists(a.description) and os.path.samefile(a.description, b.description)
    except OSError:
        return False


def _progress(ctx: CommandContext, name: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr when it is a terminal; None on a pipe."""
    stream = ctx.err
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return None

    def show(done: int, total: int) -> None:
        share = 1.0 if total <= 0 else min(done / total, 1.0)
        filled = int(share * 30)
        stream.write(
            f"\rrebuilding {name} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{share:4.0%}  {done}/{total}"
        )
        stream.flush()

    return show


def _projections_rebuild(ctx: CommandContext) -> int:
    name, spec = ctx.args.name, ctx.args.app
    known = [s.name for s in Projector(ctx.storage).status()]
    if name not in known:
        listed = ", ".join(known) or "none"
        raise CliError(
            f"no projection named {name!r} in {ctx.where} (known: {listed})", EXIT_NOT_FOUND
        )
    target = load_target(spec)
    if _projector_of(target) is None and callable(target):
        with app_from_factory(spec, target, ctx.target) as made:
            position = _rebuild(ctx, spec, name, made)
    else:
        position = _rebuild(ctx, spec, name, target)
    ctx.emit(f"rebuilt projection {name}: replayed the log up to position {position}")
    return EXIT_OK


def _rebuild(ctx: CommandContext, spec: str, name: str, target: Any) -> int:
    projector = _projector_of(target)
    if projector is None:
        raise CliError(
            f"{spec} is not an App with a projector, nor a Projector: {type(target).__name__}"
        )
    if not _same_store(projector.storage, ctx.storage):
        raise CliError(
            f"{spec} works on {projector.storage.description}, not on {ctx.where}; name a "
            "function that takes the store (a parameter named db, or a first positional one)"
        )
    if name not in projector.projections:
        listed = ", ".join(sorted(projector.projections)) or "none"
        raise CliError(f"{spec} has no projection named {name!r} (it has: {listed})")
    bar = _progress(ctx, name)
    try:
        return projector.rebuild(name, progress=bar)
    finally:
        if bar is not None:
            ctx.err.write("\n")
            ctx.err.flush()


_PROJECTIONS = {"list": _projections_list, "rebuild": _projections_rebuild}


@register_command(
    "projections",
    help="read models: list their checkpoints, rebuild one",
    arguments=_projections_arguments,
)
def projections(ctx: CommandContext) -> int:
    """Run one ``projections`` subcommand."""
    ctx.require("projections")
    return _PROJECTIONS[ctx.args.subcommand](ctx)


# -- sagas -----------------------------------------------------------------------------------

_SAGA_STATUSES = tuple(s.value for s in SagaStatus)


def _sagas_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=_SAGA_STATUSES, help="only instances in this status")
    parser.add_argument("--saga", metavar="NAME", help="only instances of this saga")
    parser.add_argument("--limit", type=positive, metavar="N", help="at most N instances")
    parser.add_argument("--json", action="store_true", help="one JSON object per instance")


def _sagas_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the instance's id")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def _sagas_arguments(parser: argparse.ArgumentParser) -> None:
    add_subcommands(
        parser,
        {
            "list": ("saga instances, oldest first", _sagas_list_arguments),
            "show": ("one saga instance: steps, data, errors", _sagas_show_arguments),
        },
    )


def _data_value(data: Any) -> Any:
    to_dict = getattr(data, "to_dict", None)
    return to_dict() if callable(to_dict) else data


def _instance_dict(s: SagaInstance) -> dict[str, Any]:
    return {
        "id": s.id,
        "saga": s.saga,
        "status": s.status.value,
        "completed_steps": list(s.completed_steps),
        "compensated_steps": list(s.compensated_steps),
        "failed_step": s.failed_step,
        "error": None if s.error is None else str(s.error),
        "compensation_errors": [str(f) for f in s.compensation_errors],
        "data": _data_value(s.data),
        "started_at": iso(s.started_at),
        "updated_at": iso(s.updated_at),
        "finished_at": iso(s.finished_at),
    }


def _sagas_list(ctx: CommandContext) -> int:
    args = ctx.args
    found = SagaOrchestrator(ctx.storage).list(status=args.status, saga=args.saga, limit=args.limit)
    if not found:
        raise CliError("no saga instance matches", EXIT_NOT_FOUND)
    if args.json:
        for s in found:
            ctx.emit(json.dumps(_instance_dict(s), ensure_ascii=False))
        return EXIT_OK
    table(
        ctx,
        ["ID", "SAGA", "STATUS", "STEPS DONE", "FAILED STEP", "STARTED", "UPDATED"],
        [
            [
                s.id,
                s.saga,
                s.status.value,
                cut(", ".join(s.completed_steps) or "-", 40),
                s.failed_step or "-",
                when(s.started_at),
                when(s.updated_at),
            ]
            for s in found
        ],
    )
    return EXIT_OK


def _sagas_show(ctx: CommandContext) -> int:
    try:
        s = SagaOrchestrator(ctx.storage).get(ctx.args.id)
    except SagaNotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    if ctx.args.json:
        ctx.emit(json.dumps(_instance_dict(s), ensure_ascii=False))
        return EXIT_OK
    rows = [
        ("saga", s.saga),
        ("status", s.status.value),
        ("steps done", ", ".join(s.completed_steps) or "-"),
        ("compensated", ", ".join(s.compensated_steps) or "-"),
        ("failed step", s.failed_step or "-"),
        ("error", "-" if s.error is None else f"{s.error.error_type}: {s.error.message}"),
        ("started", when(s.started_at)),
        ("updated", when(s.updated_at)),
        ("finished", when(s.finished_at)),
    ]
    ctx.emit(f"saga instance {s.id}")
    for key, value in rows:
        ctx.emit(f"{key + ':':<13}{value}")
    for failure in s.compensation_errors:
        ctx.emit(f"{'undo failed:':<13}{failure.step}: {failure.error_type}: {failure.message}")
    ctx.emit("data:")
    for line in json.dumps(_data_value(s.data), indent=2, ensure_ascii=False).splitlines():
        ctx.emit("  " + line)
    return EXIT_OK


_SAGAS = {"list": _sagas_list, "show": _sagas_show}


@register_command("sagas", help="saga instances: list, show one", arguments=_sagas_arguments)
def sagas(ctx: CommandContext) -> int:
    """Run one ``sagas`` subcommand."""
    ctx.require("sagas")
    return _SAGAS[ctx.args.subcommand](ctx)
