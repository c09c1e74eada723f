"""ImageNet weights files: where Keras keeps them, whether they are there and intact.

No TensorFlow here: checking weights must be instant, and happens before any data work.
``tlexp weights`` shows the state of every backbone's file (``weights_status``) and puts
a file downloaded elsewhere where Keras will find it (``import_weights``), for machines
without internet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlexp.errors import WeightsError
from tlexp.model._backbones import REGISTRY, BackboneSpec

log = logging.getLogger("tlexp")


def keras_cache_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``).

    Mirrors ``keras.src.backend.config``: ``$KERAS_HOME`` if set, else ``~/.keras``
    (``/tmp/.keras`` when the home folder is not writable).
    """
    if "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"])
    else:
        home = Path(os.path.expanduser("~"))
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    return base / "models"


def resolve_weights(backbone: str, weights: str, download: bool) -> Path | None:
    """Turn ``model.weights`` into a local file to load (``None`` for random init).

    For ``imagenet`` the Keras cache is used, downloading through Keras' own
    ``get_file`` (which checks the hash) when allowed. Called before any data work, so a
    missing file fails a run in seconds, not after the dataset was read.

    Raises:
        WeightsError: the file is missing and cannot be downloaded, or is corrupt.
    """
    if weights == "none":
        return None
    if weights != "imagenet":
        return Path(weights)
    spec = REGISTRY[backbone]
    cached = keras_cache_dir() / spec.weights_file
    how_to = (
        f"Download {spec.weights_url} on a machine with internet and put it at '{cached}' "
        f"(the folder Keras reads, set by $KERAS_HOME), or set model.weights to the file's path."
    )
    if cached.is_file():
        if spec.weights_hash is not None and (got := _digest(cached, spec.weights_hash)) != spec.weights_hash:
            raise WeightsError(
                f"The cached ImageNet weights '{cached}' are corrupt or not the no-top file "
                f"({_algorithm(spec.weights_hash).upper()} {got}, expected {spec.weights_hash}). "
                f"Delete it and retry. {how_to}"
            )
        return cached
    if not download:
        raise WeightsError(
            f"ImageNet weights for {backbone} are not cached ('{spec.weights_file}' missing) "
            f"and model.download is false. {how_to}"
        )
    from tlexp.model._backend import import_backend

    import_backend()  # Keras imports its backend (TensorFlow): let it print its start-up notes into the capture, once
    from keras.utils import get_file

    log.info("weights: downloading %s into %s", spec.weights_file, cached.parent)
    try:
        path = get_file(spec.weights_file, spec.weights_url, cache_subdir="models", file_hash=spec.weights_hash)
    except Exception as e:
        raise WeightsError(f"Could not download ImageNet weights for {backbone}: {e}. {how_to}") from None
    return Path(path)


def _algorithm(expected: str) -> str:
    """The hash Keras' ``get_file`` checks for this digest: SHA-256 for 64 hex digits, else MD5."""
    return "sha256" if len(expected) == 64 else "md5"


def _digests(path: Path) -> dict[str, str]:
    """MD5 and SHA-256 of a file, read once in 1 MiB chunks."""
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashes.items()}


def _digest(path: Path, expected: str) -> str:
    """The file's digest in the algorithm of ``expected``."""
    h = hashlib.new(_algorithm(expected))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- tlexp weights


