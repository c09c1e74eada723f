"""The depth probe of one config, read top-down as its phases.

:func:`run_probe`: check the inputs (backend, weights, classifiers) -> find, check, split
and decode the data as a run does (same split, same decoded-image cache) -> build the
backbone with the config's weights, frozen, and find its stages -> one pass of every
image through it, keeping the pooled activations at each stage boundary -> fit and score
each classifier at each depth -> write the folder, ``probe.json`` last.

The probe reads images, never the prefix activation cache: the cache holds the frontier
at one cut, where a probe needs every stage's, pooled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tlexp import files
from tlexp.config import Config
from tlexp.data import SPLITS, make_decoder, prepare_data
from tlexp.errors import DataError, UserError
from tlexp.logs import PhaseClock, RunLog, show_progress
from tlexp.probes._features import DepthFeatures, depth_features, pooled_model
from tlexp.probes._fit import score
from tlexp.probes._outputs import VERSION, depth_entry, plot, write_csv
from tlexp.runfolder import PROBE_CSV, PROBE_FILE, PROBE_LOG, PROBE_PLOT

log = logging.getLogger("tlexp")


def default_probe_dir(cfg: Config) -> Path:
    """``<output.dir>/<run name>_probe``, or ``..._probe2``, ... where that exists (not created)."""
    from tlexp.runfolder import safe_name

    base = Path(cfg.output.dir) / f"{safe_name(cfg.run_name())}_probe"
    for i in range(1, 10_000):
        candidate = base.with_name(f"{base.name}{i}") if i > 1 else base
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"Could not find a free probe folder name for {base}")


def run_probe(cfg: Config, out_dir: str | os.PathLike) -> Path:
    """Probe the frozen backbone of ``cfg`` at every stage and write the probe folder.

    Args:
        cfg: a validated config without a sweep; its data, ``model.backbone``,
            ``model.weights``, ``data.image_size``, ``seed``, ``forest`` and ``classifiers``
            are what the probe uses (the freezing and training keys are not).
        out_dir: the folder to write; it must not exist. It appears whole (built beside
            it and renamed), with ``probe.json`` written last.

    Returns:
        ``out_dir``.

    Raises:
        UserError: a sweep config, an existing ``out_dir``, no classifier to fit, missing
            weights, unusable data.
    """
    if cfg.grids():
        raise UserError(
            f"This config defines a sweep over {', '.join(cfg.swept_keys())}; probe its base config with "
            "sweep={}, or set probe.enabled=true and run 'tlexp sweep' to probe each backbone of the grid."
        )
    out = Path(out_dir)
    if out.exists():
        raise UserError(
            f"'{out}' exists; a probe never writes into an existing folder. Remove it, or give another folder (--out)."
        )
    clock = PhaseClock()
    with RunLog() as run_log:
        log.info(
            "probe: %s (%s weights, %d px) into %s", cfg.model.backbone, cfg.model.weights, cfg.data.image_size, out
        )
        with clock("weights"):
            weights_path, classifiers = _inputs(cfg)
        with clock("data"):
            ds, check = prepare_data(cfg)
            decoder = make_decoder(cfg, ds, check)
        with clock("build"):
            backbone, stages = _backbone(cfg, weights_path)
        with clock("features"):
            feats = _features(cfg, ds, decoder, backbone, stages)
        split = np.asarray(ds.split)[feats.indices]
        with clock("fit"):
            depths = _fit(feats, split, stages, backbone.count_params(), classifiers, len(ds.class_names))
        seconds = clock.seconds()
        record = {
            "version": VERSION,
            "backbone": cfg.model.backbone,
            "weights": cfg.model.weights,
            "image_size": cfg.data.image_size,
            "seed": cfg.seed,
            "n": {s: int(np.sum(split == s)) for s in SPLITS},
            "skipped": len(ds.paths) - len(feats.indices),
            "classes": list(ds.class_names),
            "source": "images",
            "seconds": {"features": seconds["features"], "fit": seconds["fit"], "total": seconds["total"]},
            "depths": depths,
        }
        with files.build_folder(out, PROBE_FILE) as tmp:
            write_csv(tmp / PROBE_CSV, depths)
            plot(tmp / PROBE_PLOT, record)
            run_log.write_to(tmp / PROBE_LOG)
            files.write_json(tmp / PROBE_FILE, record)
        log.info("probe: done in %.1fs; results in %s", seconds["total"], out)
    return out


def _inputs(cfg: Config) -> tuple[Path | None, dict[str, Any]]:
    """The weights file and the unfitted classifiers: problems fail here, before any data work."""
    from tlexp.classifiers import build_classifiers
    from tlexp.model import check_backend, resolve_weights

    check_backend()
    weights_path = resolve_weights(cfg.model.backbone, cfg.model.weights, cfg.model.download)
    classifiers = build_classifiers(cfg)
    if not classifiers:
        raise UserError(
            "The probe fits the forest and the classifiers section on each depth's features, and this config "
            "has neither (forest.enabled is false, classifiers is empty). Enable one, e.g. forest.enabled=true."
        )
    return weights_path, classifiers


def _backbone(cfg: Config, weights_path: Path | None):
    """The backbone with its weights, frozen, and its stages."""
    from tlexp.model import backbone_stages, build_backbone, import_backend

    import_backend()
    import keras

    keras.utils.set_random_seed(cfg.seed)
    backbone = build_backbone(cfg.model.backbone, cfg.data.image_size, weights_path)
    backbone.trainable = False
    stages = backbone_stages(backbone)
    log.info(
        "probe: %s has %d stages: %s",
        cfg.model.backbone,
        len(stages),
        ", ".join(f"{s.label} (..{s.last_layer})" for s in stages),
    )
    return backbone, stages


def _features(cfg: Config, ds, decoder, backbone, stages) -> DepthFeatures:
    """One pass over every image: the pooled activations at each stage boundary."""
    from tlexp.model import preprocess_fn
    from tlexp.pipeline import BatchPlan, ImageSource, stream

    source = ImageSource(decoder, preprocess_fn(cfg.model.backbone), ds.labels)
    plan = BatchPlan.for_classes(len(ds.class_names), cfg.train.batch_size, cfg.seed)
    batches = stream(source, np.arange(len(ds.paths)), plan)
    feats = depth_features(pooled_model(backbone, stages), batches, "probe: features" if show_progress() else None)
    if source.failed:
        log.warning("data: %d file(s) could not be decoded and were left out", len(source.failed))
    empty = [s for s in SPLITS if not np.any(np.asarray(ds.split)[feats.indices] == s)]
    if empty:
        raise DataError(f"No decodable image left in split(s) {empty}; the probe needs images in every split.")
    log.info(
        "probe: pooled activations of %d images at %d depths (%s features)",
        len(feats.indices),
        len(stages),
        ", ".join(str(f.shape[1]) for f in feats.features),
    )
    return feats


def _fit(feats: DepthFeatures, split, stages, total: int, classifiers: dict[str, Any], n_classes: int) -> list[dict]:
    """Each classifier on each depth: the ``depths`` of ``probe.json``."""
    depths, below = [], 0
    for stage, x in zip(stages, feats.features, strict=True):
        below += stage.params
        scores = {name: score(est, x, feats.labels, split, n_classes) for name, est in classifiers.items()}
        depths.append(depth_entry(stage, below, total, x.shape[1], scores))
        log.info(
            "probe: %d %s (%.0f %% of the parameters below, %d features): %s",
            stage.index,
            stage.label,
            100 * below / total,
            x.shape[1],
            ", ".join(
                f"{n} test {s.test_accuracy:.3f} [{s.test_low:.3f}, {s.test_high:.3f}]" for n, s in scores.items()
            ),
        )
    return depths
