"""train.precision auto on a CPU: the decision from measured figures (injected here, never
timed), what stops a measurement, the kept figures, the GPU rules, and a real run's record."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tlexp.model._precision import BF16, F32, MARGIN, CpuInfo, FigureStore, Kept, Work, cpu_info, decide_precision

from conftest import tiny_config

AVX512 = CpuInfo("Test EPYC", ("avx512_bf16",), True, 2, "avx2 avx512_bf16 avx512f")
PLAIN = CpuInfo("Test Xeon", (), True, 2, "avx2 avx512f")
BIG = Work(prefix=10_000, train=20_000, forward=12_000, batch_size=32)


def figures(prefix: float | None = None, train: float = 1.0, forward: float | None = None) -> dict:
    """Seconds per image, float32 at 10 ms; bfloat16 = float32 / the speed-up given."""
    trained = {"train": {F32: 0.01, BF16: 0.01 / train}, "forward": {F32: 0.01, BF16: 0.01 / (forward or train)}}
    out = {"trained": trained}
    if prefix is not None:
        out["prefix"] = {"forward": {F32: 0.01, BF16: 0.01 / prefix}}
    return out


def choose(tmp_path, cpu=AVX512, work=BIG, measured=None, key=None, **kw):
    """choose_precision with an injected CPU and measurement (which counts its calls)."""
    from tlexp.model import choose_precision

    calls = []

    def measure(make_model, parts, work, cap, compile_args):
        calls.append(list(parts))
        found = measured or figures(prefix=2.0, train=1.5)
        return Kept({p: found[p] for p in parts}, 13, {p: 1.0 for p in parts}), {}

    args = {"deterministic": False, "distribute": "none", "compile_args": {}}
    decision = choose_precision(
        None, work=work, key=key or {"backbone": "vgg16"}, store=tmp_path / "precision", cpu=cpu, measure=measure,
        **{**args, **kw},
    )  # fmt: skip
    return decision, calls


def test_bfloat16_that_wins_clearly_is_chosen():
    d = decide_precision(figures(prefix=2.0, train=1.5), BIG, ("prefix", "trained"), "cpu")
    assert d.choice == {"prefix": BF16, "trained": BF16}
    assert d.build_policy == BF16
    assert "2.00x >= 1.2x" in d.reasons["prefix"] and "1.50x >= 1.2x" in d.reasons["trained"]
    rec = d.to_dict()
    assert rec["figures"]["prefix"]["speedup"] == 2.0 and rec["figures"]["trained"]["train_images"] == 20_000
    assert rec["figures"]["trained"][f"{F32}_s"] == pytest.approx(0.01 * 32_000)


def test_bfloat16_inside_the_margin_or_slower_keeps_float32():
    just_under = MARGIN * 0.95
    d = decide_precision(figures(prefix=just_under, train=0.7), BIG, ("prefix", "trained"), "cpu")
    assert d.choice == {"prefix": F32, "trained": F32}
    assert f"{just_under:.2f}x < 1.2x" in d.reasons["prefix"] and "slower" not in d.reasons["prefix"]
    assert "0.70x < 1.2x, slower" in d.reasons["trained"]


def test_parts_get_their_own_answers_and_the_run_weights_the_trained_part():
    # The prefix gains, training gains 1.3x but forward passes lose (0.5x): which wins depends
    # on how many images each kind of step sees in this run.
    f = figures(prefix=2.0, train=1.3, forward=0.5)
    many_steps = Work(prefix=1000, train=50_000, forward=1000, batch_size=32)
    d = decide_precision(f, many_steps, ("prefix", "trained"), "cpu")
    assert d.choice == {"prefix": BF16, "trained": BF16}
    many_passes = Work(prefix=1000, train=1000, forward=50_000, batch_size=32)
    d = decide_precision(f, many_passes, ("prefix", "trained"), "cpu")
    assert d.choice == {"prefix": BF16, "trained": F32}
    assert d.build_policy == BF16  # the model is built under the prefix's policy
    assert "frozen prefix mixed_bfloat16" in d.line() and "trained part float32" in d.line()


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
    d, calls = choose(tmp_path, cpu=cpu, **kw)
    assert calls == [] and d.choice == {"prefix": F32, "trained": F32} and d.source == "skipped"
    rec = d.to_dict()
    assert reason in rec["reason"] and rec["figures"] == {}
    assert not (tmp_path / "precision").exists()


def test_the_trained_part_trains_in_float32_under_auto(tmp_path):
    """However fast bfloat16 trains here (the injected figures: 1.5x), auto keeps training
    in float32 and says why; only the frozen prefix is measured."""
    from tlexp.model._precision import TRAINED_STAYS_F32

    d, calls = choose(tmp_path)
    assert calls == [["prefix"]] and d.choice == {"prefix": BF16, "trained": F32}
    assert d.reasons["trained"] == TRAINED_STAYS_F32 and "mixed_bfloat16 asks for it" in d.to_dict()["reason"]


def test_too_little_work_to_pay_for_measuring(tmp_path):
    tiny = Work(prefix=24, train=12, forward=30, batch_size=8)
    d, calls = choose(tmp_path, work=tiny)
    assert calls == [] and d.choice == {"prefix": F32, "trained": F32}
    assert "too little work to measure" in d.reasons["prefix"]
    # AVX512-BF16 can at most halve a step; with AMX the bound is the whole run's work.
    edge = Work(prefix=140, train=0, forward=0, batch_size=8)  # half of 140 prefix images < 9*8 = 72 measured
    assert choose(tmp_path, work=edge)[1] == []
    assert choose(tmp_path, work=edge, cpu=CpuInfo("Xeon", ("amx_bf16",), True, 2))[1] == [["prefix"]]


def test_kept_figures_are_reused_for_the_same_model_and_machine(tmp_path):
    first, calls = choose(tmp_path)
    assert first.source == "measured" and calls == [["prefix"]]
    assert len(list((tmp_path / "precision").glob("*.json"))) == 1
    again, calls = choose(tmp_path)
    assert again.source == "reused" and calls == [] and again.choice == first.choice
    assert again.reasons == first.reasons  # the same figures, the same words
    # Anything that changes the timing is a new key: measured again, kept beside.
    four_threads = CpuInfo("Test EPYC", ("avx512_bf16",), True, 4, AVX512.all_flags)
    for change in ({"key": {"backbone": "vgg16", "batch_size": 64}}, {"cpu": four_threads}):
        _, calls = choose(tmp_path, **change)
        assert calls == [["prefix"]]
    assert len(list((tmp_path / "precision").glob("*.json"))) == 3


def test_a_slow_float32_side_already_kept_is_not_measured_again(tmp_path):
    """A part timed in float32 only (too little work for bfloat16 then) is judged from those
    figures by the next run; a larger run measures its bfloat16 side."""
    from tlexp.model._precision import figures_key

    choose(tmp_path, work=Work(prefix=10_000, train=10_000, forward=1000, batch_size=32))  # makes the key's file
    path = next((tmp_path / "precision").glob("*.json"))
    data = json.loads(path.read_text())
    data["figures"] = {"prefix": {"forward": {F32: 0.001}}}
    data["cost_s"] = {"prefix": 20.0}  # timing it cost 20 s; this run's prefix takes 1 s in all
    path.write_text(json.dumps(data))
    assert FigureStore(tmp_path / "precision").load(path.stem).cost_s == {"prefix": 20.0}
    small = Work(prefix=1000, train=1000, forward=400, batch_size=32)
    d, calls = choose(tmp_path, work=small)
    assert calls == [] and d.choice == {"prefix": F32, "trained": F32}
    assert "timing it would take about 20 s" in d.reasons["prefix"]
    _, calls = choose(tmp_path, work=Work(prefix=100_000, train=1000, forward=400, batch_size=32))
    assert calls == [["prefix"]]
    assert path.stem == figures_key(**data["key"])


def test_a_training_step_is_not_traced_when_its_forward_pass_shows_it_cannot_pay(monkeypatch):
    """The trained part's forward pass is traced and timed first; where even 3x its time per
    image cannot repay three more traces like it, the training step is never traced."""
    from types import SimpleNamespace

    from tlexp.model import _precisionprobe as probe

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(probe, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    ran = []

    def step(kind: str, trace_s: float, call_s: float):
        def run():
            clock.now += call_s if kind in ran else trace_s
            ran.append(kind)

        return run

    def made():
        ran.clear()  # forward: a 10 s trace, then 32 ms a batch of 32 (1 ms an image)
        return {("trained", "forward"): step("forward", 10.0, 0.032), ("trained", "train"): step("train", 30.0, 0.1)}

    first = {}
    small = Work(prefix=0, train=2000, forward=1000, batch_size=32)  # ~7 s of float32 at 3 ms a training image
    why = probe._float32_side(made(), first, small, 2.0)
    assert ran == ["forward", "forward"] and "estimated from its forward pass" in why
    large = Work(prefix=0, train=200_000, forward=10_000, batch_size=32)
    assert probe._float32_side(made(), first, large, 2.0) is None
    assert ran == ["forward", "forward", "train", "train"] and first[("trained", "train")] == pytest.approx(0.1)


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
    d = decide_precision(figures(prefix=2.0, train=0.9), BIG, ("prefix", "trained"), "cpu")
    new = AcceleratorInfo.model_validate({**old, "precision": BF16, "precision_decision": d.to_dict()})
    assert new.precision_decision.choice == {"prefix": BF16, "trained": F32}
    assert new.precision_decision.figures["trained"]["forward_images"] == 12_000


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
    """A real tiny run: on whatever CPU, auto records a decision (float32 here: too little work);
    with figures injected, the prefix runs and is cached in bfloat16 and the trained part in
    float32, as recorded."""
    from tlexp.api import run
    from tlexp.model import _precisionprobe as probe
    from tlexp.results import load_record

    plain = load_record(run(tiny_config(tmp_path, flat_dataset, "name=plain")))
    d = plain.accelerator.precision_decision
    assert plain.accelerator.precision == "float32" and d is not None and d.choice["trained"] == F32
    assert d.source == "skipped" and d.reason

    def measure(make_model, parts, work, cap, compile_args):
        whole, plan = make_model()  # the run's own model, frozen as the run's
        found = figures(prefix=2.0, train=0.8)
        return Kept({p: found[p] for p in parts}, plan.layers_frozen, {p: 0.0 for p in parts}), {}

    monkeypatch.setattr(probe, "cpu_info", lambda: AVX512)
    monkeypatch.setattr(probe, "can_pay", lambda *a: None)
    monkeypatch.setattr(probe, "measure_precision", measure)
    rec = load_record(run(tiny_config(tmp_path, flat_dataset, "name=split", "train.prefix_cache.enabled=true")))
    d = rec.accelerator.precision_decision
    assert d.source == "measured" and d.choice == {"prefix": BF16, "trained": F32}
    assert rec.accelerator.precision == BF16 and d.figures["prefix"]["speedup"] == 2.0
    assert rec.prefix_cache.used and rec.prefix_cache.dtype == "bfloat16"
    log = Path(rec.run.dir, "run.log").read_text()
    assert "precision mixed_bfloat16 (frozen prefix), float32 (trained part)" in log
    assert "model: precision auto on Test EPYC" in log
    config = json.loads(zipfile.ZipFile(Path(rec.run.dir, "model.keras")).read("config.json"))
    policies = {
        layer["config"]["name"]: layer["config"]["dtype"]["config"]["name"]
        for layer in _layers(config)
        if isinstance(layer["config"].get("dtype"), dict)  # an input layer's is a plain name
    }
    assert policies["block1_conv1"] == BF16 and policies["dense_1"] == F32 and policies["logits"] == F32


def _layers(config: dict):
    """Every layer config in a saved model's config, nested models included."""
    for layer in config["config"]["layers"]:
        yield layer
        if "layers" in layer.get("config", {}):
            yield from _layers(layer)
