"""Near-duplicate groups: the same picture, not a similar one; groups that never chain."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tlexp.data import (
    HASH_BITS,
    LARGE_GROUP,
    NEAR_DUPLICATE_THRESHOLD,
    check_dataset,
    format_summary,
    hamming_pairs,
    near_duplicate_groups,
    pixel_difference,
    representative_groups,
)
from tlexp.data import _neardup as neardup
from tlexp.files import read_csv


def _shirt(gray: float, seed: int = 0, size: int = 64, pattern: float = 0.0) -> np.ndarray:
    """A flat garment on black, as in Fashion-MNIST: one silhouette, a given gray level, and
    (with ``pattern``) a print of that many gray levels; shape (size, size, 3)."""
    y, x = np.mgrid[0:size, 0:size] / size
    body = (np.abs(x - 0.5) < 0.22) & (y > 0.15) & (y < 0.9)
    sleeves = (np.abs(x - 0.5) < 0.42) & (y > 0.15) & (y < 0.35)
    img = gray * (body | sleeves).astype(np.float64)
    if pattern:
        img += pattern * np.random.default_rng(seed).normal(0, 1, (8, 8)).repeat(size // 8, 0).repeat(size // 8, 1)
        img *= body | sleeves
    return np.repeat(np.clip(img, 0, 255)[..., None], 3, axis=2).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def test_a_lighter_or_darker_shirt_of_the_same_cut_is_another_picture(tmp_path):
    """Equal perceptual hashes (the hash sees only signs of frequencies, so a gray level
    changes no bit) are not enough: a shirt at 60 % of another's gray level is a different
    shirt; the same shirt 15 % darker or brighter is one picture (the issue's recolouring)."""
    _save(tmp_path / "a" / "light.png", _shirt(220))
    _save(tmp_path / "a" / "dark.png", _shirt(130))
    _save(tmp_path / "a" / "light_darker.png", _shirt(220 * 0.85))
    _save(tmp_path / "b" / "other.png", _shirt(90, seed=3, pattern=40))
    res = check_dataset(tmp_path)
    hashes = {f.path: f.phash for f in res.usable()}
    assert hashes["a/light.png"] == hashes["a/dark.png"] == hashes["a/light_darker.png"]
    groups = [[f.path for f in g] for g in res.near_duplicates()]
    assert groups == [["a/light.png", "a/light_darker.png"]]
    match = res.near_components()
    assert match["a/dark.png"].representative == "a/dark.png"
    assert 0 < match["a/light_darker.png"].difference <= NEAR_DUPLICATE_THRESHOLD


def test_pixel_difference_matches_brightness_within_the_gain_only():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (3, 1024)).astype(np.float64)
    assert pixel_difference(a, a).tolist() == [0.0, 0.0, 0.0]
    assert pixel_difference(a, 1.2 * a) == pytest.approx([0, 0, 0], abs=1e-6)  # within GAIN = 1.25
    # 1.5x is past the gain: |1.25 a - 1.5 a| / |1.5 a| = 1/6 one way, |0.8 (1.5 a) - a| / |a| = 0.2 the other.
    assert pixel_difference(a, 1.5 * a) == pytest.approx([0.2] * 3, rel=1e-9)
    assert pixel_difference(a[:1], a[1:2])[0] > 0.3  # unrelated noise
    black = np.zeros((1, 1024))
    assert pixel_difference(black, black).tolist() == [0.0]
    assert pixel_difference(black, a[:1]).tolist() == [np.inf]  # nothing matches a black image but black


def test_groups_do_not_chain_through_similar_pictures(tmp_path):
    """11 pictures, each a small step from the last, ends far apart: union-find made them one
    group (every neighbour is close); around representatives no member is further than the
    threshold from its representative, so no group spans the chain."""
    rng = np.random.default_rng(1)
    base = rng.uniform(80, 180, (8, 8))
    # Each step: 6 % of the picture's norm, in a direction no brightness change can undo.
    step = rng.normal(0, 1, 64)
    step -= step @ base.ravel() / (base.ravel() @ base.ravel()) * base.ravel()
    step = step.reshape(8, 8) / np.linalg.norm(step) * 0.06 * np.linalg.norm(base)
    for k in range(11):
        img = np.clip(base + k * step, 0, 255).repeat(8, 0).repeat(8, 1)
        _save(tmp_path / "c" / f"{k:02d}.png", np.repeat(img[..., None], 3, axis=2).astype(np.uint8))
    _save(tmp_path / "d" / "x.png", _shirt(200))
    res = check_dataset(tmp_path)
    match = res.near_components()
    thumbs = {f.path: np.frombuffer(f.thumb, np.uint8) for f in res.usable()}

    def apart(a: str, b: str) -> float:
        return pixel_difference(thumbs[a][None], thumbs[b][None])[0]

    assert apart("c/00.png", "c/10.png") > 4 * NEAR_DUPLICATE_THRESHOLD  # the ends are different pictures
    # ... and every picture is a near-duplicate of the next:
    assert max(apart(f"c/{k:02d}.png", f"c/{k + 1:02d}.png") for k in range(10)) <= NEAR_DUPLICATE_THRESHOLD
    groups = res.near_duplicates()
    assert len(groups) >= 2 and not any({"c/00.png", "c/10.png"} <= {f.path for f in g} for g in groups)
    for g in groups:
        assert all(apart(g[0].path, f.path) <= NEAR_DUPLICATE_THRESHOLD for f in g)
        assert all(match[f.path].representative == g[0].path for f in g)


def test_representative_groups_is_a_star_cover():
    # A chain 0-1-2-3-4 and a triangle 5-6-7 with a tail 7-8. The busiest node (7) takes the triangle
    # and its tail; then 1 (two links, the lowest index) takes 0 and 2; 3 is left with 4.
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [5, 7], [7, 8]])
    rep = representative_groups(10, pairs)
    assert rep.tolist() == [1, 1, 1, 3, 3, 7, 7, 7, 7, 9]
    # Nothing linked: everyone alone; the same pairs in another order: the same groups.
    assert representative_groups(3, np.empty((0, 2))).tolist() == [0, 1, 2]
    assert representative_groups(10, pairs[::-1]).tolist() == rep.tolist()


def test_near_duplicate_groups_expands_shared_hashes_and_checks_its_inputs():
    rng = np.random.default_rng(2)
    thumbs = rng.integers(0, 256, (6, 1024)).astype(np.uint8)
    thumbs[1] = np.clip(thumbs[0] * 1.1, 0, 255)  # a brighter copy of 0
    thumbs[4] = thumbs[3]
    hashes = np.array([7, 7, 7, 9, 9, 2**40], dtype=np.uint64)  # 0-2 share a hash, 3-4 too
    found = near_duplicate_groups(hashes, thumbs, 0.1)
    assert found.representative.tolist() == [0, 0, 2, 3, 3, 5]
    assert found.bits.tolist() == [0] * 6
    assert 0 < found.difference[1] <= 0.1 and found.difference[4] == 0.0
    with pytest.raises(ValueError, match=r"'thumbs' parameter must have shape \(6, 1024\). Got \(6, 4\)"):
        near_duplicate_groups(hashes, thumbs[:, :4], 0.1)
    with pytest.raises(ValueError, match=r"'threshold' parameter must be a float in \[0, 1\]. Got 1.5"):
        near_duplicate_groups(hashes, thumbs, 1.5)


def test_hamming_pairs_matches_brute_force_and_compares_few(monkeypatch):
    rng = np.random.default_rng(0)
    n = 3000
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    for i in range(0, 300, 3):  # plant copies 1..8 bits away
        flips = rng.choice(64, size=1 + i % 8, replace=False)
        hashes[n - 1 - i] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    compared = []
    real = neardup._close_pairs

    def counting(h, members, k, chunk=512):
        compared.append(len(members) ** 2)
        return real(h, members, k, chunk)

    monkeypatch.setattr(neardup, "_close_pairs", counting)
    got = hamming_pairs(hashes, HASH_BITS)
    bits = np.array([[bin(int(a) ^ int(b)).count("1") for b in hashes] for a in hashes[:400]])
    brute = {(i, j) for i in range(400) for j in range(n) if i < j and bits[i, j] <= 6}
    assert {(i, j) for i, j in got.tolist() if i < 400} == brute
    assert len(brute) == sum(1 + i % 8 <= 6 for i in range(0, 300, 3)) == 75
    assert sum(compared) < n * n / 50  # 7 bands of 9-10 bits: a few buckets' worth, not all pairs
    with pytest.raises(ValueError, match=r"'max_distance' parameter must be an int in \[0, 63\]. Got 64"):
        hamming_pairs(hashes, 64)


def test_a_large_group_is_warned_about_with_what_to_do(tmp_path, caplog):
    """Seven files of one picture (resized and recompressed): a group above LARGE_GROUP files
    gets a warning in the check's summary and in the run log, naming the CSV and both keys."""
    from PIL import Image

    from tlexp.config import load_config
    from tlexp.data import prepare_data, write_run_check

    src = _save(tmp_path / "data" / "cat" / "0.png", _shirt(200, seed=1, pattern=30))
    for k in range(LARGE_GROUP + 1):
        with Image.open(src) as img:
            img.resize((48 + 4 * k, 48 + 4 * k)).save(tmp_path / "data" / "cat" / f"copy{k}.jpg", quality=90)
    for k in range(6):
        _save(tmp_path / "data" / ("cat" if k < 3 else "dog") / f"other{k}.png", _shirt(60 + 30 * k, k, pattern=50))
    res = check_dataset(tmp_path / "data")
    (group,) = res.near_duplicates()
    assert len(group) == LARGE_GROUP + 2
    note = (
        f"1 near-duplicate group(s) hold more than {LARGE_GROUP} files (largest: {LARGE_GROUP + 2} files around "
        f"'{group[0].path}'); if they are different pictures, look at near_duplicates.csv and lower "
        f"data.near_duplicate_threshold (now 0.1), or set data.group_near_duplicates=false"
    )
    assert f"  warning: {note}" in format_summary(res)
    cfg = load_config(
        None, [f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.2"]
    )
    ds, check = prepare_data(cfg)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="tlexp"):
        info = write_run_check(run_dir, check, ds, cfg.data.near_duplicate_threshold)
    assert f"data: {note}" in [r.getMessage() for r in caplog.records]
    assert info["near_duplicate_threshold"] == 0.1 and info["near_duplicate_files"] == LARGE_GROUP + 2
    rows = read_csv(run_dir / "near_duplicates.csv")
    assert [r["path"] for r in rows][0] == group[0].path
    assert rows[0]["hash_bits"] == "0" and rows[0]["difference"] == "0.0000"
    assert all(float(r["difference"]) <= 0.1 for r in rows)
