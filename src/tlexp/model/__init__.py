"""Model: Keras backbones, freezing, the head, training and the backend. Keras is imported on first use.

Functions here take what they need (a backbone name, a share, a policy), not the
application config. The modules are private; this package's names are the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlexp._lazy import lazy_exports

# Each public name and the private module that holds it, imported on first use (tlexp._lazy).
_EXPORTS = {
    "Accel": "_accel",
    "BF16": "_precision",
    "CpuInfo": "_precision",
    "F32": "_precision",
    "FreezePlan": "_freeze",
    "HeadSpec": "_head",
    "InferenceMode": "_layers",
    "Network": "_head",
    "PrecisionDecision": "_precision",
    "PrecisionProbe": "_precisionprobe",
    "Predictions": "_training",
    "REGISTRY": "_backbones",
    "Stage": "_stages",
    "TransferModel": "_head",
    "PieceTimer": "_precisionprobe",
    "accel_scope": "_accel",
    "apply_freeze": "_freeze",
    "apply_precision": "_precisionprobe",
    "backbone_stages": "_stages",
    "backend_name": "_backend",
    "backend_version": "_backend",
    "batch_multiple": "_accel",
    "build_backbone": "_backbones",
    "build_model": "_head",
    "check_backend": "_backend",
    "global_policy": "_precisionprobe",
    "choose_prefix": "_freeze",
    "compile_model": "_training",
    "constructors": "_discover",
    "cpu_info": "_precision",
    "data_parallel": "_accel",
    "decide_precision": "_precision",
    "describe": "_discover",
    "describe_environment": "_backend",
    "find_stage": "_stages",
    "fit": "_training",
    "format_weights_status": "_weights",
    "frontier": "_segments",
    "frontier_spec": "_segments",
    "imagenet_file": "_discover",
    "import_backend": "_backend",
    "import_tensorflow": "_backend",
    "import_weights": "_weights",
    "inference_fn": "_segments",
    "keras_cache_dir": "_weights",
    "numerics_fingerprint": "_backend",
    "padding_rows": "_accel",
    "param_counts": "_training",
    "plain_model": "_layers",
    "plan_freeze": "_freeze",
    "predict_with_features": "_training",
    "preprocess_fn": "_backbones",
    "randomness": "_randomness",
    "require_tensorflow": "_backend",
    "resolve_accel": "_accel",
    "resolve_weights": "_weights",
    "segment": "_segments",
    "set_determinism": "_accel",
    "stage_depths": "_rates",
    "suffix_model": "_head",
    "weights_status": "_weights",
}
__all__ = [
    "Accel",
    "BF16",
    "CpuInfo",
    "F32",
    "FreezePlan",
    "HeadSpec",
    "InferenceMode",
    "Network",
    "PrecisionDecision",
    "PrecisionProbe",
    "Predictions",
    "REGISTRY",
    "Stage",
    "TransferModel",
    "PieceTimer",
    "accel_scope",
    "apply_freeze",
    "apply_precision",
    "backbone_stages",
    "backend_name",
    "backend_version",
    "batch_multiple",
    "build_backbone",
    "build_model",
    "check_backend",
    "global_policy",
    "choose_prefix",
    "compile_model",
    "constructors",
    "cpu_info",
    "data_parallel",
    "decide_precision",
    "describe",
    "describe_environment",
    "find_stage",
    "fit",
    "format_weights_status",
    "frontier",
    "frontier_spec",
    "imagenet_file",
    "import_backend",
    "import_tensorflow",
    "import_weights",
    "inference_fn",
    "keras_cache_dir",
    "numerics_fingerprint",
    "padding_rows",
    "param_counts",
    "plain_model",
    "plan_freeze",
    "predict_with_features",
    "preprocess_fn",
    "randomness",
    "require_tensorflow",
    "resolve_accel",
    "resolve_weights",
    "segment",
    "set_determinism",
    "stage_depths",
    "suffix_model",
    "weights_status",
]

if TYPE_CHECKING:
    from tlexp.model._accel import (
        Accel,
        accel_scope,
        batch_multiple,
        data_parallel,
        padding_rows,
        resolve_accel,
        set_determinism,
    )
    from tlexp.model._backbones import REGISTRY, build_backbone, preprocess_fn
    from tlexp.model._backend import (
        backend_name,
        backend_version,
        check_backend,
        describe_environment,
        import_backend,
        import_tensorflow,
        numerics_fingerprint,
        require_tensorflow,
    )
    from tlexp.model._discover import constructors, describe, imagenet_file
    from tlexp.model._freeze import FreezePlan, apply_freeze, choose_prefix, plan_freeze
    from tlexp.model._head import HeadSpec, Network, TransferModel, build_model, suffix_model
    from tlexp.model._layers import InferenceMode, plain_model
    from tlexp.model._precision import BF16, F32, CpuInfo, PrecisionDecision, cpu_info, decide_precision
    from tlexp.model._precisionprobe import PieceTimer, PrecisionProbe, apply_precision, global_policy
    from tlexp.model._randomness import randomness
    from tlexp.model._rates import stage_depths
    from tlexp.model._segments import frontier, frontier_spec, inference_fn, segment
    from tlexp.model._stages import Stage, backbone_stages, find_stage
    from tlexp.model._training import Predictions, compile_model, fit, param_counts, predict_with_features
    from tlexp.model._weights import (
        format_weights_status,
        import_weights,
        keras_cache_dir,
        resolve_weights,
        weights_status,
    )


__getattr__ = lazy_exports(__name__, _EXPORTS)
