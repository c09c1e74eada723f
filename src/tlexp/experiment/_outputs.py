"""What a run writes per image: predictions.csv and skipped.csv. No TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlexp.data import SPLITS, Dataset
from tlexp.files import write_csv
from tlexp.runfolder import PREDICTIONS_FILE, SKIPPED_FILE


def write_predictions(run_dir: Path, ds: Dataset, out: dict, probas: dict[str, dict[str, np.ndarray]]) -> None:
    """predictions.csv: one row per decoded image, every classifier's predicted class
    (and, for two classes, its probability of the positive class): what paired
    comparisons of classifiers on the same images are computed from."""
    names = list(probas)
    binary = len(ds.class_names) == 2
    header = ["path", "split", "label"] + [c for n in names for c in ([n, f"{n}_p1"] if binary else [n])]
    rows = []
    for s in SPLITS:
        for row, i in enumerate(out[s].indices):
            line = [ds.paths[i], s, ds.class_names[ds.labels[i]]]
            for n in names:
                p = probas[n][s][row]
                line.append(ds.class_names[int(np.argmax(p))])
                if binary:
                    line.append(f"{p[1]:.6f}")
            rows.append(line)
    write_csv(run_dir / PREDICTIONS_FILE, header, rows)


def write_skipped(run_dir: Path, ds: Dataset, failed: dict[int, str]) -> list[tuple[int, str]]:
    skipped = sorted(failed.items())
    write_csv(
        run_dir / SKIPPED_FILE,
        ["path", "label", "split", "reason"],
        ((ds.paths[i], ds.class_names[ds.labels[i]], ds.split[i], why) for i, why in skipped),
    )
    return skipped
