"""The report's strategy comparison (issue #25): labels, the Strategies table, its heatmaps, the answer, the probe.

Run folders are written by hand (tests/test_report.py's ``make_run``, through the real
run record) with test predictions built from chosen counts: against the best strategy,
``best_only`` images only the best got right and ``this_only`` only the other one, so the
McNemar tests and Holm's correction the report prints are derived here from those counts,
by formulas independent of tlexp's (the chi-square form of McNemar's test, Holm's
procedure written out; and statsmodels, a test dependency). No TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2, ttest_rel

from test_report import capture_figures, csv_rows, make_run, md_table, section
from tlexp.results import Strategy, build_report, fmt_p, wilson_interval

N = 200
FLIP = {"cat": "dog", "dog": "cat"}


def correct(k: int, best_only: int = 0, this_only: int = 0) -> set[int]:
    """Test images a strategy got right, against a best right on images 0..k-1: it misses
    ``best_only`` of those and gets ``this_only`` of the others."""
    return set(range(k - best_only)) | set(range(k, k + this_only))


def strategy_run(root: Path, name: str, right: set[int], *, n: int = N, freeze: float = 0.0, **keys) -> Path:
    """A one-seed run with head predictions right exactly on ``right``; ``keys``: train, schedule,
    decay, backbone, seed (strategy keys left out are absent from config.yaml, as in old runs)."""
    labels = ["cat", "dog"] * (n // 2)
    config = {
        key: keys.pop(arg)
        for arg, key in (("train", "model.train"), ("schedule", "train.schedule"), ("decay", "train.layer_decay"))
        if arg in keys
    }
    preds = [y if i in right else FLIP[y] for i, y in enumerate(labels)]
    return make_run(
        root,
        name,
        freeze=freeze,
        share=freeze,
        head=(1.0, 1.0, len(right) / n),
        others={},
        predictions={"label": labels, "head": preds},
        config=config,
        **keys,
    )


def mcnemar_p(best_only: int, this_only: int) -> float:
    """McNemar's chi-square test without continuity correction: (b - c)^2 / (b + c) on 1 df."""
    return float(chi2.sf((best_only - this_only) ** 2 / (best_only + this_only), 1))


def holm_by_hand(ps: list[float]) -> list[float]:
    """Holm (1979) as written: the i-th smallest of m p-values times (m - i + 1), kept non-decreasing."""
    order = np.argsort(ps)
    out, running = [0.0] * len(ps), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(ps) - i) * ps[j]))
        out[j] = running
    return out


def p_text(p: float) -> str:
    text = fmt_p(p, 0.05)
    return f"{text[0]} {text[1:]}" if text[0] in "<>" else f"= {text}"


# The crafted study: vgg16's best is f0 block3 (150 of 200 right); (best_only, this_only) per other.
VGG = {
    "f0": ({}, (30, 5)),
    "f0 biases": ({"train": "biases"}, (20, 2)),
    "f30 lp-ft": ({"freeze": 0.3, "schedule": "lp-ft"}, (12, 2)),
    "f30 lld0.7": ({"freeze": 0.3, "decay": 0.7}, (3, 2)),
}
RESNET = (10, 0)  # resnet50: f0 (140 right) against f0 block3


def crafted(root: Path) -> list[Path]:
    dirs = [strategy_run(root, "v_block3", correct(150), train="block:3")]
    dirs += [
        strategy_run(root, f"v{i}", correct(150, *counts), **keys) for i, (keys, counts) in enumerate(VGG.values())
    ]
    dirs.append(strategy_run(root, "r_all", correct(140), backbone="resnet50"))
    dirs.append(strategy_run(root, "r_block3", correct(140, *RESNET), backbone="resnet50", train="block:3"))
    return dirs


# --------------------------------------------------------------------------- labels


