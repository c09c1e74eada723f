"""train.precision auto on a CPU: the decision from measured figures (injected here, never
timed), what stops a measurement, the kept figures, the GPU rules, and a real run's record."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tlexp.model._precision import (
    BF16,
    F32,
    MARGIN,
    TRAINED_STAYS_F32,
    CpuInfo,
    cpu_info,
    decide_precision,
    piece_key,
    prefix_pieces,
)
from tlexp.model._precisionstore import FigureStore, Kept

from conftest import tiny_config

AVX512 = CpuInfo("Test EPYC", ("avx512_bf16",), True, 2, "avx2 avx512_bf16 avx512f")
PLAIN = CpuInfo("Test Xeon", (), True, 2, "avx2 avx512f")
STOPS = [4, 7, 11, 15, 19]  # VGG16's stages (block1..block5), as backbone_stages gives them


def figures(pieces, speedup: float = 2.0, f32: float = 0.01) -> dict:
    """Seconds per image of each piece: float32 ``f32``, bfloat16 ``f32 / speedup``."""
    return {piece_key(p): {F32: f32, BF16: f32 / speedup} for p in pieces}


class FakeTimer:
    """PieceTimer with injected figures; logs which pieces each side timed."""

    log: list = []

    def __init__(self, backbone, batch_size: int, speedup: float = 2.0, f32: float = 0.01, cost: float = 1.0):
        self.speedup, self.f32, self.cost = speedup, f32, cost

    def float32(self, pieces) -> Kept:
        self.log.append(("float32", list(pieces)))
        return Kept({piece_key(p): {F32: self.f32} for p in pieces}, {piece_key(p): self.cost for p in pieces})

    def both(self, pieces) -> Kept:
        self.log.append(("both", list(pieces)))
        return Kept(figures(pieces, self.speedup, self.f32))

    def restore(self) -> None:
        self.log.append(("restored", []))


def probe(tmp_path, cpu=AVX512, key=None, timer=None, **kw):
    from tlexp.model import PrecisionProbe

    args = {"deterministic": False, "distribute": "none", **kw}
    return PrecisionProbe(
        key or {"backbone": "vgg16"},
        tmp_path / "precision",
        cpu=cpu,
        timer=timer or FakeTimer,
        stage_stops=lambda backbone: STOPS,
        **args,
    )


def choose(tmp_path, cpu=AVX512, images=10_000, cut=13, key=None, timer=None, cached=None, **kw):
    """PrecisionProbe.decide with an injected CPU, backbone and timer: the decision and the
    pieces timed (each timing ends with the layers' policies restored)."""
    FakeTimer.log = []
    chooser = probe(tmp_path, cpu, key, timer, **kw)
    decision = chooser.decide("backbone", cut, images=images, batch_size=32, cached=cached)
    timed = list(FakeTimer.log)
    if timed:
        assert timed[-1] == ("restored", [])
    return decision, [t for t in timed if t[0] != "restored"]


def test_pieces_are_the_stages_below_the_cut_then_the_rest():
    assert prefix_pieces(STOPS, 13) == [(1, 4), (4, 7), (7, 11), (11, 13)]
    assert prefix_pieces(STOPS, 11) == [(1, 4), (4, 7), (7, 11)]  # a cut at a stage's end
    assert prefix_pieces(STOPS, 3) == [(1, 3)]
    assert prefix_pieces([], 13) == [(1, 13)]  # no stages found: the prefix whole


def test_bfloat16_that_wins_clearly_is_chosen():
    pieces = prefix_pieces(STOPS, 13)
    f = figures(pieces, 2.0)
    f[piece_key((11, 13))] = {F32: 0.01, BF16: 0.012}  # one piece slower: the prefix's sum counts
    d = decide_precision(f, pieces, 800, "cpu")
    assert d.choice == {"prefix": BF16, "trained": F32} and d.build_policy == BF16
    assert "forward 40 -> 27 ms/image, layers 1-13 timed in 4 stage pieces" in d.reasons["prefix"]
    assert "over 800 images: 32 s -> 21.6 s, 1.48x >= 1.2x" in d.reasons["prefix"]
    rec = d.to_dict()["figures"]["prefix"]
    assert rec["speedup"] == pytest.approx(40 / 27, abs=1e-3) and rec["forward_images"] == 800 and rec["pieces"] == 4
    assert d.reasons["trained"] == TRAINED_STAYS_F32


def test_bfloat16_inside_the_margin_or_slower_keeps_float32():
    pieces = prefix_pieces(STOPS, 13)
    just_under = MARGIN * 0.95
    d = decide_precision(figures(pieces, just_under), pieces, 1000, "cpu")
    assert d.choice == {"prefix": F32, "trained": F32}
    assert f"{just_under:.2f}x < 1.2x" in d.reasons["prefix"] and "slower" not in d.reasons["prefix"]
    d = decide_precision(figures(pieces, 0.7), pieces, 1000, "cpu")
    assert "0.70x < 1.2x, slower" in d.reasons["prefix"] and d.build_policy == F32
    assert "frozen prefix float32" in d.line() and "trained part float32" in d.line()


def test_cpu_flags_are_read_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
    cpu = cpu_info(text, "Linux")
    assert (cpu.model, cpu.flags, cpu.known, cpu.cap) == ("AMD EPYC 9R14", ("avx512_bf16",), True, 2.0)
    amx = cpu_info("model name: Xeon\nflags: avx512_bf16 amx_bf16 amx_tile\n", "Linux")
    assert amx.flags == ("avx512_bf16", "amx_bf16") and amx.cap is None  # AMX: not bounded at 2x
    assert cpu_info("model name: Old\nflags: avx2 avx512f\n", "Linux").flags == ()
    assert not cpu_info(None, "Darwin").known


@pytest.mark.parametrize(
    ("cpu", "kw", "reason"),
    [
        (PLAIN, {}, "no avx512_bf16 or amx_bf16 flag"),
        (CpuInfo("Apple M2", (), False, 8), {}, "cannot tell whether this CPU (Apple M2) computes bfloat16 fast"),
        (AVX512, {"deterministic": True}, "train.deterministic keeps float32 unless asked"),
        (AVX512, {"distribute": "mirrored"}, "data parallel training: not measured"),
    ],
)
def test_float32_without_measuring(tmp_path, cpu, kw, reason):
    d, timed = choose(tmp_path, cpu=cpu, **kw)
    assert timed == [] and d.choice == {"prefix": F32, "trained": F32} and d.source == "skipped"
    rec = d.to_dict()
    assert reason in rec["reason"] and rec["figures"] == {}
    assert not (tmp_path / "precision").exists()
    assert probe(tmp_path, cpu, **kw).build_policy(10_000, 32) == F32


def test_the_prefix_is_timed_stage_by_stage_and_training_stays_float32(tmp_path):
    """However fast bfloat16 would train, auto keeps training in float32 and says why; only
    the frozen prefix is timed, float32 first, then both ways, on the run's own backbone."""
    d, timed = choose(tmp_path)
    pieces = [(1, 4), (4, 7), (7, 11), (11, 13)]
    assert timed == [("float32", pieces), ("both", pieces)]
    assert d.choice == {"prefix": BF16, "trained": F32} and d.source == "measured"
    assert d.reasons["trained"] == TRAINED_STAYS_F32 and "mixed_bfloat16 asks for it" in d.to_dict()["reason"]
    assert "measured in" in d.line()


def test_nothing_frozen_is_nothing_to_time(tmp_path):
    d, timed = choose(tmp_path, images=0)
    assert timed == [] and d.choice == {"trained": F32} and d.build_policy == F32
    d, timed = choose(tmp_path, cut=1)  # the plan froze no layer after all
    assert timed == [] and d.choice == {"trained": F32}


def test_too_little_work_to_pay_for_measuring(tmp_path):
    d, timed = choose(tmp_path, images=100)
    assert timed == [] and d.choice == {"prefix": F32, "trained": F32}
    assert "too little work to measure: 100 image-passes" in d.reasons["prefix"]
    # AVX512-BF16 can at most halve a pass; with AMX the bound is the whole run's work.
    edge = 500  # half of 500 images < 9 passes of 32 = 288 measured
    assert choose(tmp_path, images=edge)[1] == []
    amx = CpuInfo("Xeon", ("amx_bf16",), True, 2)
    assert choose(tmp_path, images=edge, cpu=amx)[1][0][0] == "float32"
    assert probe(tmp_path).build_policy(10_000, 32) == F32  # "too little work" says nothing of the backbone


def test_figures_are_kept_per_backbone_and_reused_across_cuts(tmp_path):
    first, _ = choose(tmp_path)
    assert len(list((tmp_path / "precision").glob("*.json"))) == 1
    again, timed = choose(tmp_path)  # the same cut: nothing timed
    assert again.source == "reused" and timed == []
    assert again.choice == first.choice and again.reasons["prefix"] == first.reasons["prefix"]
    # Another freeze share of the same backbone: only the stages (and the part of one) that no
    # earlier run timed are timed now.
    deeper, timed = choose(tmp_path, cut=17)
    new = [(11, 15), (15, 17)]  # block4 whole (the 0.3 run timed 11:13 of it), then 15:17 of block5
    assert timed == [("float32", new), ("both", new)]
    assert deeper.source == "measured" and "layers 1-17 timed in 5 stage pieces" in deeper.reasons["prefix"]
    shallower, timed = choose(tmp_path, cut=7)  # stages 1-2, timed already
    assert timed == [] and shallower.source == "reused"
    # Anything that changes the timing is another backbone's file: measured again, kept beside.
    four_threads = CpuInfo("Test EPYC", ("avx512_bf16",), True, 4, AVX512.all_flags)
    for change in ({"key": {"backbone": "vgg16", "batch_size": 64}}, {"cpu": four_threads}):
        assert choose(tmp_path, **change)[1][0] == ("float32", [(1, 4), (4, 7), (7, 11), (11, 13)])
    assert len(list((tmp_path / "precision").glob("*.json"))) == 3


def test_the_backbone_is_built_under_the_last_choice_for_it(tmp_path):
    """A run builds its backbone under the precision last chosen for that backbone on this CPU
    (its graph then carries the prefix's dtype, usually without a second build)."""
    assert probe(tmp_path).build_policy(10_000, 32) == F32  # nothing chosen yet
    choose(tmp_path)
    assert probe(tmp_path).build_policy(10_000, 32) == BF16
    assert probe(tmp_path).build_policy(100, 32) == F32  # too little work to measure: float32, not built twice
    assert probe(tmp_path, key={"backbone": "resnet50"}).build_policy(10_000, 32) == F32
    choose(tmp_path, timer=lambda b, n: FakeTimer(b, n, speedup=1.05), key={"backbone": "resnet50"})
    assert probe(tmp_path, key={"backbone": "resnet50"}).build_policy(10_000, 32) == F32
    assert probe(tmp_path).build_policy(10_000, 32) == BF16


def test_each_precision_is_charged_only_what_the_cache_does_not_hold(tmp_path):
    """A sweep's deeper cut computes from a shallower cell's cached activations, in their
    precision: each side is charged from its own cached entry, so a bfloat16 prefix no
    faster than the float32 segment left to compute is not chosen, and is not even timed
    where its bound says it cannot win."""
    whole = [(1, 4), (4, 7), (7, 11), (11, 13)]
    # float32 holds layers 1-7: it computes 2 pieces (0.02 s/image); bfloat16, all 4 at 2x
    # would take 0.02 too, and AVX512-BF16 bounds it at half of float32's 0.04: it cannot win.
    d, timed = choose(tmp_path, cached={F32: 7})
    assert timed == [("float32", whole)] and d.choice["prefix"] == F32
    assert (
        "bfloat16 cannot win: float32 computes 200 s over this run, bfloat16 would take at least 200 s"
        in (d.reasons["prefix"])
    )
    # bfloat16 holds layers 1-7: it computes 2 pieces at 0.005 against float32's 4 at 0.01: 4x.
    d, timed = choose(tmp_path / "b", cached={BF16: 7})
    assert timed == [("float32", whole), ("both", [(7, 11), (11, 13)])]
    assert d.choice["prefix"] == BF16
    assert (
        "float32 1-13: 40 ms/image; bfloat16 8-13 (layers 1-7 cached): 10 ms/image; over 10,000 images: "
        "400 s -> 100 s, 4.00x >= 1.2x" in d.reasons["prefix"]
    )
    rec = d.figures["prefix"]
    assert (rec["float32_from_layer"], rec["mixed_bfloat16_from_layer"], rec["pieces"]) == (1, 7, 4)
    # Both hold some: each from its own.
    sides = {F32: prefix_pieces(STOPS, 13, 9), BF16: prefix_pieces(STOPS, 13, 5)}
    assert sides == {F32: [(9, 11), (11, 13)], BF16: [(5, 7), (7, 11), (11, 13)]}
    f = {**figures(sides[F32], 2.0), **figures(sides[BF16], 2.0)}
    assert decide_precision(f, sides, 100, "cpu").choice["prefix"] == BF16  # 0.02 vs 0.015: 1.33x


def test_later_cells_of_a_backbone_keep_its_measured_choice_untimed(tmp_path):
    """Once a cell chose bfloat16 by measurement and cached its prefix so, a deeper cut of the
    same backbone whose only cached entry is that one keeps bfloat16 without timing anything;
    an entry only in the other precision is weighed as above (timed)."""
    choose(tmp_path)  # the first cell: measured, bfloat16
    d, timed = choose(tmp_path, cut=17, cached={BF16: 13})
    assert timed == [] and d.choice["prefix"] == BF16 and d.source == "cached"
    assert "layers 1-13 of 17 are cached in mixed_bfloat16, the precision last chosen" in d.reasons["prefix"]
    d, timed = choose(tmp_path, cut=17, cached={F32: 13})  # not the last choice: charged per side
    assert timed and d.source == "measured"
    d, timed = choose(tmp_path, cut=19, cached={F32: 13, BF16: 17})  # both hold some: each from its own
    assert d.source in ("measured", "reused") and d.figures["prefix"]["mixed_bfloat16_from_layer"] == 17


def test_a_cut_cached_whole_takes_its_precision_untimed(tmp_path):
    d, timed = choose(tmp_path, cached={BF16: 13, F32: 7})
    assert timed == [] and d.choice == {"prefix": BF16, "trained": F32} and d.source == "cached"
    assert "activations at layer 13 are cached in mixed_bfloat16" in d.reasons["prefix"]
    assert probe(tmp_path).build_policy(10_000, 32) == BF16
    d, timed = choose(tmp_path, cached={BF16: 13, F32: 13})  # both: float32, which rounds nothing
    assert timed == [] and d.choice["prefix"] == F32 and d.source == "cached"


def test_concurrent_runs_keep_each_others_figures(tmp_path):
    """Two workers that timed other pieces of the same backbone save one after the other:
    the file holds both (merged on save), not only the last writer's."""
    store = FigureStore(tmp_path)
    store.save("k", Kept(figures([(1, 4)]), {"1:4": 1.0}, BF16), {"backbone": "vgg16"})
    store.save("k", Kept(figures([(4, 7)]), {"4:7": 2.0}), {"backbone": "vgg16"})
    kept = store.load("k")
    assert set(kept.figures) == {"1:4", "4:7"} and kept.cost_s == {"1:4": 1.0, "4:7": 2.0}
    assert kept.last == BF16  # a save without a choice keeps the one on disk
    (tmp_path / "k.json").write_text("{not json")
    assert store.load("k") == Kept()  # unreadable: measured again, never an error


def test_a_prefix_too_quick_to_repay_its_bfloat16_timing_is_not_timed_so(tmp_path):
    """The float32 side is timed first; where bfloat16 could not save what timing its side
    would cost, it is not timed, and a larger run later times only that side."""

    class Slow(FakeTimer):  # 0.1 ms an image in float32; timing the bfloat16 side: 20 s a piece
        def __init__(self, backbone, batch_size):
            super().__init__(backbone, batch_size, f32=1e-4, cost=20.0)

    d, timed = choose(tmp_path, images=10_000, timer=Slow)
    assert [side for side, _ in timed] == ["float32"] and d.choice["prefix"] == F32
    assert "bfloat16 could save at most 2 s, timing it would take about 80 s" in d.reasons["prefix"]
    d, timed = choose(tmp_path, images=10_000_000, timer=Slow)
    assert [side for side, _ in timed] == ["both"] and d.source == "measured"


@pytest.mark.slow
def test_the_timer_times_real_pieces_both_ways():
    """PieceTimer on a real backbone: a figure per piece each way, each side computing in its
    own dtype whatever the backbone was built under, and the layers' policies given back."""
    from tlexp.model import PieceTimer, build_backbone, global_policy
    from tlexp.pipeline._prefix import layer_digests

    with global_policy(BF16):  # built under bfloat16: the float32 side must still be float32
        backbone = build_backbone("vgg16", 32)
    timer = PieceTimer(backbone, 8)
    digests = layer_digests(backbone, 6)  # the activation cache's keys: the same under either policy
    kept = timer.float32([(1, 4), (4, 6)])
    assert set(kept.figures) == {"1:4", "4:6"} and all(c > 0 for c in kept.cost_s.values())
    assert backbone.layers[5].compute_dtype == "float32" and layer_digests(backbone, 6) == digests
    both = timer.both([(1, 4), (4, 6)])
    assert all(v[F32] > 0 and v[BF16] > 0 for v in both.figures.values())
    assert backbone.layers[5].compute_dtype == "bfloat16"
    timer.restore()
    assert {layer.dtype_policy.name for layer in backbone.layers[1:]} == {BF16}


def test_gpu_rules_are_unchanged(monkeypatch):
    from tlexp.model import _accel as accel

    for caps, want in (([(9, 0)], "mixed_bfloat16"), ([(7, 5)], "mixed_float16"), ([], "float32")):
        monkeypatch.setattr(accel, "_tf_gpus", lambda caps=caps: (["GPU"] * len(caps), caps))
        monkeypatch.setattr("tlexp.model._backend.backend_name", lambda: "tensorflow")
        got = accel.resolve_accel("auto", "none", "auto", False, 32)
        assert got.precision == want and got.precision_decision is None


def test_records_without_a_decision_still_load():
    from tlexp.results._record import AcceleratorInfo

    old = {"gpus": [], "precision": "float32", "jit_compile": False, "distribute": "none"}
    assert AcceleratorInfo.model_validate(old).precision_decision is None
    pieces = prefix_pieces(STOPS, 13)
    d = decide_precision(figures(pieces, 2.0), pieces, 12_000, "cpu")
    new = AcceleratorInfo.model_validate({**old, "precision": BF16, "precision_decision": d.to_dict()})
    assert new.precision_decision.choice == {"prefix": BF16, "trained": F32}
    assert new.precision_decision.figures["prefix"]["forward_images"] == 12_000


@pytest.mark.slow
def test_parts_compute_in_their_own_dtype(tmp_path):
    """A model built under bfloat16 whose trained part is set to float32 computes the prefix
    in bfloat16 and the rest in float32: its logits are the float32 model's on the prefix's
    bfloat16 activations, and not the all-bfloat16 model's."""
    import keras

    from tlexp.experiment._build import build_whole
    from tlexp.model import apply_precision, build_backbone, inference_fn, segment

    cfg = tiny_config(tmp_path, tmp_path, "model.head.dense=[8]")
    x = np.random.default_rng(0).uniform(-100, 100, (4, 32, 32, 3)).astype("float32")

    def built(policy: str):
        keras.utils.set_random_seed(0)
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            return build_whole(cfg, build_backbone("vgg16", 32), 2)
        finally:
            keras.mixed_precision.set_global_policy(previous)

    cut = 11  # through block3_pool
    split = built(BF16)
    apply_precision(split, cut, {"prefix": BF16, "trained": F32})
    assert split.backbone.layers[cut - 1].compute_dtype == "bfloat16"
    assert split.backbone.layers[cut].compute_dtype == "float32" and split.head[1].compute_dtype == "float32"
    got = np.asarray(inference_fn(split.trainer)(x), np.float64)
    acts = np.asarray(inference_fn(segment(split.backbone, 1, cut))(x))
    assert acts.dtype.name == "bfloat16"
    f32 = built(F32)  # the same weights (same seed), everything float32
    rest = np.asarray(inference_fn(segment(f32.backbone, cut, len(f32.backbone.layers)))(acts.astype("float32")))
    want = np.asarray(f32.head[-2](f32.head[-3](f32.head[-4](f32.head[0](rest)))), np.float64)
    everything_bf16 = np.asarray(inference_fn(built(BF16).trainer)(x), np.float64)
    scale = np.abs(want).max()
    if keras.backend.backend() == "tensorflow":
        assert np.abs(got - want).max() < 1e-5 * scale
    # (On JAX, XLA may keep the prefix's values above bfloat16 precision inside one compiled model:
    # its default xla_allow_excess_precision. With that flag off, the check above holds there too.)
    assert np.abs(everything_bf16 - want).max() > 1e-3 * scale
    # Called on their own, the layers compute in their part's dtype on either backend.
    assert keras.ops.convert_to_tensor(split.backbone.layers[cut](acts)).dtype == "float32"
    conv = split.backbone.layers[cut - 2]  # block3_conv3
    assert keras.ops.convert_to_tensor(conv(np.ones((1, 8, 8, 256), "float32"))).dtype == "bfloat16"


@pytest.mark.slow
def test_a_run_records_its_decision_and_the_cache_follows_the_prefix(tmp_path, flat_dataset, monkeypatch):
    """Real tiny runs: on whatever CPU, auto records a decision (float32 here: too little work);
    with figures injected, the prefix runs and is cached in bfloat16 and the trained part in
    float32, as recorded; the next run takes the cached bfloat16 prefix without timing or a
    second build, and trains exactly as the measured one did; a deeper cut charges bfloat16
    only the layers above that entry."""
    from tlexp.api import run
    from tlexp.model import _precisionprobe as probe
    from tlexp.results import load_record

    # Its own cache folder: the session's holds float32 entries of the same generated images
    # and weights from other tests, which auto would rightly take (nothing to compute).
    own_cache = f"data.cache_dir={tmp_path / 'cache'}"
    plain = load_record(
        run(tiny_config(tmp_path, flat_dataset, "name=plain", "train.prefix_cache.enabled=false", own_cache))
    )
    d = plain.accelerator.precision_decision
    assert plain.accelerator.precision == "float32" and d is not None and d.choice["trained"] == F32
    assert d.source == "skipped" and d.reason

    built_under = []

    class Timer(FakeTimer):  # the run's own backbone, its pieces' figures injected
        def __init__(self, backbone, batch_size):
            assert backbone.name == "vgg16" and batch_size == 8
            built_under.append({layer.compute_dtype for layer in backbone.layers[1:]})
            super().__init__(backbone, batch_size)

    monkeypatch.setattr(probe, "cpu_info", lambda: AVX512)
    monkeypatch.setattr(probe, "can_pay", lambda *a: None)
    monkeypatch.setattr(probe, "worth_bf16", lambda *a: None)
    monkeypatch.setattr(probe, "PieceTimer", Timer)

    def split(name: str, *more: str):
        cfg = tiny_config(tmp_path, flat_dataset, f"name={name}", "train.prefix_cache.enabled=true", own_cache, *more)
        rec = load_record(run(cfg))
        return rec, rec.accelerator.precision_decision, Path(rec.run.dir, "run.log").read_text()

    rec, d, log = split("split")
    assert d.source == "measured" and d.choice == {"prefix": BF16, "trained": F32}
    assert rec.accelerator.precision == BF16 and d.figures["prefix"]["speedup"] == 2.0
    assert rec.prefix_cache.used and rec.prefix_cache.dtype == "bfloat16"
    assert "precision mixed_bfloat16 (frozen prefix), float32 (trained part)" in log
    assert "model: precision auto on Test EPYC" in log and "built again under mixed_bfloat16" in log
    assert built_under == [{"float32"}]  # nothing chosen for VGG16 before: built under float32, timed, built again
    config = json.loads(zipfile.ZipFile(Path(rec.run.dir, "model.keras")).read("config.json"))
    policies = {
        layer["config"]["name"]: layer["config"]["dtype"]["config"]["name"]
        for layer in _layers(config)
        if isinstance(layer["config"].get("dtype"), dict)  # an input layer's is a plain name
    }
    assert policies["block1_conv1"] == BF16 and policies["dense_1"] == F32 and policies["logits"] == F32

    monkeypatch.setattr(probe, "PieceTimer", None)  # nothing may be timed from here on
    again, d, log = split("again")
    assert d.source == "cached" and d.choice["prefix"] == BF16 and "built again" not in log
    assert again.prefix_cache.source == "reused" and again.prefix_cache.dtype == "bfloat16"

    # Timing on the run's backbone and building it again left the run's random state alone.
    def trained(r):
        return {k: v for k, v in r.history.model_dump().items() if k != "seconds"}

    assert trained(again) == trained(rec) and len(trained(rec)["loss"]) == 1
    assert again.head.test.accuracy == rec.head.test.accuracy

    # A deeper cut of the same backbone: the measured choice holds its lower layers in the cache,
    # so it keeps that precision, untimed, built once under it, and computes only the layers above.
    cut = rec.freeze.layers_frozen
    deeper, d, log = split("deeper", "model.freeze=0.7")
    assert d.source == "cached" and d.choice["prefix"] == BF16 and deeper.accelerator.precision == BF16
    assert f"layers 1-{cut} of {deeper.freeze.layers_frozen} are cached in mixed_bfloat16" in d.reason
    assert "built again" not in log and built_under == [{"float32"}]
    assert deeper.prefix_cache.source == rec.freeze.last_frozen_layer and deeper.prefix_cache.dtype == "bfloat16"


def _layers(config: dict):
    """Every layer config in a saved model's config, nested models included."""
    for layer in config["config"]["layers"]:
        yield layer
        if "layers" in layer.get("config", {}):
            yield from _layers(layer)