def weights_status(
    registry: Mapping[str, BackboneSpec] | None = None, cache_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """The state of each backbone's no-top ImageNet file in the Keras cache.

    Hashes every file that is present (a few seconds for VGG16's 59 MB, more for
    larger ones), in 1 MiB chunks, with the algorithm of Keras' published hash (MD5, or
    SHA-256 for ConvNeXt). A file Keras publishes no hash for (MobileNet, MobileNetV2)
    cannot be checked: it is reported as present, unchecked, as Keras itself takes it.

    Args:
        registry: backbone name -> spec; ``None`` for ``backbones.REGISTRY``.
        cache_dir: folder to look in; ``None`` for ``keras_cache_dir()``.

    Returns:
        One dict per backbone, in registry order: ``backbone``, ``file`` (name),
        ``path`` (full path where Keras looks), ``url``, ``present`` (bool),
        ``checksum`` (``"ok"``, ``"mismatch"``, ``"missing"`` or ``"unchecked"``),
        ``hash`` (of the file in the algorithm of ``expected_hash``, ``None`` if absent
        or unchecked), ``expected_hash`` (``None`` if Keras has none), ``size`` (bytes,
        ``None`` if absent) and ``error`` (why a present file could not be read, else
        ``None``; such a file counts as a mismatch, since Keras cannot use it either).
    """
    registry = REGISTRY if registry is None else registry
    folder = keras_cache_dir() if cache_dir is None else Path(cache_dir)
    rows = []
    for name, spec in registry.items():
        path = folder / spec.weights_file
        row: dict[str, Any] = {
            "backbone": name, "file": spec.weights_file, "path": path, "url": spec.weights_url,
            "present": path.is_file(), "checksum": "missing", "hash": None,
            "expected_hash": spec.weights_hash, "size": None, "error": None,
        }  # fmt: skip
        if row["present"]:
            try:
                row["size"] = path.stat().st_size
                if spec.weights_hash is not None:
                    row["hash"] = _digest(path, spec.weights_hash)
            except OSError as e:
                row["error"] = e.strerror or str(e)
            if spec.weights_hash is None and row["error"] is None:
                row["checksum"] = "unchecked"
            else:
                row["checksum"] = "ok" if row["hash"] == spec.weights_hash else "mismatch"
        rows.append(row)
    return rows


def format_weights_status(rows: list[dict[str, Any]]) -> str:
    """A table of ``weights_status`` rows for ``tlexp weights``, with what to do next."""
    if not rows:
        return "No backbones registered."
    table = [("backbone", "status", "path")] + [(r["backbone"], _status_word(r), str(r["path"])) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    lines = [f"{b:<{widths[0]}}  {s:<{widths[1]}}  {p}".rstrip() for b, s, p in table]

    folder = Path(rows[0]["path"]).parent
    bad = [r for r in rows if r["checksum"] not in ("ok", "unchecked")]
    lines.append("")
    if bad:
        lines.append("To fix, download on a machine with internet:")
        lines += [f"  {r['backbone']}: {r['url']}" for r in bad]
        lines.append(
            "then run 'tlexp weights import FILE' here: it checks the hash, finds the backbone from the "
            "file's content (its name does not matter where Keras publishes a hash) and copies it into place, "
            "replacing a corrupt one."
        )
        lines.append("Or copy the file to the path shown yourself; Keras only reads the name it expects.")
    elif any(r["checksum"] == "unchecked" for r in rows):
        lines.append("All ImageNet weights files are in place and intact, as far as Keras publishes hashes to check.")
    else:
        lines.append("All ImageNet weights files are in place and intact.")
    lines.append(
        f"Keras reads weights from {folder}; set $KERAS_HOME to use another folder (files go in $KERAS_HOME/models)."
    )
    return "\n".join(lines)


def _status_word(row: dict[str, Any]) -> str:
    if row["checksum"] == "ok":
        return "ok"
    if row["checksum"] == "unchecked":
        return "present (Keras publishes no hash to check)"
    if row["checksum"] == "missing":
        return "MISSING"
    if row["error"]:
        return f"CORRUPT (unreadable: {row['error']})"
    algorithm = _algorithm(row["expected_hash"])
    return f"CORRUPT ({algorithm} {row['hash'][:8]}, expected {row['expected_hash'][:8]}, {_human(row['size'])})"


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # unreachable: MB is the last unit


def import_weights(
    file: str | Path, registry: Mapping[str, BackboneSpec] | None = None, cache_dir: str | Path | None = None
) -> tuple[str, Path]:
    """Verify a downloaded no-top ImageNet file and put it where Keras will find it.

    The backbone is found by the file's hash (MD5 or SHA-256, as Keras publishes it), not
    its name, so a renamed download works. A file Keras publishes no hash for can only be
    recognised by its exact name, and is imported unchecked, with a warning.
    The file is copied, never moved, through a temporary file in the destination folder
    whose MD5 is checked before ``os.replace``: Keras never sees a half-written file. A
    cached file with other content (an earlier broken download) is replaced, with a
    warning; one that is already right is left alone.

    Args:
        file: the downloaded ``.h5`` file.
        registry: backbone name -> spec; ``None`` for ``backbones.REGISTRY``.
        cache_dir: destination folder; ``None`` for ``keras_cache_dir()``.

    Returns:
        (backbone name, path of the file in the cache).

    Raises:
        WeightsError: the file is missing, a folder, unreadable, matches no known no-top
            ImageNet file (nothing is written then), or cannot be copied.
    """
    registry = REGISTRY if registry is None else registry
    folder = keras_cache_dir() if cache_dir is None else Path(cache_dir)
    src = Path(file)
    if not src.exists():
        raise WeightsError(f"The weights file '{src}' does not exist. Give the path of the downloaded .h5 file.")
    if not src.is_file():
        raise WeightsError(f"'{src}' is a folder, not a weights file. Give the path of the downloaded .h5 file.")
    try:
        digests, size = _digests(src), src.stat().st_size
    except OSError as e:
        raise WeightsError(
            f"Could not read the weights file '{src}': {e.strerror or e}. Check its permissions."
        ) from None

    name = next((n for n, spec in registry.items() if spec.weights_hash in digests.values()), None)
    if name is None:  # no hash matches: a file Keras publishes no hash for is known by its name alone
        name = next((n for n, s in registry.items() if s.weights_hash is None and s.weights_file == src.name), None)
        if name is not None:
            log.warning("weights: Keras publishes no hash for %s, so '%s' is imported unchecked", name, src)
    if name is None:
        raise WeightsError(_unknown_file_message(src, digests, size, registry))
    md5 = digests["md5"]
    dest = folder / registry[name].weights_file

    if dest.is_file():
        try:
            cached_md5 = _digest(dest, md5)
        except OSError:
            cached_md5 = None  # unreadable: as useless to Keras as a corrupt file, so replaced
        if cached_md5 == md5:
            log.info("weights: %s weights already in place at %s; nothing copied", name, dest)
            return name, dest
        log.warning("weights: replacing the cached file %s (MD5 %s, the import's is %s)", dest, cached_md5, md5)
    elif dest.exists():
        raise WeightsError(
            f"'{dest}' exists but is not a file, so the {name} weights cannot go there. "
            f"Remove it and run the import again."
        )
    _atomic_copy(src, dest, md5)
    log.info("weights: imported '%s' as the %s weights: %s", src, name, dest)
    return name, dest


def _atomic_copy(src: Path, dest: Path, md5: str) -> None:
    """Copy ``src`` to ``dest`` through a verified temp file in ``dest``'s folder."""
    from tlexp.files import atomic_path

    how_to = "Free some space or set $KERAS_HOME to a writable folder, then run the import again."
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:  # readable by everyone, as a file Keras downloads itself would be
            shutil.copyfile(src, tmp)
            copied = _digest(tmp, md5)
            if copied != md5:
                raise WeightsError(
                    f"The copy of '{src}' in '{dest.parent}' has MD5 {copied}, not {md5}: the disk "
                    "or the source changed while copying. Nothing was replaced; run the import again."
                )
    except OSError as e:
        raise WeightsError(f"Could not copy '{src}' to '{dest}': {e.strerror or e}. {how_to}") from None


def _unknown_file_message(src: Path, digests: dict[str, str], size: int, registry: Mapping[str, BackboneSpec]) -> str:
    def expected(spec: BackboneSpec) -> str:
        if spec.weights_hash is None:
            return "no hash published: imported by this exact name"
        return f"{_algorithm(spec.weights_hash).upper().replace('SHA', 'SHA-')} {spec.weights_hash}"

    known = "\n".join(f"  {n}: {spec.weights_file} ({expected(spec)})" for n, spec in registry.items())
    named_as = [n for n, spec in registry.items() if spec.weights_file == src.name]
    hint = (f"\nIts name is that of the {named_as[0]} file, so it is most likely a truncated or damaged "
            f"download." if named_as else "")  # fmt: skip
    return (
        f"'{src}' (MD5 {digests['md5']}, {size} bytes) matches none of the no-top ImageNet weights files "
        f"tlexp knows:\n{known}{hint}\n"
        "Likely causes:\n"
        "  - a truncated or interrupted download: compare its size with the server's and download it again;\n"
        "  - the with-top file (Keras names it without '_notop'): tlexp needs the no-top one;\n"
        "  - weights of another backbone or framework. A Keras file that fits the backbone can be used as is "
        "with model.weights=PATH.\n"
        "Nothing was written."
    )