def test_strategy_labels_and_defaults():
    old = Strategy.of({"model.freeze": 0.3})  # a run folder from before the strategy keys
    assert old == Strategy.of(
        {"model.freeze": 0.3, "model.train": "all", "train.schedule": "fine-tune", "train.layer_decay": 1.0}
    )
    assert (old.label(), old.rest()) == ("f30", "")
    cases = {
        "f0 block3": {"model.freeze": 0.0, "model.train": "block:3"},
        "f0 conv4": {"model.freeze": 0.0, "model.train": "block:conv4"},
        "f0 biases": {"model.freeze": 0.0, "model.train": "biases"},
        "f30 lp-ft": {"model.freeze": 0.3, "train.schedule": "lp-ft", "train.probe_epochs": 2},
        "f30 lp-ft pe3 ftlr0.05": {
            "model.freeze": 0.3,
            "train.schedule": "lp-ft",
            "train.probe_epochs": 3,
            "train.finetune_lr_factor": 0.05,
        },
        "f30 gradual": {"model.freeze": 0.3, "train.schedule": "gradual", "train.probe_epochs": 5},
        "f30 lld0.7": {"model.freeze": 0.3, "train.layer_decay": 0.7},
        "to-block3_pool norm": {"model.freeze": "block3_pool", "model.train": "norm"},
    }
    assert {label: Strategy.of(c).label() for label, c in cases.items()} == {label: label for label in cases}
    # Sorted by share, then what trains (all, blocks bottom first, biases, norm), then schedule, then decay.
    shuffled = [Strategy.of(cases[k]) for k in ("f0 biases", "f30 lld0.7", "f0 block3", "f30 gradual")]
    shuffled += [Strategy.of({"model.freeze": 0.0}), Strategy.of({"model.freeze": 0.3})]
    ordered = [s.label() for s in sorted(shuffled, key=Strategy.sort_key)]
    assert ordered == ["f0", "f0 block3", "f0 biases", "f30", "f30 lld0.7", "f30 gradual"]


# --------------------------------------------------------------------------- the Strategies table


def test_strategies_table_paired_tests_and_holm_per_backbone(tmp_path):
    out = tmp_path / "rep"
    build_report(crafted(tmp_path / "runs"), out)
    md = (out / "summary.md").read_text()
    table = md_table(md, "Strategies")
    assert table[0] == [
        "backbone",
        "strategy",
        "frozen (achieved)",
        "trainable params",
        "seeds",
        "head test acc",
        "Δ best − strategy [95 % CI]",
        "p",
        "Holm p",
        "reading",
    ]
    # Rows in strategy order; vgg16's family holds its 4 comparisons, resnet50's its 1.
    raw = {label: mcnemar_p(*counts) for label, (_, counts) in VGG.items()}
    holm = dict(zip(raw, holm_by_hand(list(raw.values())), strict=True))
    assert [r[:2] for r in table[1:]] == [
        ["vgg16", "f0"],
        ["vgg16", "f0 block3 (best)"],
        ["vgg16", "f0 biases"],
        ["vgg16", "f30 lld0.7"],
        ["vgg16", "f30 lp-ft"],
        ["resnet50", "f0 (best)"],
        ["resnet50", "f0 block3"],
    ]
    rows = {(r[0], r[1]): r for r in table[1:]}
    low, high = wilson_interval(150, N)
    assert rows["vgg16", "f0 block3 (best)"][5:] == [f"0.7500 [{low:.4f}, {high:.4f}]", "", "", "", "best of vgg16"]
    for label, (_, (b, c)) in VGG.items():
        row = rows["vgg16", label]
        assert row[5].startswith(f"{(150 - b + c) / N:.4f} [")
        assert row[6].startswith(f"{(b - c) / N:+.4f} [")
        assert row[7:9] == [fmt_p(raw[label], 0.05), fmt_p(holm[label], 0.05)]
        # The interval inverts the unadjusted test: it excludes 0 exactly when p < 0.05.
        assert (row[6].split("[")[1][0] == "+") == (raw[label] < 0.05)
    assert rows["vgg16", "f30 lld0.7"][9] == f"no significant difference (p={fmt_p(raw['f30 lld0.7'], 0.05)})"
    assert rows["vgg16", "f0"][9] == "f0 block3 better, p<0.001, survives Holm (p<0.001)"
    p_res = mcnemar_p(*RESNET)
    assert rows["resnet50", "f0 block3"][7:] == [fmt_p(p_res, 0.05)] * 2 + [
        f"f0 better, p={fmt_p(p_res, 0.05)}, survives Holm (p={fmt_p(p_res, 0.05)})"
    ]

    csv = {(r["backbone"], r["strategy"]): r for r in csv_rows(out / "strategies.csv")}
    for label in VGG:
        assert float(csv["vgg16", label]["p_value"]) == pytest.approx(raw[label], rel=1e-9)
        assert float(csv["vgg16", label]["p_holm"]) == pytest.approx(holm[label], rel=1e-9)
    assert float(csv["resnet50", "f0 block3"]["p_holm"]) == pytest.approx(p_res, rel=1e-9)  # a family of one
    assert (csv["vgg16", "f0 block3"]["best"], csv["vgg16", "f0 block3"]["model.train"]) == ("True", "block:3")

    text = section(md, "Strategies")
    assert "Holm's step-down correction (Holm 1979) over the comparisons of one table" in text
    assert "one family per table, never pooled with the other tables" in text
    assert "McNemar's score test; Δ = best − strategy with Tango's 95 % score interval" in text
    assert "- vgg16: best f0 block3, " in text and "its 4 comparison(s) with the others; 3 of 4 survive it." in text
    assert "- resnet50: best f0, " in text and "its 1 comparison(s) with the others; 1 of 1 survive it." in text
    # The per-run table says each run's strategy.
    results = md_table(md, "Results")
    assert results[0][:3] == ["run", "backbone", "strategy"]
    assert {r[0]: r[2] for r in results[1:]}["v_block3"] == "f0 block3"
    assert csv_rows(out / "summary.csv")[0]["strategy"] == "f0"


