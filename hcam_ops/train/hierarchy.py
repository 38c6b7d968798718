"""A label hierarchy: classes per level, fine to coarse, and each class's
parent one level up."""

from __future__ import annotations

import csv
from typing import Sequence

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
    def from_rows(cls, rows: Sequence[Sequence[str]]) -> "Hierarchy":
        """One row per fine class: its name, then its ancestors fine to coarse."""
        depth = len(rows[0])
        if depth < 2 or any(len(r) != depth for r in rows):
            raise ValueError("Hierarchy: every row needs the same number (>= 2) of levels")
        names = [sorted({r[l] for r in rows}) for l in range(depth)]
        names[0] = [r[0] for r in rows]
        if len(set(names[0])) != len(names[0]):
            raise ValueError("Hierarchy: a fine class is listed twice")
        index = [{n: i for i, n in enumerate(level)} for level in names]
        parents = []
        for l in range(depth - 1):
            p = torch.full((len(names[l]),), -1, dtype=torch.long)
            for r in rows:
                child, parent = index[l][r[l]], index[l + 1][r[l + 1]]
                if p[child] not in (-1, parent):
                    raise ValueError(f"Hierarchy: {r[l]!r} has two parents")
                p[child] = parent
            parents.append(p)
        return cls(names, parents)

    @classmethod
    def from_file(cls, path: str) -> "Hierarchy":
        """A CSV file (comma or tab): ``fine,parent[,grandparent]`` per line;
        a first line starting with ``#`` is a header."""
        with open(path, newline="") as f:
            text = f.read()
        dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
        rows = [r for r in csv.reader(text.splitlines(), dialect=dialect) if r and not r[0].startswith("#")]
        return cls.from_rows([[c.strip() for c in r] for r in rows])
