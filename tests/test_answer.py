"""The answer's tests (issue #23): leader vs runner-up as a paired test, cost, Holm's family. No TensorFlow.

Run folders are written by hand (tests/test_report.py's ``make_run``) with known
predictions and timings; each test asserts the sentence the report prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy.stats import ttest_rel

from test_report import capture_figures, csv_rows, from_counts, make_run, section
from tlexp.results import build_report, pareto_frontier, setting_costs, wilson_interval

FLIP = {"cat": "dog", "dog": "cat"}


def lead_predictions(n: int, both: int, leader_only: int, runner_only: int) -> tuple[list[str], ...]:
    """Labels and two runs' head predictions on the same n test images: ``both`` right for
    both, ``leader_only`` for the leader alone, ``runner_only`` for the runner-up alone."""
    labels = ["cat", "dog"] * (n // 2)
    leader = [y if i < both + leader_only else FLIP[y] for i, y in enumerate(labels)]
    runner_right = set(range(both)) | set(range(both + leader_only, both + leader_only + runner_only))
    runner = [y if i in runner_right else FLIP[y] for i, y in enumerate(labels)]
    return labels, leader, runner


def leader_and_runner(root: Path, n: int, both: int, leader_only: int, runner_only: int, **kw) -> list[Path]:
    """vgg16 at 10 % frozen (the leader) and at 30 % (the runner-up), one seed, head only."""
    labels, leader, runner = lead_predictions(n, both, leader_only, runner_only)
    return [
        make_run(
            root,
            name,
            freeze=freeze,
            share=freeze,
            head=(1.0, 1.0, (both + right) / n),
            others={},
            predictions={"label": labels, "head": preds},
            **kw,
        )
        for name, freeze, preds, right in (("v10", 0.1, leader, leader_only), ("v30", 0.3, runner, runner_only))
    ]


def answer(out: Path) -> list[str]:
    return section((out / "summary.md").read_text(), "The answer").splitlines()


# --------------------------------------------------------------------------- leader vs runner-up


@pytest.mark.parametrize(
    "n, both, leader_only, runner_only, p, lead, verdict",
    [
        # Issue #23: 900/1000 vs 890/1000 sat inside the leader's Wilson interval ("cannot
        # separate"), yet b = 10, c = 0: z = sqrt(10), p = erfc(sqrt(5)) = 0.0016.
        (1000, 890, 10, 0, "0.0016", "+0.0100 [+0.0054, +0.0183]", "the leader is better"),
        # 180/200 vs 169/200 lay below it ("lead"), yet b = 31, c = 20: z = 11 / sqrt(51), p = 0.12.
        (200, 149, 31, 20, "0.12", "+0.0550 [-0.0154, +0.1262]", "the data cannot separate them"),
    ],
)
def test_leader_vs_runner_up_is_a_paired_test(tmp_path, n, both, leader_only, runner_only, p, lead, verdict):
    out = tmp_path / "rep"
    build_report(leader_and_runner(tmp_path / "runs", n, both, leader_only, runner_only), out)
    z = (leader_only - runner_only) / math.sqrt(leader_only + runner_only)
    assert f"{math.erfc(z / math.sqrt(2)):.2g}" == f"{float(p):.2g}"  # the printed p, by hand
    k = both + leader_only
    low, high = wilson_interval(k, n)
    test = (
        f"lead {lead}, McNemar p = {p} on the same {n} test images (only the leader right on {leader_only}, "
        f"only the runner-up on {runner_only}): {verdict}."
    )
    lines = answer(out)
    assert lines[3] == (
        f"- head: vgg16, 10 % frozen, {k / n:.4f} [{low:.4f}, {high:.4f}] (1 seed, 95 % Wilson interval over {n} "
        f"test images); runner-up vgg16, 30 % frozen ({(both + runner_only) / n:.4f}): {test}"
    )
    assert lines[6] == (
        f"- vgg16: 10 % frozen did best, {k / n:.4f} [{low:.4f}, {high:.4f}] (1 seed, 95 % Wilson interval over "
        f"{n} test images); runner-up 30 % frozen ({(both + runner_only) / n:.4f}): {test}"
    )
    # The interval beside the test agrees with it: it excludes 0 exactly when p < 0.05.
    excludes = lead.split("[")[1].startswith("+")
    assert excludes == (verdict == "the leader is better")
    assert "lies within this interval" not in "\n".join(lines) and "below this interval" not in "\n".join(lines)


@pytest.mark.parametrize(
    "runner, expected",
    [
        # Per-seed differences 0.01, 0.01, 0.015: t = 7.00 on 2 df, p = 0.0198, although each
        # setting's seeds overlap the other's (0.80-0.90 vs 0.79-0.885).
        (
            (0.79, 0.84, 0.885),
            "mean lead +0.0117 [+0.0045, +0.0188] over the 3 seeds both ran, paired t-test "
            "p = 0.02 (|t| = 7.00, 2 df): the leader is better",
        ),
        # Differences -0.02, +0.02, +0.02: t = 0.50, p = 0.67.
        (
            (0.82, 0.83, 0.88),
            "mean lead +0.0067 [-0.0507, +0.0640] over the 3 seeds both ran, paired t-test "
            "p = 0.67 (|t| = 0.50, 2 df): the data cannot separate them",
        ),
    ],
)
def test_several_seeds_are_compared_over_seeds(tmp_path, runner, expected):
    leader = (0.80, 0.85, 0.90)
    ref = ttest_rel(leader, runner)
    low, high = ref.confidence_interval(0.95)
    assert expected.startswith(f"mean lead {sum(leader) / 3 - sum(runner) / 3:+.4f} [{low:+.4f}, {high:+.4f}]")
    assert f"(|t| = {ref.statistic:.2f}, 2 df)" in expected and f"p = {ref.pvalue:.2g}" in expected
    p = tmp_path / "runs"
    dirs = [
        make_run(p, f"v{f}s{s}", freeze=f / 100, share=f / 100, seed=s, head=(1, 1, acc), others={})
        for f, accs in ((10, leader), (30, runner))
        for s, acc in enumerate(accs)
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    lines = answer(out)
    assert lines[3] == (
        "- head: vgg16, 10 % frozen, 0.8500 [0.8000, 0.9000] (mean of 3 seeds, lowest to highest seed); "
        f"runner-up vgg16, 30 % frozen ({sum(runner) / 3:.4f}): {expected}."
    )


@pytest.mark.slow
def test_leads_that_cannot_be_tested_are_not_compared(tmp_path):
    out = tmp_path / "rep"
    labels, leader, _ = lead_predictions(20, 16, 2, 0)
    other_labels, _, runner = lead_predictions(22, 16, 2, 0)  # 22 test images: not the same ones
    dirs = [
        make_run(
            tmp_path / "a",
            "v10",
            freeze=0.1,
            head=(1, 1, 0.9),
            others={},
            predictions={"label": labels, "head": leader},
        ),
        make_run(
            tmp_path / "a", "v30", head=(1, 1, 0.8), others={}, predictions={"label": other_labels, "head": runner}
        ),
    ]
    build_report(dirs, out)
    assert answer(out)[3].endswith("runner-up vgg16, 30 % frozen (0.8000): not compared: different test images.")

    dirs = [make_run(tmp_path / "b", "r10", backbone="resnet50", freeze=0.1, head=(1, 1, 0.9), others={})]
    dirs.append(make_run(tmp_path / "b", "r30", backbone="resnet50", head=(1, 1, 0.8), others={}))
    build_report(dirs, out)
    assert answer(out)[3].endswith("(0.8000): not compared: r10 has no predictions.csv.")

    dirs = [
        make_run(tmp_path / "c", f"v{f}s{s}", freeze=f / 100, seed=s, head=(1, 1, acc), others={})
        for f, seeds, acc in ((10, (0, 1), 0.9), (30, (2, 3), 0.8))
        for s in seeds
    ]
    build_report(dirs, out)
    assert answer(out)[3].endswith(
        "(0.8000): not compared: a paired comparison over seeds needs at least 2 seeds run in both; they share 0."
    )


def test_over_seeds_the_runner_up_can_be_ahead_on_the_seeds_both_ran(tmp_path):
    """The leader by its mean over 3 seeds is behind on the 2 seeds the runner-up also ran,
    by 0.05 on each: the sentence says so, over those seeds."""
    p = tmp_path / "runs"
    dirs = [
        make_run(p, f"v10s{s}", freeze=0.1, seed=s, head=(1, 1, a), others={}) for s, a in enumerate((0.8, 0.81, 0.99))
    ]
    dirs += [make_run(p, f"v30s{s}", seed=s, head=(1, 1, a), others={}) for s, a in enumerate((0.85, 0.86))]
    out = tmp_path / "rep"
    build_report(dirs, out)
    assert answer(out)[3].endswith(
        "runner-up vgg16, 30 % frozen (0.8550): mean lead -0.0500 [-0.0500, -0.0500] over the 2 seeds both ran, "
        "paired t-test p < 0.001 (|t| = ∞, 1 df): the runner-up is better."
    )


def test_scored_images_says_why_a_run_cannot_be_compared(tmp_path):
    from tlexp import files
    from tlexp.results import ScoredImages
    from tlexp.results._runs import ReportRun

    def run(name: str, rows: list[list[str]] | None) -> ReportRun:
        (tmp_path / name).mkdir()
        if rows is not None:
            files.write_csv(tmp_path / name / "predictions.csv", ["path", "split", "label", "head"], rows)
        return ReportRun(name, "finished", tmp_path / name)

    images = ScoredImages()
    good = run(
        "good", [["a.jpg", "train", "cat", "dog"], ["b.jpg", "test", "cat", "cat"], ["c.jpg", "test", "dog", "cat"]]
    )
    assert images.correct(good, "head") == ({"b.jpg": True, "c.jpg": False}, "")  # test split only
    assert images.correct(good, "forest") == (
        None,
        "not compared: good's predictions.csv has no test predictions of forest",
    )
    twice = run("twice", [["b.jpg", "test", "cat", "cat"], ["b.jpg", "test", "cat", "dog"]])
    assert images.correct(twice, "head") == (None, "not compared: twice repeats a test image")
    assert images.correct(run("none", None), "head") == (None, "not compared: none has no predictions.csv")


# --------------------------------------------------------------------------- cost


def test_a_chance_level_setting_is_never_ranked_first_or_recommended(tmp_path):
    """Issue #23: 0.50 in 0.33 min = 1.50/min ranked above 0.95 in 1.00 min = 0.95/min."""
    p = tmp_path / "runs"
    dirs = [
        make_run(p, "v70", freeze=0.7, share=0.7, head=(1, 1, 0.50), others={}, train_s=20.0),
        make_run(p, "v30", freeze=0.3, head=(1, 1, 0.95), others={}, train_s=60.0),
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    lines = answer(out)
    cost = lines.index(next(ln for ln in lines if ln.startswith("Cost of the head's test accuracy")))
    # Balanced test split of 20 images (10 per class): the baseline is 0.5.
    assert (
        "The majority-class baseline (always predicting the largest test class, 10 of 20 images) scores 0.5000"
        in (lines[cost])
    )
    assert lines[cost + 1 : cost + 3] == [
        "- vgg16, 30 % frozen: 0.9500 in 1.00 min (cold); on the Pareto frontier",
        "- vgg16, 70 % frozen: 0.5000 in 0.33 min (cold); on the Pareto frontier, at or below the majority-class "
        "baseline: never recommended",
    ]
    assert lines[-1].endswith(
        "Recommendation: vgg16, 30 % frozen (0.9500 in 1.00 min), the most accurate; no setting that beats the "
        "baseline costs fewer minutes."
    )
    assert "/min" not in "\n".join(lines)


def test_minutes_count_prefix_train_and_predict_and_say_cold_or_warm(tmp_path):
    p = tmp_path / "runs"
    dirs = [
        # Building the activation cache took most of this run: 120 s prefix + 30 s train + 30 s predict.
        make_run(p, "v10", freeze=0.1, head=(1, 1, 0.9), others={}, prefix_s=120.0, train_s=30.0, predict_s=30.0),
        make_run(
            p, "v30", head=(1, 1, 0.8), others={}, prefix_s=3.0, train_s=30.0, predict_s=27.0, cache_source="reused"
        ),
        make_run(p, "v50", freeze=0.5, head=(1, 1, 0.7), others={}, train_s=90.0, predict_s=30.0, cache_source=None),
    ]
    # A record without a prefix phase (made before it was timed) counts it as 0, and says so.
    metrics = dirs[2] / "metrics.json"
    data = json.loads(metrics.read_text())
    del data["timings_s"]["prefix"]
    metrics.write_text(json.dumps(data))
    out = tmp_path / "rep"
    build_report(dirs, out)
    lines = answer(out)
    cost = lines.index(next(ln for ln in lines if ln.startswith("Cost of the head's test accuracy")))
    assert (
        "Cache: none = no cache: the frozen part ran inside train and predict; cold = the run built the activation "
        "cache, its build counted; warm = the run read a cache another run built, whose build is not counted here."
    ) in lines[cost]
    assert lines[cost + 1 : cost + 5] == [
        "- vgg16, 10 % frozen: 0.9000 in 3.00 min (cold); on the Pareto frontier",
        "- vgg16, 30 % frozen: 0.8000 in 1.00 min (warm); on the Pareto frontier",
        "- vgg16, 50 % frozen: 0.7000 in 2.00 min (none)",
        "",
    ]
    assert lines[cost + 5].startswith("Not recorded, counted as 0: v50: prefix. Pareto frontier")
    from tlexp.results._runs import load_run
    from tlexp.results._settings import group_settings

    costs, left_out = setting_costs(group_settings([load_run(d) for d in dirs]))
    assert [c.minutes for c in costs] == [3.0, 1.0, 2.0] and left_out == []


def edit_record(run: Path, change) -> None:
    """Change a run's metrics.json in place (``change`` gets the parsed dict)."""
    data = json.loads((run / "metrics.json").read_text())
    change(data)
    (run / "metrics.json").write_text(json.dumps(data))


def cost_lines(out: Path) -> list[str]:
    lines = answer(out)
    return lines[lines.index(next(ln for ln in lines if ln.startswith("Cost"))) :]


def test_cost_mixed_caches_other_baselines_and_what_is_left_out(tmp_path):
    p = tmp_path / "runs"
    dirs = [
        make_run(p, "v10s0", freeze=0.1, seed=0, head=(1, 1, 0.9), others={}, train_s=60.0),
        make_run(p, "v10s1", freeze=0.1, seed=1, head=(1, 1, 0.9), others={}, train_s=60.0, cache_source="reused"),
        make_run(p, "v30s0", head=(1, 1, 0.8), others={}, train_s=30.0, cache_source="block3_pool"),
        make_run(p, "v30s1", seed=1, head=(1, 1, 0.8), others={}, train_s=30.0, cache_source="block3_pool"),
        make_run(p, "v50s0", freeze=0.5, head=(1, 1, 0.7), others={}),
    ]
    # v30's test split holds 12 cats and 8 dogs: its baseline is 0.6, the others' 0.5.
    for run in dirs[2:4]:
        edit_record(run, lambda d: d["classifiers"]["head"]["test"].update(confusion=[[12, 0], [0, 8]]))
    edit_record(dirs[4], lambda d: d["timings_s"].pop("train"))  # no train time: left out
    out = tmp_path / "rep"
    build_report(dirs, out)
    lines = cost_lines(out)
    assert "partly warm = the run built its cache from another run's cache of a shallower layer" in lines[0]
    assert lines[0].endswith(
        "The majority-class baseline (always predicting the largest test class) scores 0.5000 to 0.6000 by test "
        "split; each setting is held to its own. Most accurate first:"
    )
    assert lines[1:3] == [
        "- vgg16, 10 % frozen: 0.9000 in 1.00 min (cold in 1 seed(s), warm in 1 seed(s)); on the Pareto frontier",
        "- vgg16, 30 % frozen: 0.8000 in 0.50 min (partly warm); on the Pareto frontier",
    ]
    assert lines[4].startswith(
        "Left out (no train time or no scored test images): vgg16, 50 % frozen. Pareto frontier (no other setting"
    )


def test_cost_when_nothing_beats_the_baseline_or_nothing_is_timed(tmp_path):
    p = tmp_path / "runs"
    dirs = [
        make_run(p, "v10", freeze=0.1, head=(1, 1, 0.5), others={}, train_s=60.0),
        make_run(p, "v30", head=(1, 1, 0.45), others={}, train_s=30.0),
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    lines = cost_lines(out)
    assert lines[1:3] == [
        "- vgg16, 10 % frozen: 0.5000 in 1.00 min (cold); on the Pareto frontier, at or below the majority-class "
        "baseline: never recommended",
        "- vgg16, 30 % frozen: 0.4500 in 0.50 min (cold); on the Pareto frontier, at or below the majority-class "
        "baseline: never recommended",
    ]
    assert lines[-1].endswith("Recommendation: none: no setting's head beats the majority-class baseline.")
    for run in dirs:
        edit_record(run, lambda d: d["timings_s"].pop("train"))
    build_report(dirs, out)
    assert cost_lines(out) == ["Cost: not computed (no setting records its train time and test split)."]
    assert "accuracy_vs_minutes.png" not in build_report(dirs, out)


def test_pareto_frontier_of_a_hand_made_set():
    points = [(1.0, 0.80), (2.0, 0.90), (2.0, 0.85), (3.0, 0.90), (0.5, 0.50), (4.0, 0.95), (1.0, 0.80)]
    # (2, .85) is beaten by (2, .90) in accuracy at the same minutes; (3, .90) by (2, .90) in
    # minutes; the two (1, .80) tie and both stay; the cheapest and the most accurate are on it.
    assert pareto_frontier(points) == [True, True, False, False, True, True, True]
    assert pareto_frontier([]) == []


def test_the_most_accurate_is_kept_where_the_paired_test_finds_it_better(tmp_path):
    labels, best, cheap = lead_predictions(200, 160, 30, 0)  # b = 0, c = 30: p < 0.001
    p = tmp_path / "runs"
    dirs = [
        make_run(
            p,
            "v10",
            freeze=0.1,
            head=(1, 1, 0.95),
            others={},
            predictions={"label": labels, "head": best},
            train_s=60.0,
        ),
        make_run(
            p,
            "v50",
            freeze=0.5,
            head=(1, 1, 0.80),
            others={},
            predictions={"label": labels, "head": cheap},
            train_s=30.0,
        ),
    ]
    out = tmp_path / "rep"
    build_report(dirs, out)
    assert answer(out)[-1].endswith(
        "Recommendation: vgg16, 10 % frozen (0.9500 in 1.00 min), the most accurate: every cheaper setting on the "
        "frontier that beats the baseline is worse by the paired test, or could not be compared: vgg16, 50 % "
        "frozen: lead +0.1500 [+0.1071, +0.2061], McNemar p < 0.001 on the same 200 test images (only the most "
        "accurate right on 30, only the cheaper on 0): the most accurate is better."
    )


def test_cost_chart_marks_each_setting_the_frontier_and_the_baseline(tmp_path, monkeypatch):
    figures = capture_figures(monkeypatch)
    p = tmp_path / "runs"
    dirs = [
        make_run(p, "v10", freeze=0.1, head=(1, 1, 0.90), others={}, train_s=120.0),
        make_run(p, "v30", head=(1, 1, 0.85), others={}, train_s=150.0),  # beaten by v10 in both
        make_run(p, "v70", freeze=0.7, head=(1, 1, 0.80), others={}, train_s=60.0),
        make_run(p, "r30", backbone="resnet50", head=(1, 1, 0.95), others={}, train_s=180.0),
    ]
    out = tmp_path / "rep"
    written = build_report(dirs, out)
    assert written["accuracy_vs_minutes.png"] == out / "accuracy_vs_minutes.png"
    (ax,) = figures[2].axes
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()), ln) for ln in ax.get_lines()}
    assert lines["vgg16"][:2] == ([2.0, 2.5, 1.0], [0.90, 0.85, 0.80])  # one marker per setting, in minutes
    assert lines["vgg16"][2].get_linestyle() == "None"  # markers only: settings are not a series
    assert lines["resnet50"][:2] == ([3.0], [0.95])
    # A step up at each frontier setting, then flat to the right edge (15 % beyond the last setting).
    assert lines["Pareto frontier"][:2] == ([1.0, 2.0, 3.0, pytest.approx(3.45)], [0.80, 0.90, 0.95, 0.95])
    assert ax.get_xlim() == (0.0, pytest.approx(3.45))
    rings = [ln for ln in ax.get_lines() if ln.get_markerfacecolor() == "none"]
    assert [(list(r.get_xdata()), list(r.get_ydata())) for r in rings] == [([1.0, 2.0, 3.0], [0.80, 0.90, 0.95])]
    assert lines["Pareto frontier"][2].get_drawstyle() == "steps-post"
    assert lines["majority-class baseline 0.5000"][1] == [0.5, 0.5]
    labels = {tuple(t.xy): (t.get_text(), tuple(t.xyann)) for t in ax.texts}
    assert labels == {
        (2.0, 0.90): ("10 % frozen", (5, 4)),
        (2.5, 0.85): ("30 % frozen", (5, 4)),
        (1.0, 0.80): ("70 % frozen", (5, 4)),
        (3.0, 0.95): ("30 % frozen", (5, 4)),
    }
    html = (out / "report.html").read_text()
    assert (
        "Head test accuracy vs minutes of compute (prefix, train and predict phases), one marker per setting; "
        "dashed step line and rings: the Pareto frontier; dotted line: the majority-class baseline (0.5000); "
        "one seed per point.</figcaption>"
    ) in html


