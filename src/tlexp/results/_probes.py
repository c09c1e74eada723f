"""The depth probe in the report: how good the frozen backbone's features are at each stage. No TensorFlow.

A sweep run with ``probe.enabled`` writes one ``probes/<backbone>/probe.json`` per backbone
into its folder: classifiers (logistic regression, the forest) fitted on the pooled
activations at every stage boundary of the frozen backbone, each with its test accuracy
and Wilson interval. The report reads them from the report folder and from the folders
holding its runs (a sweep's runs sit in the sweep folder); a report of run folders with no
such folder has no probe section. Where the sweep also trained the head with one block
(``model.train: block:<k>``) or a frozen prefix, the chart puts those accuracies beside the
probe's (:mod:`tlexp.results._probechart`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlexp.results._settings import LEVEL, LEVEL_TEXT
from tlexp.results._tables import Section, Table, fmt_pct
from tlexp.runfolder import PROBE_FILE, PROBES_DIR

HEADING = "Features at depth"


@dataclass(frozen=True)
class ProbeScore:
    """One classifier at one depth: test accuracy, its Wilson interval and the test images."""

    accuracy: float
    low: float
    high: float
    n: int | None

    def text(self) -> str:
        return f"{self.accuracy:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class Depth:
    """A stage boundary of the backbone: the probe's features are the pooled activations after ``label``."""

    stage: int
    label: str
    last_layer: str
    share_below: float | None  # share of the backbone's parameters below the cut
    features: int | None
    scores: dict[str, ProbeScore]


@dataclass(frozen=True)
class Probe:
    """One backbone's ``probe.json``."""

    backbone: str
    path: Path
    depths: list[Depth]
    counts: dict[str, int]
    seconds: dict[str, float]
    source: str

    @property
    def classifiers(self) -> list[str]:
        return list(dict.fromkeys(c for d in self.depths for c in d.scores))

    def stage_of(self, spec: str) -> int | None:
        """The stage index of ``block:<spec>``: a number, or a stage's label (``conv4``); None if neither."""
        if spec.isdigit():
            return int(spec) if any(d.stage == int(spec) for d in self.depths) else None
        return next((d.stage for d in self.depths if d.label == spec), None)

    def depth_of_share(self, share: float) -> float | None:
        """Where a frozen prefix of ``share`` of the parameters cuts, on the stage axis: 0 at the input,
        k where stage k ends, linear in the share between two boundaries; None without shares."""
        import numpy as np

        known = [(d.share_below, d.stage) for d in self.depths if d.share_below is not None]
        if not known:
            return None
        return float(np.interp(share, [0.0] + [s for s, _ in known], [0.0] + [k for _, k in known]))


def read_probe(path: Path) -> Probe:
    """Read a ``probe.json`` (its format: the design of issue #25, written by ``tlexp.probe``).

    Raises:
        ValueError: If it is not JSON or lacks a key the report needs.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        depths = [_depth(d) for d in data["depths"]]
        return Probe(
            str(data["backbone"]),
            path,
            sorted(depths, key=lambda d: d.stage),
            {k: int(v) for k, v in (data.get("n") or {}).items()},
            {k: float(v) for k, v in (data.get("seconds") or {}).items()},
            str(data.get("source") or ""),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a probe.json the report can read ({type(e).__name__}: {e})") from e


def _depth(d: dict[str, Any]) -> Depth:
    from tlexp.results._stats import wilson_interval

    scores = {}
    for name, c in d["classifiers"].items():
        acc, n = float(c["test_accuracy"]), c.get("test_n")
        low, high = c.get("test_low"), c.get("test_high")
        if (low is None or high is None) and n:
            correct = c.get("test_correct")
            low, high = wilson_interval(int(correct if correct is not None else round(acc * n)), int(n), LEVEL)
        if low is None or high is None:
            low = high = acc
        scores[name] = ProbeScore(acc, float(low), float(high), None if n is None else int(n))
    share = d.get("share_below")
    features = d.get("features")
    return Depth(
        int(d["stage"]),
        str(d.get("label") or f"stage{d['stage']}"),
        str(d.get("last_layer") or ""),
        None if share is None else float(share),
        None if features is None else int(features),
        scores,
    )


def find_probes(roots: Iterable[Path], backbones: Sequence[str]) -> tuple[list[Probe], list[str]]:
    """The probes of ``backbones`` under ``<root>/probes/<backbone>/probe.json``, one per backbone (the
    first root's), in the order of ``backbones``; and notes on files that could not be read or were left out."""
    found: dict[str, Probe] = {}
    notes = []
    seen: set[Path] = set()
    for root in roots:
        for path in sorted(Path(root).glob(f"{PROBES_DIR}/*/{PROBE_FILE}")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                probe = read_probe(path)
            except ValueError as e:
                notes.append(str(e))
                continue
            if probe.backbone not in backbones:
                continue
            if probe.backbone in found:
                notes.append(
                    f"{path}: another probe of {probe.backbone}; the one in {found[probe.backbone].path} is shown."
                )
                continue
            found[probe.backbone] = probe
    return [found[b] for b in backbones if b in found], notes


def probe_section(probes: Sequence[Probe], notes: Sequence[str], figures: Sequence[tuple[str, str]]) -> Section | None:
    """The "Features at depth" section: what the probe is and cost, its numbers, its chart; None without probes."""
    if not probes:
        return None
    clfs = list(dict.fromkeys(c for p in probes for c in p.classifiers))
    rows = [
        [p.backbone, str(d.stage), d.label, d.last_layer, fmt_pct(d.share_below), _int(d.features)]
        + [d.scores[c].text() if c in d.scores else "" for c in clfs]
        for p in probes
        for d in p.depths
    ]
    table = Table(
        ["backbone", "stage", "label", "last layer", "params below", "features"]
        + [f"{c} test acc [{LEVEL_TEXT} CI]" for c in clfs],
        rows,
        "lrllrr" + "r" * len(clfs),
    )
    intro = (
        "The depth probe (tlexp probe; Yosinski et al. 2014, Kornblith et al. 2019): the frozen pretrained "
        "backbone cut after each of its stages, the pooled activations there as features, and "
        f"{', '.join(clfs)} fitted on them; test accuracy with its {LEVEL_TEXT} Wilson interval over the test "
        "images. Params below: the share of the backbone's parameters below the cut, the share a frozen prefix "
        "ending there holds. Nothing above the cut trains, so a curve that levels off early says the later "
        "stages add little for this task."
    )
    lines = [intro, ""] + [f"- {_cost(p)}" for p in probes] + [f"\n{n}" for n in notes]
    return Section(HEADING, "\n".join(lines), table, tuple(figures))


def _cost(p: Probe) -> str:
    n = p.counts
    images = "/".join(str(n[k]) for k in ("train", "val", "test") if k in n)
    sec = p.seconds
    parts = [f"{k} {sec[k]:.1f} s" for k in ("features", "fit") if k in sec]
    total = f"{sec['total']:.1f} s" if "total" in sec else "not recorded"
    return (
        f"{p.backbone}: {len(p.depths)} depth(s)"
        + (f", {images} train/val/test images" if images else "")
        + (f" read from {p.source}" if p.source else "")
        + f"; cost {total}"
        + (f" ({', '.join(parts)})" if parts else "")
        + "."
    )


def _int(x: int | None) -> str:
    return "" if x is None else f"{x:,}"
