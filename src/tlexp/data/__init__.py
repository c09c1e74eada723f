"""Data: a folder of images -> checked files, near-duplicate groups, a seeded split, decoded pixels. No TensorFlow.

The data check (every file once: good, converted or rejected; content hashes, perceptual
hashes, thumbnails), near-duplicate groups, the group-aware split, the one decoder
everything uses and the decoded-image cache. The modules are private; this package's
names are the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlexp._lazy import lazy_exports

# Each public name and the private module that holds it, imported on first use (tlexp._lazy).
_EXPORTS = {
    "CUSTOM": "_check",
    "CachedDecoder": "_imagecache",
    "CheckResult": "_check",
    "Dataset": "_dataset",
    "Decoder": "_decode",
    "GAIN": "_neardup",
    "HASH_BITS": "_neardup",
    "IMAGE_EXTENSIONS": "_decode",
    "ImageCache": "_imagecache",
    "KAGGLE": "_check",
    "LARGE_GROUP": "_check",
    "NEAR_DUPLICATE_THRESHOLD": "_check",
    "NO_LABEL": "_check",
    "PETIMAGES": "_check",
    "SPLITS": "_dataset",
    "assign_splits": "_dataset",
    "cache_dir": "_prepare",
    "cache_key": "_imagecache",
    "check_dataset": "_check",
    "data_summary": "_prepare",
    "decoder_versions": "_imagecache",
    "detect_variant": "_check",
    "discover": "_dataset",
    "ensure_demo_dataset": "_demo",
    "ensure_image_cache": "_imagecache",
    "format_summary": "_checkreport",
    "hamming_pairs": "_neardup",
    "image_key": "_imagecache",
    "is_image_name": "_decode",
    "load_image": "_decode",
    "make_decoder": "_prepare",
    "near_duplicate_groups": "_neardup",
    "perceptual_hash": "_inspect",
    "pixel_difference": "_neardup",
    "prepare_data": "_prepare",
    "representative_groups": "_neardup",
    "split_groups": "_prepare",
    "split_shortfall": "_prepare",
    "usable_dataset": "_prepare",
    "write_check": "_checkreport",
    "write_run_check": "_prepare",
}
__all__ = [
    "CUSTOM",
    "CachedDecoder",
    "CheckResult",
    "Dataset",
    "Decoder",
    "GAIN",
    "HASH_BITS",
    "IMAGE_EXTENSIONS",
    "ImageCache",
    "KAGGLE",
    "LARGE_GROUP",
    "NEAR_DUPLICATE_THRESHOLD",
    "NO_LABEL",
    "PETIMAGES",
    "SPLITS",
    "assign_splits",
    "cache_dir",
    "cache_key",
    "check_dataset",
    "data_summary",
    "decoder_versions",
    "detect_variant",
    "discover",
    "ensure_demo_dataset",
    "ensure_image_cache",
    "format_summary",
    "hamming_pairs",
    "image_key",
    "is_image_name",
    "load_image",
    "make_decoder",
    "near_duplicate_groups",
    "perceptual_hash",
    "pixel_difference",
    "prepare_data",
    "representative_groups",
    "split_groups",
    "split_shortfall",
    "usable_dataset",
    "write_check",
    "write_run_check",
]

if TYPE_CHECKING:
    from tlexp.data._check import (
        CUSTOM,
        KAGGLE,
        LARGE_GROUP,
        NEAR_DUPLICATE_THRESHOLD,
        NO_LABEL,
        PETIMAGES,
        CheckResult,
        check_dataset,
        detect_variant,
    )
    from tlexp.data._checkreport import format_summary, write_check
    from tlexp.data._dataset import SPLITS, Dataset, assign_splits, discover
    from tlexp.data._decode import IMAGE_EXTENSIONS, Decoder, is_image_name, load_image
    from tlexp.data._demo import ensure_demo_dataset
    from tlexp.data._imagecache import (
        CachedDecoder,
        ImageCache,
        cache_key,
        decoder_versions,
        ensure_image_cache,
        image_key,
    )
    from tlexp.data._inspect import perceptual_hash
    from tlexp.data._neardup import (
        GAIN,
        HASH_BITS,
        hamming_pairs,
        near_duplicate_groups,
        pixel_difference,
        representative_groups,
    )
    from tlexp.data._prepare import (
        cache_dir,
        data_summary,
        make_decoder,
        prepare_data,
        split_groups,
        split_shortfall,
        usable_dataset,
        write_run_check,
    )


__getattr__ = lazy_exports(__name__, _EXPORTS)
