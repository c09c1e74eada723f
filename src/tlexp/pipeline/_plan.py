"""How a split becomes batches (:class:`BatchPlan`), and what ``fit`` is given (:class:`FitInput`).

One small value instead of the batch size, shuffle flag, seed and label type travelling
as loose arguments through every layer of the pipeline: the image source and the
activation source of a run get the same plan, so they give the same batches in the same
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class BatchPlan:
    """How a stream of one split is cut into batches.

    Attributes:
        batch_size: rows per batch (the last batch may be smaller).
        seed: the shuffle's seed; with the same plan and rows, every source gives the
            same order.
        shuffle: a new seeded order every epoch (training), or the rows' own order.
        label_dtype: ``"float32"`` for two classes (one sigmoid unit), else ``"int32"``.
    """

    batch_size: int
    seed: int = 0
    shuffle: bool = False
    label_dtype: str = "int32"

    @classmethod
    def for_classes(cls, n_classes: int, batch_size: int, seed: int = 0) -> BatchPlan:
        """The plan of a task with ``n_classes`` classes, unshuffled."""
        return cls(batch_size, seed, False, "float32" if n_classes == 2 else "int32")

    def shuffled(self, shuffle: bool = True) -> BatchPlan:
        return replace(self, shuffle=shuffle)


@dataclass
class FitInput:
    """What ``model.fit`` reads for one split: ``(x, y)`` batches and the callbacks they need.

    The PyDataset loader reshuffles per epoch through a callback; tf.data needs none.
    """

    data: Any
    callbacks: list[Any] = field(default_factory=list)