def test_cost_chart_needs_a_point_and_keeps_close_labels_apart(tmp_path, monkeypatch):
    from tlexp.results import CostPoint, plot_accuracy_vs_minutes

    figures = capture_figures(monkeypatch)
    points = [CostPoint("vgg16", "70 %", 1.0, 0.90, True), CostPoint("resnet50", "70 %", 1.05, 0.901, True)]
    plot_accuracy_vs_minutes(points, tmp_path / "c.png", baseline=None)
    (ax,) = figures[0].axes
    # The second label would sit on the first: it goes below its marker.
    assert [(tuple(t.xy), tuple(t.xyann)) for t in ax.texts] == [((1.0, 0.90), (5, 4)), ((1.05, 0.901), (5, -11))]
    assert [ln.get_label() for ln in ax.get_lines()][:3] == ["vgg16", "resnet50", "Pareto frontier"]
    with pytest.raises(ValueError, match="at least one"):
        plot_accuracy_vs_minutes([], tmp_path / "x.png", baseline=0.5)


# --------------------------------------------------------------------------- Holm's family


def test_holm_family_is_stated_and_grows_with_the_runs(tmp_path):
    """Holm's family is every head-vs-other comparison of the report: adding a run adds to
    it, and changes the Holm p-value of a comparison that did not change."""
    p = tmp_path / "runs"
    others = {"forest": (1, 1, 0.0), "logreg": (1, 1, 0.0)}

    def run(name: str, freeze: float, b: int, c: int) -> Path:
        preds = from_counts(200, 150, b, c)
        preds["logreg"] = preds["forest"]
        return make_run(p, name, freeze=freeze, others=others, predictions=preds)

    two = [run("f10", 0.1, 2, 12), run("f30", 0.3, 5, 6)]
    build_report(two, tmp_path / "two")
    three = [*two, run("f70", 0.7, 10, 11)]
    build_report(three, tmp_path / "three")

    family = (
        "Holm's family is every head-vs-other comparison in this report: {k}, one per run and classifier "
        "({r} run(s) with predictions.csv; head vs forest, logreg). A report over more or fewer runs has another "
        "family, and so other Holm p-values. The answer's leader-vs-runner-up tests are not in it."
    )
    for folder, k, r in (("two", 4, 2), ("three", 6, 3)):
        md = (tmp_path / folder / "summary.md").read_text()
        assert family.format(k=k, r=r) in section(md, "The answer")
        assert family.format(k=k, r=r) in section(md, "Head vs other classifiers")
    # f10's forest: b = 2, c = 12, p = 0.0075; Holm multiplies the smallest p by the family's size.
    raw = math.erfc(10 / math.sqrt(2 * 14))
    holm = {}
    for folder in ("two", "three"):
        (row,) = [
            r for r in csv_rows(tmp_path / folder / "paired.csv") if (r["run"], r["classifier_b"]) == ("f10", "forest")
        ]
        holm[folder] = float(row["p_holm"])
    assert holm == {"two": pytest.approx(4 * raw), "three": pytest.approx(6 * raw)}
