"""The built-in demo dataset: two visually distinct classes, written as real JPEG files.

It uses the Kaggle flat layout (``disc.0.jpg``, ``stripes.0.jpg``), so the demo runs
exactly the loading code the real study runs. Image ``i`` of a class depends only on
``i`` (not on how many are generated), so the dataset is reproducible byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from tlexp.errors import DataError
from tlexp.files import build_folder

log = logging.getLogger("tlexp")

CLASSES = ("disc", "stripes")
MARKER = ".tlexp-synthetic.json"
GENERATOR_VERSION = 1


def ensure_demo_dataset(root: str | os.PathLike, per_class: int) -> Path:
    """Make sure ``root`` holds the demo dataset with ``per_class`` images per class.

    Generates it if ``root`` is missing or empty; reuses it if it is a demo dataset with
    the same settings. Never writes into a folder it did not create.

    Raises:
        DataError: ``root`` holds something else, or a demo dataset of another size.
    """
    root = Path(root)
    wanted = {"generator": "tlexp demo", "version": GENERATOR_VERSION, "per_class": per_class, "classes": list(CLASSES)}
    if _is_demo(root, wanted):
        log.info("data: reusing the demo dataset in %s", root)
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"data.synthetic.enabled is true but '{root}' already exists and is not a tlexp demo dataset; "
            "tlexp never writes into existing data. Point data.root at a new folder."
        )
    log.info("data: generating the demo dataset (%d images per class) in %s", per_class, root)
    # Built beside root and renamed into place (an empty root is replaced): a killed run never
    # leaves half a dataset, and when two processes generate it at once, the first rename wins
    # and the other one's copy is dropped.
    with build_folder(root, MARKER) as tmp:
        for label, cls in enumerate(CLASSES):
            for i in range(per_class):
                _draw(label, i).save(tmp / f"{cls}.{i}.jpg", quality=90)
        (tmp / MARKER).write_text(json.dumps(wanted))
    _is_demo(root, wanted)  # raises if the winner of a race was asked for another size
    return root


def _is_demo(root: Path, wanted: dict) -> bool:
    """Whether ``root`` holds the demo dataset ``wanted`` describes; False if it holds none.

    Raises:
        DataError: it holds a demo dataset of another size.
    """
    marker = root / MARKER
    if not marker.is_file():
        return False
    found = json.loads(marker.read_text())
    if found != wanted:
        raise DataError(
            f"'{root}' holds a tlexp demo dataset with per_class={found.get('per_class')}, but the config asks "
            f"for data.synthetic.per_class={wanted['per_class']}. Use another data.root or remove that folder "
            "yourself."
        )
    return True


def _draw(label: int, index: int):
    """One image: a warm disc on noise (label 0) or cool stripes on noise (label 1)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([GENERATOR_VERSION, label, index])
    w, h = (int(v) for v in rng.integers(48, 97, size=2))  # varied sizes exercise the resize
    base = rng.integers(60, 196, size=3)
    pixels = np.clip(base + rng.normal(0, 28, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    if label == 0:
        color = (int(rng.integers(170, 256)), int(rng.integers(40, 150)), int(rng.integers(0, 90)))
        r = rng.uniform(0.2, 0.4) * min(w, h)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        color = (int(rng.integers(0, 90)), int(rng.integers(60, 180)), int(rng.integers(170, 256)))
        period = int(rng.integers(8, 16))
        offset = int(rng.integers(0, period))
        vertical = bool(rng.integers(0, 2))
        for start in range(offset - period, (w if vertical else h) + period, period):
            band = [start, 0, start + period // 2, h] if vertical else [0, start, w, start + period // 2]
            draw.rectangle(band, fill=color)
    return img
