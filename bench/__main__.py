"""Run benchmark suites: ``python -m bench [SUITE ...] [--quick]``; the suites are SUITES."""

from __future__ import annotations

import argparse
import importlib
import sys

from ._harness import machine, print_rows

SUITES = ["bus", "store", "delivery", "read", "postgres", "streams", "bridges", "scaling"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", help=f"suites to run (default: all of {SUITES})")
    parser.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    args = parser.parse_args(argv)
    names = args.suites or SUITES
    print(f"Machine: {machine()}\n")
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"(suite {name!r} does not exist yet)\n", file=sys.stderr)
                continue
            raise
        print_rows(name, module.run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
