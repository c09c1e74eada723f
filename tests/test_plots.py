"""Tests for tlexp.results._plots: each function writes one valid PNG, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlexp.results import plot_confusions, plot_history, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: tuple[int, int] = (300, 300)) -> None:
    """The file is a PNG Pillow can decode, of a plausible size, and nothing else is left."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
    assert min_size[0] <= width <= 10_000 and min_size[1] <= height <= 10_000
    # atomic_path's temp file (".name.xxx.tmp") must be gone.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


HISTORY = {
    "loss": [0.9, 0.6],
    "accuracy": [0.6, 0.75],
    "val_loss": [0.7, 0.65],
    "val_accuracy": [0.7, 0.72],
}


def test_plot_history(tmp_path):
    out = plot_history(HISTORY, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    assert_png(out, min_size=(800, 300))  # two panels side by side: wider than tall


@pytest.mark.parametrize(
    "history",
    [
        {"loss": [0.9, 0.6, 0.5], "accuracy": [0.5, 0.6, 0.7]},  # no validation split
        {"loss": [0.9]},  # one epoch, no accuracy
        {},  # nothing recorded: panels say so instead of failing
    ],
)
def test_plot_history_missing_keys(tmp_path, history):
    assert_png(plot_history(history, tmp_path / "curves.png"), min_size=(800, 300))


def test_plot_history_overwrites_atomically(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    with open(path, "rb") as reader:  # opened the old file before the plot was written
        plot_history(HISTORY, path)
        # A new file took the name (os.replace); writing into the old one would show here.
        assert reader.read() == b"old"
    assert_png(path, min_size=(800, 300))  # the new plot in its place, no temp file beside it


def test_failed_plot_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a PNG")
        raise OSError(28, "No space left on device")

    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        plot_history(HISTORY, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_plot_history_creates_parent_folder(tmp_path):
    path = tmp_path / "run" / "curves.png"
    plot_history(HISTORY, str(path))
    assert_png(path)


def test_plot_confusions_two_classes(tmp_path):
    cms = {"head": [[62, 27], [28, 83]], "forest": np.array([[37, 52], [51, 60]])}
    out = plot_confusions(cms, ["cat", "dog"], tmp_path / "confusion.png", title="Test split")
    assert_png(out, min_size=(800, 400))


def test_plot_confusions_five_classes(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, (5, 5)) + np.diag(rng.integers(30, 60, 5))
    cm[4] = 0  # a class absent from the split: its row shows no percentages
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    out = plot_confusions({"head": cm, "forest": cm.T}, names, tmp_path / "confusion.png")
    assert_png(out, min_size=(800, 400))


def test_plot_confusions_many_classes_grow_the_figure(tmp_path):
    k = 16  # above 15 classes the panels stack
    cm = np.eye(k, dtype=int) * 10 + 1
    names = [f"class_{i}" for i in range(k)]
    small = plot_confusions({"head": cm[:5, :5]}, names[:5], tmp_path / "a" / "small.png")
    big = plot_confusions({"head": cm}, names, tmp_path / "b" / "big.png")
    with Image.open(small) as a, Image.open(big) as b:
        assert b.size[0] > 2 * a.size[0]


@pytest.mark.parametrize(
    ("matrices", "match"),
    [
        ({"head": [[1, 2, 3], [4, 5, 6]]}, r"'head' must have shape \(k, k\) .* Got \(2, 3\)"),
        ({"head": [[1, -2], [3, 4]]}, r"non-negative integer counts"),
        ({}, r"at least one confusion matrix"),
    ],
)
def test_plot_confusions_errors(tmp_path, matrices, match):
    with pytest.raises(ValueError, match=match):
        plot_confusions(matrices, ["a", "b"], tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_plot_roc(tmp_path, monkeypatch):
    from sklearn.metrics import roc_auc_score, roc_curve

    from tlexp.results._plots import save_figure

    # The figure as it is saved, to read back what was drawn (the PNG alone shows only pixels).
    figures = []
    monkeypatch.setattr(
        "tlexp.results._plots.save_figure", lambda fig, path: figures.append(fig) or save_figure(fig, path)
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    curves = {
        "head": (y, np.clip(0.4 * y + 0.6 * rng.random(100), 0, 1)),
        "forest": (y.tolist(), rng.random(100).tolist()),
        "one-class": ([1, 1, 1], [0.2, 0.5, 0.9]),  # listed as undefined, not drawn
    }
    assert_png(plot_roc(curves, tmp_path / "roc.png"), min_size=(400, 400))

    (ax,) = figures[0].axes
    auc = {name: roc_auc_score(*curves[name]) for name in ("head", "forest")}
    assert auc["head"] > 0.8 and 0.3 < auc["forest"] < 0.7  # an informative score and a random one
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        f"head (AUC = {auc['head']:.3f})",
        f"forest (AUC = {auc['forest']:.3f})",
        "one-class (AUC undefined: one class)",
        "chance (AUC = 0.500)",
    ]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name, label in zip(("head", "forest"), labels[:2], strict=True):  # each line is that classifier's ROC curve
        fpr, tpr, _ = roc_curve(*curves[name])
        np.testing.assert_allclose(lines[label].get_xdata(), fpr)
        np.testing.assert_allclose(lines[label].get_ydata(), tpr)
    assert len(lines[labels[2]].get_xdata()) == 0  # in the legend only
    assert list(lines[labels[3]].get_xdata()) == [0, 1] and list(lines[labels[3]].get_ydata()) == [0, 1]


@pytest.mark.parametrize(
    ("curves", "match"),
    [
        ({"head": ([0, 2], [0.1, 0.9])}, r"0/1 labels .* Got classes \[0, 2\]"),
        ({"head": ([0, 1], [0.1])}, r"ROC input .head.: score must have shape \(n,\)"),
        ({}, r"at least one"),
    ],
)
def test_plot_roc_errors(tmp_path, curves, match):
    with pytest.raises(ValueError, match=match):
        plot_roc(curves, tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []
