"""Weights: ImageNet cache checks (offline), local weights files."""

from __future__ import annotations

import numpy as np
import pytest

from tlexp.errors import WeightsError
from tlexp.model import REGISTRY, build_backbone, keras_cache_dir, resolve_weights


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    return tmp_path / "kh"


def test_cache_dir_honours_keras_home(keras_home):
    assert keras_cache_dir() == keras_home / "models"


def test_missing_imagenet_weights_offline_names_file_and_folder(keras_home):
    with pytest.raises(WeightsError) as info:
        resolve_weights("resnet50", "imagenet", download=False)
    msg = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(keras_home / "models") in msg
    assert REGISTRY["resnet50"].weights_url in msg


def test_corrupt_cached_weights_are_refused(keras_home):
    target = keras_home / "models" / REGISTRY["vgg16"].weights_file
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated download")
    with pytest.raises(WeightsError, match=r"corrupt or not the no-top file \(MD5 [0-9a-f]{32}, expected 6d6bbae1"):
        resolve_weights("vgg16", "imagenet", download=True)


def test_none_and_path(tmp_path):
    assert resolve_weights("vgg16", "none", download=False) is None
    assert resolve_weights("vgg16", str(tmp_path / "w.h5"), download=False) == tmp_path / "w.h5"


@pytest.mark.slow
def test_local_weights_file_is_loaded(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    source = build_backbone("vgg16", 32)
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_backbone("vgg16", 32, path)
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_weights_of_another_backbone_are_a_clear_error(tmp_path):
    path = tmp_path / "vgg.weights.h5"
    build_backbone("vgg16", 32).save_weights(path)
    with pytest.raises(
        WeightsError,
        match=r"Could not load weights .* into ResNet50 without its top.*"
        r"resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ):
        build_backbone("resnet50", 32, path)


@pytest.mark.slow
def test_legacy_h5_file_like_keras_imagenet_files_is_loaded(tmp_path):
    """Keras' ImageNet files are legacy HDF5 (topological order); the same loader reads them."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source = build_backbone("resnet50", 32)
    path = tmp_path / REGISTRY["resnet50"].weights_file
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    loaded = build_backbone("resnet50", 32, path)
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
