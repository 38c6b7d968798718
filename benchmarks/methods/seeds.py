"""What the methods benchmarks' tables share: the results grouped by run, in
the order the runs first appear, and a mean ± population std over seeds."""

from __future__ import annotations

import statistics


def by_run(results: list[dict]) -> list[tuple[str, list[dict]]]:
    """[(run, its results)], runs in the order they first appear."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["run"], []).append(r)
    return list(groups.items())


def mean_std(values, digits: int = 3) -> str:
    """'mean ± std' (population std over the seeds) to `digits` decimals."""
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"