def test_strategy_p_values_match_statsmodels(tmp_path):
    from statsmodels.stats import contingency_tables as contingency
    from statsmodels.stats import multitest

    out = tmp_path / "rep"
    build_report(crafted(tmp_path / "runs"), out)
    csv = {r["strategy"]: r for r in csv_rows(out / "strategies.csv") if r["backbone"] == "vgg16"}
    raw = []
    for _, (b, c) in VGG.values():
        tab = [[150 - b, b], [c, N - 150 - c]]  # rows: best right / wrong; columns: the other right / wrong
        raw.append(contingency.mcnemar(tab, exact=False, correction=False).pvalue)
    adjusted = multitest.multipletests(raw, method="holm")[1]
    for label, p, ph in zip(VGG, raw, adjusted, strict=True):
        assert float(csv[label]["p_value"]) == pytest.approx(p, rel=1e-9)
        assert float(csv[label]["p_holm"]) == pytest.approx(ph, rel=1e-9)


# --------------------------------------------------------------------------- the answer


def answer_line(md: str, name: str) -> str:
    text = section(md, "The answer").split("Best strategy per backbone", 1)[1]
    return next(line for line in text.splitlines() if line.startswith(f"- {name}: "))


@pytest.mark.parametrize(
    "others, survives",
    [
        # p = 0.0196 and 0.034; Holm: 2 x 0.0196 = 0.039, then 0.039: both survive.
        ({"f0": ({}, (8, 1)), "f0 biases": ({"train": "biases"}, (7, 1))}, True),
        # The same two and a third (p = 0.16): Holm multiplies 0.0196 by 3 and 0.034 by 2: none survives.
        (
            {
                "f0": ({}, (8, 1)),
                "f0 biases": ({"train": "biases"}, (7, 1)),
                "f30 lp-ft": ({"freeze": 0.3, "schedule": "lp-ft"}, (6, 2)),
            },
            False,
        ),
    ],
)
def test_the_answer_names_the_best_strategy_only_where_holm_supports_it(tmp_path, others, survives):
    root = tmp_path / "runs"
    dirs = [strategy_run(root, "best", correct(150), train="block:3")]
    dirs += [
        strategy_run(root, f"o{i}", correct(150, *counts), **keys) for i, (keys, counts) in enumerate(others.values())
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    raw = [mcnemar_p(*counts) for _, counts in others.values()]
    adjusted = holm_by_hand(raw)
    assert all(p < 0.05 for p in raw[:2])  # each alone is "significant"; Holm decides
    assert all(p < 0.05 for p in adjusted) == survives
    low, high = wilson_interval(150, N)
    estimate = f"0.7500 [{low:.4f}, {high:.4f}] (1 seed, 95 % Wilson interval over {N} test images)"
    line = answer_line((out / "summary.md").read_text(), "vgg16")
    if survives:
        assert line == (
            f"- vgg16: f0 block3 beats every other strategy tested on vgg16 (Holm-adjusted p ≤ "
            f"{fmt_p(max(adjusted), 0.05)}), {estimate}."
        )
    else:
        listed = ", ".join(f"{label} (Holm-adjusted p {p_text(p)})" for label, p in zip(others, adjusted, strict=True))
        assert line == f"- vgg16: f0 block3 did best, {estimate}; against {listed}, the data cannot separate them."


def test_the_answer_on_the_crafted_study(tmp_path):
    out = tmp_path / "rep"
    build_report(crafted(tmp_path / "runs"), out)
    md = (out / "summary.md").read_text()
    raw = {label: mcnemar_p(*counts) for label, (_, counts) in VGG.items()}
    holm = dict(zip(raw, holm_by_hand(list(raw.values())), strict=True))
    beaten = ", ".join(f"{k} (Holm-adjusted p {p_text(holm[k])})" for k in ("f0", "f0 biases", "f30 lp-ft"))
    assert answer_line(md, "vgg16").endswith(
        f"; against f30 lld0.7 (Holm-adjusted p {p_text(holm['f30 lld0.7'])}), the data cannot separate them; "
        f"it beats {beaten}."
    )
    low, high = wilson_interval(140, N)
    assert answer_line(md, "resnet50") == (
        f"- resnet50: f0 beats every other strategy tested on resnet50 (Holm-adjusted p ≤ "
        f"{fmt_p(mcnemar_p(*RESNET), 0.05)}), 0.7000 [{low:.4f}, {high:.4f}] (1 seed, 95 % Wilson interval over "
        f"{N} test images)."
    )
    # Each strategy here ran at one freeze share: the freeze paragraph has nothing to compare and is left out.
    assert "Best freeze share per backbone" not in section(md, "The answer")


def test_strategies_not_compared_and_alone(tmp_path):
    root = tmp_path / "runs"
    dirs = [
        strategy_run(root, "best", correct(150), train="block:3"),
        strategy_run(root, "all", correct(150, 10, 0)),
        strategy_run(root, "biases", correct(100), n=202, train="biases"),  # other test images
        strategy_run(root, "r", correct(120), backbone="resnet50"),
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    md = (out / "summary.md").read_text()
    line = answer_line(md, "vgg16")
    assert line.startswith(
        f"- vgg16: f0 block3 beats every other strategy it could be tested against on vgg16 (Holm-adjusted p ≤ "
        f"{fmt_p(mcnemar_p(10, 0), 0.05)}), 0.7500 ["
    )
    assert line.endswith("; f0 biases not compared: different test images.")
    low, high = wilson_interval(120, N)
    assert answer_line(md, "resnet50") == (
        f"- resnet50: only f0 was run, 0.6000 [{low:.4f}, {high:.4f}] (1 seed, 95 % Wilson interval over {N} test "
        "images): nothing to compare."
    )
    rows = {(r[0], r[1]): r for r in md_table(md, "Strategies")[1:]}
    assert rows["vgg16", "f0 biases"][6:] == ["", "", "", "not compared: different test images"]
    assert rows["resnet50", "f0 (best)"][9] == "best of resnet50"
    text = section(md, "Strategies")
    assert "- resnet50: best f0, " in text and "no other strategy could be compared with it." in text
    assert "its 1 comparison(s) with the others; 1 of 1 survive it." in text


def test_several_seeds_are_compared_over_the_seeds_both_ran(tmp_path):
    """block3 ran seeds 0-3, biases 0-2: their mean ranks block3 first, yet on the seeds both
    ran biases was ahead every time: the paired t-test over those seeds says so."""
    best = (0.80, 0.80, 0.80, 0.99)
    other = (0.81, 0.82, 0.815)
    root = tmp_path / "runs"
    dirs = [
        make_run(
            root,
            f"{tag}s{s}",
            freeze=0.0,
            share=0.0,
            seed=s,
            head=(1, 1, acc),
            others={},
            config={"model.train": train},
        )
        for tag, train, accs in (("b3", "block:3", best), ("bias", "biases", other))
        for s, acc in enumerate(accs)
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    ref = ttest_rel(best[:3], other)
    assert ref.pvalue < 0.05
    md = (out / "summary.md").read_text()
    rows = {r[1]: r for r in md_table(md, "Strategies")[1:]}
    assert rows["f0 block3 (best)"][4:6] == ["0 1 2 3", f"{sum(best) / 4:.4f} [0.8000, 0.9900]"]
    low, high = ref.confidence_interval(0.95)
    assert rows["f0 biases"][6:10] == [
        f"{(sum(best[:3]) - sum(other)) / 3:+.4f} [{low:+.4f}, {high:+.4f}]",
        fmt_p(ref.pvalue, 0.05),
        fmt_p(ref.pvalue, 0.05),  # a family of one
        f"f0 biases better, p={fmt_p(ref.pvalue, 0.05)}, survives Holm (p={fmt_p(ref.pvalue, 0.05)})",
    ]
    assert answer_line(md, "vgg16").endswith(
        f"; f0 biases (Holm-adjusted p {p_text(ref.pvalue)}) did better on the seeds both ran."
    )
    (row,) = [r for r in csv_rows(out / "strategies.csv") if r["strategy"] == "f0 biases"]
    assert row["test"] == "paired t-test over seeds" and float(row["p_value"]) == pytest.approx(ref.pvalue)


# --------------------------------------------------------------------------- old reports


def test_a_report_without_strategy_keys_is_unchanged(tmp_path):
    """Old run folders lack the strategy keys; runs that state the defaults read the same, and a
    freeze sweep (only model.freeze varies) gets no Strategies section."""
    old, new = tmp_path / "old", tmp_path / "new"
    defaults = {
        "model.train": "all",
        "train.schedule": "fine-tune",
        "train.layer_decay": 1.0,
        "train.probe_epochs": 2,
        "train.finetune_lr_factor": 0.1,
        "probe.enabled": False,
    }
    for root, config in ((old, {}), (new, defaults)):
        dirs = [
            make_run(root / "x", f"f{f}", freeze=f / 100, share=f / 100, head=(1, 1, acc), others={}, config=config)
            for f, acc in ((0, 0.8), (30, 0.85), (60, 0.75))
        ]
        build_report(dirs, root / "rep")
    md = {r: (r / "rep" / "summary.md").read_text().split("\n", 3)[3] for r in (old, new)}  # past "Generated"
    assert md[old] == md[new]
    assert "## Strategies" not in md[old] and "strategy" not in md_table(md[old], "Results")[0]
    assert (old / "rep" / "summary.csv").read_text() == (new / "rep" / "summary.csv").read_text()
    for name in ("strategies.csv", "strategy_heatmap.png", "block_share_heatmap.png", "features_at_depth.png"):
        assert not (old / "rep" / name).exists()

    # An old run and a new one of the same config are one setting, two seeds.
    mixed = [
        make_run(tmp_path / "mix", "s0", seed=0, head=(1, 1, 0.8), others={}),
        make_run(tmp_path / "mix", "s1", seed=1, head=(1, 1, 0.9), others={}, config=defaults),
    ]
    build_report(mixed, tmp_path / "mixrep")
    (row,) = csv_rows(tmp_path / "mixrep" / "summary_by_setting.csv")
    assert (row["n_runs"], row["setting"]) == ("2", "")


def test_strategy_files_do_not_outlive_their_report(tmp_path):
    out = tmp_path / "rep"
    build_report(crafted(tmp_path / "runs"), out)
    assert (out / "strategies.csv").is_file() and (out / "strategy_heatmap.png").is_file()
    plain = [strategy_run(tmp_path / "plain", f"f{f}", correct(150), freeze=f / 100) for f in (0, 30)]
    written = build_report(plain, out)
    assert not {"strategies.csv", "strategy_heatmap.png"} & set(written)
    assert not (out / "strategies.csv").exists() and not (out / "strategy_heatmap.png").exists()


# --------------------------------------------------------------------------- heatmaps


def suptitle(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle else ""


def heatmap_cells(fig) -> dict[tuple[str, str], str]:
    """(row label, column label) -> the text written in that cell, of a heatmap panel."""
    (ax, *_) = fig.axes
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    return {(rows[round(t.get_position()[1])], columns[round(t.get_position()[0])]): t.get_text() for t in ax.texts}


def test_strategy_heatmap_in_the_report(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    out = tmp_path / "rep"
    written = build_report(crafted(tmp_path / "runs"), out)
    assert (out / "strategy_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written["strategy_heatmap.png"] == out / "strategy_heatmap.png" and "block_share_heatmap.png" not in written
    (heatmap,) = [f for f in figures if suptitle(f).startswith("Head test accuracy per backbone")]
    cells = heatmap_cells(heatmap)
    expected = {("vgg16", "f0 block3"): 150 / N, ("resnet50", "f0"): 140 / N}
    expected |= {("vgg16", label): (150 - b + c) / N for label, (_, (b, c)) in VGG.items()}
    expected |= {("resnet50", "f0 block3"): (140 - RESNET[0]) / N}
    columns = ["f0", "f0 block3", "f0 biases", "f30 lld0.7", "f30 lp-ft"]
    assert cells == {
        (row, col): f"{expected[row, col]:.3f}" if (row, col) in expected else "—"
        for row in ("vgg16", "resnet50")
        for col in columns
    }
    # Each row's best is outlined and written in bold.
    bold = {k for k, t in zip(cells, heatmap.axes[0].texts, strict=True) if t.get_fontweight() == "bold"}
    assert bold == {("vgg16", "f0 block3"), ("resnet50", "f0")}
    assert len(heatmap.axes[0].patches) == 2

    md = (out / "summary.md").read_text()
    assert "![strategy_heatmap.png](strategy_heatmap.png)" in section(md, "Strategies")
    html = (out / "report.html").read_text()
    strategies = html.split("<h2>Strategies</h2>", 1)[1].split("<h2>", 1)[0]
    assert strategies.count('<img src="data:image/png;base64,') == 1
    assert "Head test accuracy per backbone (rows) and fine-tuning strategy (columns), one seed per cell" in strategies


def test_block_by_share_heatmap(tmp_path, monkeypatch):
    """Blocks 1-3 crossed with 0 % and 30 % frozen (one cell missing), beside train-all at 0 %."""
    figures = capture_figures(monkeypatch)
    root = tmp_path / "runs"
    acc = {(1, 0.0): 140, (2, 0.0): 146, (3, 0.0): 150, (1, 0.3): 138, (2, 0.3): 152}
    dirs = [strategy_run(root, f"b{k}f{f}", correct(n), freeze=f, train=f"block:{k}") for (k, f), n in acc.items()]
    dirs.append(strategy_run(root, "all", correct(120)))
    dirs.append(strategy_run(root, "lpft", correct(130), schedule="lp-ft"))  # not plain fine-tuning: not in the grid
    out = tmp_path / "rep"
    build_report(dirs, out)
    assert (out / "block_share_heatmap.png").is_file()
    (grid,) = [f for f in figures if suptitle(f).startswith("Head test accuracy: block trained")]
    assert grid.axes[0].get_title() == "vgg16"
    cells = heatmap_cells(grid)
    expected = {(f"block{k}", f"{round(f * 100)} %"): f"{n / N:.3f}" for (k, f), n in acc.items()}
    expected |= {("block3", "30 %"): "—", ("all (rest)", "0 %"): f"{120 / N:.3f}", ("all (rest)", "30 %"): "—"}
    assert cells == expected
    assert list(dict.fromkeys(r for r, _ in cells)) == ["all (rest)", "block1", "block2", "block3"]
    bold = {k for k, t in zip(cells, grid.axes[0].texts, strict=True) if t.get_fontweight() == "bold"}
    assert bold == {("block2", "30 %")}
    html = (out / "report.html").read_text().split("<h2>Strategies</h2>", 1)[1].split("<h2>", 1)[0]
    assert html.count("<img ") == 2 and "one block trained, rows" in html


# --------------------------------------------------------------------------- the depth probe


def write_probe(sweep: Path, backbone: str, logreg: list[int], forest: list[int], shares: list[float]) -> dict:
    """A probes/<backbone>/probe.json as the sweep writes it: test_correct of 840 per stage."""
    depths = []
    for i, (lr, fo, share) in enumerate(zip(logreg, forest, shares, strict=True), start=1):
        clfs = {}
        for name, k in (("logreg", lr), ("forest", fo)):
            low, high = wilson_interval(k, 840)
            clfs[name] = {
                "val_accuracy": 0.5,
                "test_accuracy": k / 840,
                "test_correct": k,
                "test_n": 840,
                "test_low": low,
                "test_high": high,
            }
        depths.append(
            {
                "stage": i,
                "label": f"block{i}",
                "cut": 4 * i,
                "last_layer": f"block{i}_pool",
                "params_below": 100 * i,
                "share_below": share,
                "features": 64 * i,
                "classifiers": clfs,
            }
        )
    probe = {
        "backbone": backbone,
        "weights": "imagenet",
        "image_size": 32,
        "seed": 0,
        "n": {"train": 240, "val": 120, "test": 840},
        "classes": ["Shirt", "T-shirt_top"],
        "source": "images",
        "seconds": {"features": 12.3, "fit": 4.5, "total": 17.0},
        "depths": depths,
    }
    folder = sweep / "probes" / backbone
    folder.mkdir(parents=True)
    (folder / "probe.json").write_text(json.dumps(probe))
    return probe


def test_features_at_depth_chart_and_table(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    sweep = tmp_path / "sweep"
    shares = [0.01, 0.1, 0.5]
    probe = write_probe(sweep, "vgg16", [600, 680, 700], [580, 640, 690], shares)
    write_probe(sweep, "resnet50", [600, 600, 600], [600, 600, 600], shares)  # no run of it: not shown
    (sweep / "probes" / "broken").mkdir()
    (sweep / "probes" / "broken" / "probe.json").write_text("{not json")
    heads = {1: 150, 3: 160}  # block:k trained alone, freeze 0
    dirs = [strategy_run(sweep, f"b{k}", correct(n), train=f"block:{k}") for k, n in heads.items()]
    dirs.append(strategy_run(sweep, "f30", correct(155), freeze=0.3))  # share 0.3: between stage 2 and 3
    out = tmp_path / "rep"  # the report elsewhere: the probes are found beside the runs
    build_report(dirs, out)

    md = (out / "summary.md").read_text()
    table = md_table(md, "Features at depth")
    assert table[0] == [
        "backbone",
        "stage",
        "label",
        "last layer",
        "params below",
        "features",
        "logreg test acc [95 % CI]",
        "forest test acc [95 % CI]",
    ]
    expected = []
    for d in probe["depths"]:
        lr, fo = (d["classifiers"][c] for c in ("logreg", "forest"))
        expected.append(
            [
                "vgg16",
                str(d["stage"]),
                d["label"],
                d["last_layer"],
                f"{100 * d['share_below']:.1f} %",
                str(d["features"]),
            ]
            + [f"{c['test_accuracy']:.4f} [{c['test_low']:.4f}, {c['test_high']:.4f}]" for c in (lr, fo)]
        )
    assert table[1:] == expected
    text = section(md, "Features at depth")
    assert "- vgg16: 3 depth(s), 240/120/840 train/val/test images read from images; cost 17.0 s" in text
    assert "broken" in text and "not a probe.json the report can read" in text
    assert "![features_at_depth.png](features_at_depth.png)" in text
    html = (out / "report.html").read_text().split("<h2>Features at depth</h2>", 1)[1].split("<h2>", 1)[0]
    assert html.count("<img ") == 1 and "<table>" in html

    (chart,) = [f for f in figures if suptitle(f).startswith("Features at depth")]
    (ax,) = [a for a in chart.axes if a.get_visible()]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert lines["probe, logreg"].get_xdata().tolist() == [1, 2, 3]
    assert lines["probe, logreg"].get_ydata() == pytest.approx([k / 840 for k in (600, 680, 700)])
    assert lines["probe, forest"].get_ydata() == pytest.approx([k / 840 for k in (580, 640, 690)])
    block = lines["head, that stage alone trained"]
    assert np.round(np.asarray(block.get_xdata(), dtype=float)).tolist() == list(heads)
    assert block.get_ydata() == pytest.approx([n / N for n in heads.values()])
    prefix = lines["head, frozen up to there, the rest trained"]
    x = 2 + (0.3 - 0.1) / (0.5 - 0.1)  # 0.3 of the parameters: half-way from stage 2's end to stage 3's
    assert prefix.get_xdata()[0] - x == pytest.approx(0.12)  # drawn a hair to the right of the probe's points
    assert prefix.get_ydata() == pytest.approx([155 / N])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["block1", "block2", "block3"]


def test_no_probe_section_without_probes(tmp_path):
    dirs = [strategy_run(tmp_path / "runs", f"f{f}", correct(150), freeze=f / 100) for f in (0, 30)]
    build_report(dirs, tmp_path / "rep")
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Features at depth" not in md and not (tmp_path / "rep" / "features_at_depth.png").exists()


def test_time_chart_legend_leaves_the_axes_with_many_lines(tmp_path, monkeypatch):
    """A strategies sweep draws a time line per backbone and strategy: past 8, the legend goes below."""
    from tlexp.results import Curve, plot_time_vs_frozen

    figures = capture_figures(monkeypatch)
    for n in (8, 9):
        curves = [Curve("", f"vgg16, s{i}", [(0.1 * i, 10.0 + i, None, None)], 0, i) for i in range(n)]
        plot_time_vs_frozen(curves, tmp_path / f"t{n}.png")
    few, many = figures
    assert few.axes[0].get_legend() is not None and not few.legends
    assert many.axes[0].get_legend() is None
    assert [t.get_text() for t in many.legends[0].get_texts()] == [f"vgg16, s{i}" for i in range(9)]


def test_a_failed_cell_of_a_strategies_sweep_is_listed_not_compared(tmp_path):
    root = tmp_path / "runs"
    dirs = [strategy_run(root, "best", correct(150), train="block:3"), strategy_run(root, "all", correct(140))]
    failed = [{"name": "b2", "error": "boom", "overrides": {"model.train": "block:2", "seed": 0}}]
    out = tmp_path / "rep"
    build_report(dirs, out, failed=failed)
    rows = {r["name"]: r for r in csv_rows(out / "summary.csv")}
    assert (rows["b2"]["status"], rows["b2"]["strategy"]) == ("failed", "block2")  # its freeze was not given
    assert [r[1] for r in md_table((out / "summary.md").read_text(), "Strategies")[1:]] == ["f0", "f0 block3 (best)"]
