"""The library API: a multi-class run with a BatchNorm backbone, and the decode-skipping pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlexp.config import load_config
from tlexp.results import load_record

pytestmark = pytest.mark.slow


def test_three_classes_resnet_batchnorm_train_avg_pool(tmp_path, folder_dataset):
    from tlexp.experiment import run_experiment

    (folder_dataset / "Dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    cfg = load_config(
        None,
        [
            f"data.root={folder_dataset}",
            "data.image_size=32",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "model.backbone=resnet50",
            "model.weights=none",
            "model.freeze=0.7",
            "model.batchnorm=train",
            "model.head.pooling=avg",
            "model.head.dense=[8]",
            "model.head.dropout=0.2",
            "train.epochs=1",
            "train.batch_size=4",
            "train.optimizer=sgd",
            "forest.n_estimators=5",
            "forest.max_depth=3",
            f"output.dir={tmp_path / 'out'}",
            "name=multi",
            "tracking.tensorboard=true",
            "output.save_model=false",
        ],
    )
    run_dir = run_experiment(cfg)
    m = load_record(run_dir)
    assert run_dir.name == "multi"
    assert m.data.class_names == ["Bird", "Cat", "Dog"]
    assert m.data.skipped == 0 and m.data.check.rejected == 1  # broken.jpg, caught by the check
    for clf in ("head", "forest"):
        t = m.classifiers[clf].test
        assert t.average == "macro" and np.array(t.confusion).shape == (3, 3)
        assert np.array(t.confusion).sum() == t.n == m.data.used["test"]
    assert m.classifiers["forest"].n_features == 8
    assert not (run_dir / "roc.png").exists()  # ROC plots are for two-class tasks
    assert (run_dir / "confusion.png").exists()
    assert m.freeze.batchnorm == "train"
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert {e.parent.name for e in events} == {"train", "validation"}
    assert not (run_dir / "model.keras").exists() and not list(run_dir.glob("*.joblib"))  # save_model=false


def test_pipeline_skips_undecodable_files_and_keeps_indices(tmp_path, flat_dataset):
    import keras

    from tlexp.data import Decoder, discover
    from tlexp.pipeline import BatchPlan, ImageSource, stream

    (flat_dataset / "cat.50.jpg").write_bytes(b"garbage")
    ds = discover(flat_dataset)
    decoder = Decoder(ds.root, ds.paths, 32)
    source = ImageSource(decoder, keras.applications.vgg16.preprocess_input, ds.labels)
    plan = BatchPlan(5, seed=0, shuffle=True, label_dtype="float32")
    seen, labels = [], []
    for x, y, i in stream(source, np.arange(len(ds.paths)), plan):
        assert x.shape[1:] == (32, 32, 3)
        seen += np.asarray(i).tolist()
        labels += np.asarray(y).tolist()
    bad = ds.paths.index("cat.50.jpg")
    assert sorted(seen) == [k for k in range(len(ds.paths)) if k != bad]
    assert labels == [float(ds.labels[k]) for k in seen]  # labels travel with their file
    assert list(decoder.failed) == [bad]
    # shuffling is seeded: a second pass with the same seed gives the same first-epoch order
    again = [k for _, _, i in stream(source, np.arange(len(ds.paths)), plan) for k in np.asarray(i).tolist()]
    assert again == seen


def test_predict_pass_returns_two_column_proba_and_penultimate(tmp_path, flat_dataset):
    from tlexp.experiment._build import build_whole
    from tlexp.model import build_backbone, predict_with_features

    # Dropout in the head: a pass in training mode would give other numbers than inference.
    cfg = load_config(
        None, [f"data.root={flat_dataset}", "data.image_size=32", "model.head.dense=[6, 4]", "model.head.dropout=0.5"]
    )
    network = build_whole(cfg, build_backbone("vgg16", 32), 2)
    model = network.model
    x = np.random.default_rng(0).uniform(0, 255, (7, 32, 32, 3)).astype("float32")
    import tensorflow as tf

    labels = np.arange(7) % 2
    stream = tf.data.Dataset.from_tensor_slices((x, labels.astype("float32"), np.arange(7))).batch(3)
    out = predict_with_features(network, stream, 2)
    assert out.proba.shape == (7, 2) and out.features.shape == (7, 4)
    np.testing.assert_allclose(out.proba.sum(1), 1.0, rtol=1e-6)
    inference = np.asarray(model(x, training=False)).ravel()
    assert not np.allclose(np.asarray(model(x, training=True)).ravel(), inference)  # the dropout is real
    np.testing.assert_allclose(out.proba[:, 1], inference, rtol=1e-5)  # and the pass ran in inference mode
    # the features are the input of the output layer: applying it reproduces the prediction
    w, b = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(out.logits, out.features @ w + b, rtol=1e-4, atol=1e-6)
    manual = 1 / (1 + np.exp(-(out.features @ w + b)))
    np.testing.assert_allclose(manual.ravel(), out.proba[:, 1], rtol=1e-4)
    assert out.indices.tolist() == list(range(7))
    assert out.labels.tolist() == labels.tolist() and out.labels.dtype == np.int64  # rows keep their labels


@pytest.mark.parametrize("policy", ["inference", "frozen", "train"])
def test_batchnorm_policies_do_what_the_config_says(tmp_path, policy):
    """'inference'/'frozen': BN never uses batch statistics, even inside fit(); 'train' does.
    Only 'train' moves the moving averages; only 'frozen' keeps BN scale/offset fixed."""
    import keras

    from tlexp.model import HeadSpec, apply_freeze, build_backbone, build_model, compile_model, plan_freeze

    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet50", 32)
    apply_freeze(backbone, plan_freeze(backbone, 0.9, policy))
    # The model API on its own, without a config: what a notebook would call.
    model = build_model(backbone, 2, image_size=32, head=HeadSpec(pooling="avg"), batchnorm=policy).trainer
    compile_model(model, 2, learning_rate=0.01)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    differs = not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))
    assert differs == (policy == "train")

    last_bn = backbone.get_layer("conv5_block3_3_bn")  # in the trainable part
    mean_before, gamma_before = np.asarray(last_bn.moving_mean).copy(), np.asarray(last_bn.gamma).copy()
    model.fit(x, np.ones(8, "float32"), epochs=1, batch_size=8, verbose=0)
    assert (not np.allclose(mean_before, np.asarray(last_bn.moving_mean))) == (policy == "train")
    assert (not np.allclose(gamma_before, np.asarray(last_bn.gamma))) == (policy != "frozen")


def test_precision_policy_output_layer_and_restore(tmp_path):
    """Mixed precision computes in bfloat16, keeps the output layer (and so the loss) in
    float32, and never leaks the global policy into the next run."""
    import keras

    from tlexp.experiment._build import build_whole
    from tlexp.model import _accel as accel
    from tlexp.model import build_backbone, compile_model

    cfg = load_config(
        None,
        [
            f"data.root={tmp_path}",
            "data.image_size=32",
            "train.precision=mixed_bfloat16",
            "train.jit_compile=false",
            "model.head.dense=[4]",
        ],
    )
    auto = accel.resolve_accel("auto", "auto", "auto", False, 32)
    assert (auto.precision, auto.distribute, auto.gpus) == ("float32", "none", [])  # this CPU-only machine
    t = cfg.train
    settings = accel.resolve_accel(t.precision, t.distribute, t.jit_compile, t.deterministic, t.batch_size)
    with accel.accel_scope(settings):
        network = build_whole(cfg, build_backbone("vgg16", 32), 2)
        compile_model(network.trainer, 2, optimizer=t.optimizer, learning_rate=t.learning_rate, jit_compile=False)
    model = network.model
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer("dense_1").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"  # the loss is computed from it
    assert model.get_layer("output").compute_dtype == "float32"
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert model(x).dtype == "float32" and network.trainer(x).dtype == "float32"
    history = network.trainer.fit(x, np.array([0, 1, 0, 1], "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# tlexp runs under MirroredStrategy over 1 and over 2 logical CPUs: this machine has no
# GPUs, so the CPU is split into two devices before TensorFlow starts (hence a fresh
# process), and each run's strategy spans the first N of them. One process for both runs:
# a second one would only import TensorFlow again.
_MIRRORED_RUN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
Mirrored = tf.distribute.MirroredStrategy
from tlexp.cli import main
for n in (1, 2):
    made = []
    tf.distribute.MirroredStrategy = lambda: made.append(Mirrored([f"/cpu:{i}" for i in range(n)])) or made[-1]
    code = main(["--quiet", "run", *sys.argv[2:], f"output.dir={sys.argv[1]}/x{n}"])
    print(n, "replicas", [s.num_replicas_in_sync for s in made], flush=True)
    if code:
        sys.exit(code)
"""


