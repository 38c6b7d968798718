"""A label hierarchy: classes per level, fine to coarse, and each class's
parent one level up."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import torch


class Hierarchy:
    """``names[l]``: the class names of level ``l`` (0 = finest);
    ``parents[l]``: LongTensor ``[n_l]``, the level-``l+1`` class of each
    level-``l`` class."""

    def __init__(self, names: Sequence[Sequence[str]], parents: Sequence[torch.Tensor]):
        if len(parents) != len(names) - 1:
            raise ValueError("Hierarchy: one parent map per level but the coarsest")
        for l, p in enumerate(parents):
            if p.shape != (len(names[l]),) or int(p.min()) < 0 or int(p.max()) >= len(names[l + 1]):
                raise ValueError(f"Hierarchy: parents[{l}] must map {len(names[l])} classes into {len(names[l + 1])}")
        self.names = [list(n) for n in names]
        self.parents = [p.long() for p in parents]

    @property
    def num_classes(self) -> list[int]:
        return [len(n) for n in self.names]

    def labels(self, fine: torch.Tensor) -> list[torch.Tensor]:
        """The label of every level from the finest."""
        out = [fine]
        for p in self.parents:
            out.append(p.to(fine.device)[out[-1]])
        return out

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[str]], where: Sequence[str] | None = None) -> Hierarchy:
        """One row per fine class: its name, then its ancestors fine to coarse.
        ``where[i]`` names row ``i`` in messages (a file and line)."""
        where = list(where) if where is not None else [f"row {i + 1}" for i in range(len(rows))]
        if not rows:
            raise ValueError("Hierarchy: no rows")
        depth = len(rows[0])
        if depth < 2:
            raise ValueError(f"Hierarchy: {where[0]}: needs a fine class and at least one parent, got {list(rows[0])}")
        for r, w in zip(rows, where):
            if len(r) != depth:
                raise ValueError(f"Hierarchy: {w}: {len(r)} columns, the first row has {depth}")
            if any(not c for c in r):
                raise ValueError(f"Hierarchy: {w}: an empty class name")
        names = [sorted({r[l] for r in rows}) for l in range(depth)]
        names[0] = [r[0] for r in rows]
        seen = {}
        for r, w in zip(rows, where):
            if r[0] in seen:
                raise ValueError(f"Hierarchy: {w}: fine class {r[0]!r} listed twice (first at {seen[r[0]]})")
            seen[r[0]] = w
        index = [{n: i for i, n in enumerate(level)} for level in names]
        parents = []
        for l in range(depth - 1):
            p = torch.full((len(names[l]),), -1, dtype=torch.long)
            for r, w in zip(rows, where):
                child, parent = index[l][r[l]], index[l + 1][r[l + 1]]
                if p[child] not in (-1, parent):
                    raise ValueError(f"Hierarchy: {w}: {r[l]!r} has two parents")
                p[child] = parent
            parents.append(p)
        return cls(names, parents)

    @classmethod
    def from_file(cls, path: str) -> Hierarchy:
        """A CSV file (comma or tab): ``fine,parent[,grandparent]`` per line;
        lines starting with ``#`` are comments (a header). Errors name the
        file and line."""
        with open(path, newline="") as f:
            text = f.read()
        lines = text.splitlines()
        dialect = "excel-tab" if lines and "\t" in lines[0] else "excel"
        rows, where = [], []
        for number, row in enumerate(csv.reader(lines, dialect=dialect), start=1):
            if row and not row[0].lstrip().startswith("#") and any(c.strip() for c in row):
                rows.append([c.strip() for c in row])
                where.append(f"{path} line {number}")
        if not rows:
            raise ValueError(f"{path}: no rows (expected fine,parent[,grandparent] per line)")
        return cls.from_rows(rows, where)
