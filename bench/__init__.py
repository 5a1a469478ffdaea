"""eventlite's benchmarks: ``python -m bench [suite ...] [--quick]``.

Each suite is a module of this package with a ``run(quick: bool) -> list[Row]`` function.
Every row prints eventlite's figure beside the baseline measured in the same run, and the
ratio, so results from different machines can be compared.
"""