def test_mirrored_strategy_over_two_devices_matches_one(tmp_path, flat_dataset):
    """train.distribute=mirrored: the global batch is split over the replicas and their
    gradients summed, so two replicas train exactly what one does (the distributed
    dataset's order is the same for any replica count), through every stage of a schedule."""
    import subprocess
    import sys

    (tmp_path / "c.yaml").write_text("{}\n")
    args = [
        f"data.root={flat_dataset}",
        "data.image_size=32",
        "model.weights=none",
        "model.head.dense=[8]",
        "train.epochs=1",
        "train.schedule=lp-ft",  # the second stage recompiles: in the model's own strategy
        "train.probe_epochs=1",
        "train.batch_size=8",
        "train.distribute=mirrored",
        "forest.n_estimators=5",
        "output.save_model=false",
        "name=m",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_RUN, str(tmp_path), str(tmp_path / "c.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 replicas [1]" in proc.stdout and "2 replicas [2]" in proc.stdout  # one strategy each, over n devices
    results = {n: load_record(tmp_path / f"x{n}" / "m") for n in (1, 2)}
    one, two = results[1], results[2]
    assert two.accelerator.distribute == "mirrored"
    assert two.prefix_cache.used is False and "MirroredStrategy" in two.prefix_cache.reason
    assert two.history.epochs == 2 and two.history.stage == ["probe", "fine-tune"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(getattr(two.history, key), getattr(one.history, key), rtol=1e-5, err_msg=key)
    for split in ("val", "test"):
        assert two.head.split(split).log_loss == pytest.approx(one.head.split(split).log_loss, rel=1e-5)
        assert two.classifiers["forest"].split(split).accuracy == one.classifiers["forest"].split(split).accuracy


def test_a_save_stopped_half_way_leaves_no_temp_folder(tmp_path, monkeypatch):
    """Keras stages a model's assets in tempfile.mkdtemp(); a save that is interrupted
    (Ctrl-C, SIGTERM) leaves neither that folder nor a partial model.keras behind."""
    import tempfile

    import keras

    from tlexp.experiment._phases import save_models

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    staged = []

    def interrupted_save(self, path, *args, **kwargs):
        staged.append(Path(tempfile.mkdtemp()))  # what Keras' saving does first
        (staged[-1] / "assets").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", interrupted_save)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        save_models(run_dir, model, {})
    assert staged and staged[0].parent.parent == run_dir  # staged inside the run folder, not in /tmp
    assert not staged[0].exists() and list(run_dir.iterdir()) == []  # and removed, with no partial model
    assert tempfile.gettempdir() != str(staged[0].parent)  # the process-wide temp folder is restored


def test_deterministic_runs_are_bit_identical(tmp_path, flat_dataset):
    """train.deterministic: two runs of one config and seed give exactly the same numbers."""
    from tlexp.experiment import run_experiment

    records = []
    for name in ("a", "b"):
        cfg = load_config(None, [
            f"data.root={flat_dataset}", "data.image_size=32", "model.weights=none", "model.head.dense=[8]",
            "model.head.dropout=0.3", "train.epochs=2", "train.batch_size=4", "train.deterministic=true",
            "train.prefix_cache.enabled=false", "forest.n_estimators=5", "output.save_model=false",
            f"output.dir={tmp_path / 'out'}", f"name={name}", f"data.cache_dir={tmp_path / 'cache'}",
        ])  # fmt: skip
        records.append(load_record(run_experiment(cfg)))
    a, b = records
    assert a.accelerator.deterministic is True
    assert a.history.loss == b.history.loss and a.history.val_accuracy == b.history.val_accuracy  # exact
    assert a.classifiers == b.classifiers  # every score of every classifier, exactly
    assert (tmp_path / "out" / "a" / "predictions.csv").read_text() == (
        tmp_path / "out" / "b" / "predictions.csv"
    ).read_text()
    from tensorflow.python.framework import config as tf_config

    assert tf_config.is_op_determinism_enabled()  # on for the runs that asked for it ...
    run_experiment(load_config(None, [
        f"data.root={flat_dataset}", "data.image_size=32", "model.weights=none", "model.head.dense=[8]",
        "train.epochs=1", "forest.enabled=false", "classifiers={}", "output.save_model=false",
        f"output.dir={tmp_path / 'out'}", "name=c", f"data.cache_dir={tmp_path / 'cache'}",
    ]))  # fmt: skip
    assert not tf_config.is_op_determinism_enabled()  # ... and off again for the next
