"""The figures ``train.precision: auto`` measured, kept on disk per backbone and machine.

One small JSON file per key (backbone, image size, batch size, libraries, the CPU and its
flags and threads): a piece's seconds per image each way, what timing its float32 side
cost, and the policy last chosen (:class:`Kept`). Figures of another method or another
machine are never read (they have another key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlexp.model._precision import BF16, F32, Figures

# Of the measurement: figures measured another way are not reused (4: per stage piece, per backbone,
# on the run's own backbone; 3 also kept the cut per plan, from a copy built to find it).
METHOD = 4


def figures_key(**what: Any) -> str:
    """The key of a backbone's figures: a hash of everything given (backbone, image size,
    batch size, backend and versions, CPU and its flags and threads), sorted, with :data:`METHOD`."""
    text = json.dumps({**what, "method": METHOD}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Kept:
    """The figures of one backbone on one machine, as measured so far.

    Attributes:
        figures: piece key -> policy -> seconds per image.
        cost_s: piece key -> seconds its float32 side took to time (its trace and calls).
        last: the prefix policy last chosen for this backbone here: the next run builds its
            backbone under it, and builds again only where its own decision differs.
    """

    figures: Figures = field(default_factory=dict)
    cost_s: dict[str, float] = field(default_factory=dict)
    last: str | None = None

    def merged(self, other: Kept) -> Kept:
        """These figures with ``other``'s added (``other`` wins where both have one)."""
        figures = {k: dict(v) for k, v in self.figures.items()}
        for k, v in other.figures.items():
            figures.setdefault(k, {}).update(v)
        return Kept(figures, {**self.cost_s, **other.cost_s}, other.last or self.last)


class FigureStore:
    """Measured figures on disk, one small JSON file per key (``<folder>/<key>.json``).

    Written atomically, after merging with what is on disk then: concurrent sweep workers
    timing other stages of the same backbone keep each other's figures, and the worst a
    race does is time the same piece twice.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder

    def load(self, key: str) -> Kept:
        """What is kept for ``key`` (an empty :class:`Kept` if nothing, or nothing readable)."""
        if self.folder is None:
            return Kept()
        try:
            data = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
            figures = {str(k): {str(p): float(s) for p, s in v.items()} for k, v in data["figures"].items()}
            cost = {str(k): float(s) for k, s in data["cost_s"].items()}
            last = data.get("last")
            return Kept(figures, cost, last if last in (F32, BF16) else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Kept()  # none yet, or unreadable: measured again

    def save(self, key: str, kept: Kept, what: dict[str, Any]) -> None:
        if self.folder is None:
            return
        from tlexp.files import write_json

        kept = self.load(key).merged(kept)
        data = {"key": what, "figures": kept.figures, "cost_s": kept.cost_s, "last": kept.last}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.folder / f"{key}.json", data)
        except OSError:
            pass  # a read-only or full cache only costs measuring again next time
