"""An on-disk cache of prepared volumes, so slow NIfTI loading and resampling run once.

Layout: ``cache_dir/<params hash>-<sources hash>/`` holds ``volumes.json`` (case ids, spacing,
modalities, class names, meta) and one ``.npy`` per array. ``.npy`` plus JSON is pickle-free, so
opening a cache entry cannot execute code, and arrays are memory-mapped copy-on-write: a hit
costs a few file opens, pages are read when touched, and callers may still modify arrays
in memory without touching the file.

The key hashes the parameters and each source file's ``(path, size, mtime_ns)``; editing,
replacing or touching a source changes the key and triggers a rebuild. Entries are written to a
temporary folder and renamed into place with ``os.replace``, so a failed build (say a corrupt
file found half-way) or a crash leaves no partial entry: an entry folder exists only when
complete. After a successful write, older entries with the same parameters are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError

CACHE_FORMAT = 1
"""Bumped whenever the on-disk layout changes, so old entries are never misread."""

INDEX_FILE = "volumes.json"


def default_cache_dir() -> Path:
    """``$MIXSEG_CACHE_DIR`` or ``~/.cache/mixseg-lite``."""
    return Path(os.environ.get("MIXSEG_CACHE_DIR", Path.home() / ".cache" / "mixseg-lite"))


# ----------------------------------------------------------------------------- keys

def _digest(payload) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_fingerprint(source_files) -> list[list]:
    """``[path, size, mtime_ns]`` of each source file (absolute paths, in the given order)."""
    fingerprint = []
    for path in source_files:
        path = Path(path).absolute()
        try:
            stat = path.stat()
        except OSError:
            raise InputError(f"{path}: cache source file not found") from None
        fingerprint.append([str(path), stat.st_size, stat.st_mtime_ns])
    return fingerprint


def cache_key(key_params: dict, source_files) -> str:
    """``<params hash>-<sources hash>``: the entry folder name for these inputs."""
    return f"{_digest([CACHE_FORMAT, key_params])}-{_digest(source_fingerprint(source_files))}"


# ----------------------------------------------------------------------------- meta as JSON

def _encode(value):
    """JSON-ready form of ``value``; tuples, paths and arrays are tagged so they round-trip."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise InputError(f"cache: meta dict keys must be strings, got {list(value)[:5]}")
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InputError(f"cache: cannot store meta value of type {type(value).__name__}: {value!r:.60}")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__path__" in value:
        return Path(value["__path__"])
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    return {k: _decode(v) for k, v in value.items()}


# ----------------------------------------------------------------------------- save / load

def save_volumes(volumes: list[Volume], directory: Path) -> None:
    """Write ``volumes`` into an existing, empty ``directory`` (arrays as ``.npy``, the rest as JSON)."""
    directory = Path(directory)
    records = []
    for n, v in enumerate(volumes):
        if not isinstance(v, Volume):
            raise InputError(f"cache: build() must return Volumes, item {n} is {type(v).__name__}")
        np.save(directory / f"{n:05d}_image.npy", np.ascontiguousarray(v.image))
        if v.label is not None:
            np.save(directory / f"{n:05d}_label.npy", np.ascontiguousarray(v.label))
        records.append({"case_id": v.case_id, "spacing": list(v.spacing), "modalities": list(v.modalities),
                        "class_names": list(v.class_names), "has_label": v.label is not None,
                        "meta": _encode(v.meta)})
    (directory / INDEX_FILE).write_text(json.dumps({"format": CACHE_FORMAT, "volumes": records}))


def load_volumes(directory: Path) -> list[Volume]:
    """Read volumes written by :func:`save_volumes`; arrays are memory-mapped copy-on-write."""
    directory = Path(directory)
    index = json.loads((directory / INDEX_FILE).read_text())
    if index.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {index.get('format')} is not {CACHE_FORMAT}")
    volumes = []
    for n, r in enumerate(index["volumes"]):
        image = np.load(directory / f"{n:05d}_image.npy", mmap_mode="c", allow_pickle=False)
        label = (np.load(directory / f"{n:05d}_label.npy", mmap_mode="c", allow_pickle=False)
                 if r["has_label"] else None)
        volumes.append(Volume(image, label, tuple(r["spacing"]), r["case_id"], tuple(r["modalities"]),
                              tuple(r["class_names"]), _decode(r["meta"])))
    return volumes


# ----------------------------------------------------------------------------- the cache

def load_cached(key_params: dict, source_files, build: Callable[[], list[Volume]],
                cache_dir=None) -> list[Volume]:
    """Volumes from the cache entry for ``(key_params, source_files)``, building it if absent.

    Args:
        key_params: everything that changes the result (loader, size, normalisation, ...);
            must be JSON-serialisable (other values are hashed by their ``str``).
        source_files: the files ``build`` reads; their path, size and mtime are part of the key.
        build: makes the volumes on a miss. If it raises, the error propagates and nothing is
            written.
        cache_dir: where entries live; default :func:`default_cache_dir`.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(key_params, source_files)
    entry = cache_dir / key
    if entry.is_dir():
        try:
            return load_volumes(entry)
        except (OSError, ValueError, KeyError, InputError):  # damaged by hand: rebuild it
            shutil.rmtree(entry, ignore_errors=True)
    volumes = build()
    if not isinstance(volumes, list):
        raise InputError(f"cache: build() must return a list of Volumes, got {type(volumes).__name__}")
    _write_entry(volumes, cache_dir, key)
    _remove_stale(cache_dir, key)
    return volumes


def _write_entry(volumes: list[Volume], cache_dir: Path, key: str) -> None:
    """Write into a temporary folder next to the entry, then rename it into place atomically."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_dir))
    try:
        save_volumes(volumes, temp)
        os.replace(temp, cache_dir / key)
    except OSError:
        # another process finished the same entry first: theirs is complete, keep it
        if not (cache_dir / key / INDEX_FILE).is_file():
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _remove_stale(cache_dir: Path, key: str) -> None:
    """Delete entries with the same parameters but older source files (they can never hit again)."""
    params_hash = key.split("-")[0]
    for entry in cache_dir.glob(f"{params_hash}-*"):
        if entry.name != key and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
