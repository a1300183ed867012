"""The feature cache: one entry per video and extractor, keyed by the extractor's config hash.

Layout::

    CACHE/<video_id>/<extractor>-<hash12>/
        <array>.npy ...     # every array has one row per video frame (unless declared otherwise)
        meta.json           # extractor, full config and hash, timing, arrays, columns, source
    CACHE/<video_id>/transcript-<hash12>.json   # e.g. ASR output shared by _left/_right

An entry is written into a temporary folder and renamed when complete, with ``meta.json`` inside,
so an entry either exists whole or not at all. An entry is *fresh* when its folder exists, its
meta says it is complete, and the source file it was computed from has the same size and
modification time; anything else is *stale* and is recomputed. A different configuration has a
different hash, hence its own entry.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect import __version__
from mmaffect.atomic import atomic_write_text, remove_dead_temps
from mmaffect.features.timing import FrameTiming

META = "meta.json"


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a configuration's canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_signature(path: Path) -> dict[str, Any]:
    """What identifies the input a feature was computed from (a frame folder: its newest file)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        return {
            "path": str(path.resolve()),
            "files": len(files),
            "size": sum(p.stat().st_size for p in files),
            "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0),
        }
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class EntryKey:
    video_id: str
    extractor: str
    config_hash: str

    @property
    def dirname(self) -> str:
        return f"{self.extractor}-{self.config_hash[:12]}"


@dataclass
class FeatureEntry:
    """A cached entry: its arrays (memory-mapped, read-only) and its metadata."""

    key: EntryKey
    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def timing(self) -> FrameTiming:
        t = self.meta["timing"]
        return FrameTiming(fps=t["fps"], n_frames=t["n_frames"], start=t["start"])

    @property
    def columns(self) -> list[str] | None:
        return self.meta.get("columns")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class RowCountError(ValueError):
    """An array whose row count is not the video's frame count (a bug, never written)."""


#: Rows per block when a whole array is checked or copied (bounded memory).
BLOCK_ROWS = 4096


def release_pages(arr: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's memory. The mapping is shared
    with its file, so what was written stays in the page cache (and reaches the file as
    usual: :meth:`EntryWriter.commit` flushes) and pages touched again are read back.
    Without this, every row written stays resident, and a long video's entries grow the
    process by their size."""
    mapping = getattr(arr, "_mmap", None)  # numpy's memmap keeps its mmap.mmap here
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _all_finite(arr: np.ndarray) -> bool:
    """Whether a float array holds no NaN or inf, checked block by block (its pages
    released after each block)."""
    for start in range(0, arr.shape[0], BLOCK_ROWS):
        if not np.all(np.isfinite(arr[start : start + BLOCK_ROWS])):
            return False
        release_pages(arr)
    return True


class EntryWriter:
    """Writes an entry row block by row block into memory-mapped arrays (bounded memory:
    :meth:`release` after each block keeps only the block being written resident).

    Use as a context manager; :meth:`commit` validates and publishes the entry, leaving the
    block (or an exception) discards everything written.
    """

    def __init__(self, cache: FeatureCache, key: EntryKey, timing: FrameTiming, **meta: Any):
        self.cache, self.key, self.timing, self.meta = cache, key, timing, meta
        self.target = cache.entry_dir(key)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(self.target.parent)
        self.tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{key.dirname}.{os.getpid()}.", suffix=".tmp", dir=self.target.parent
            )
        )

        self.arrays: dict[str, np.ndarray] = {}
        self.committed: FeatureEntry | None = None

    def array(self, name: str, tail: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """A zero-filled (n_frames, *tail) array backed by the entry's file."""
        arr = np.lib.format.open_memmap(
            self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=(self.timing.n_frames, *tail)
        )
        self.arrays[name] = arr
        return arr

    def fill(self, arr: np.ndarray, rows: Callable[[int, int], np.ndarray]) -> None:
        """Fill ``arr`` (an array of this entry) block by block with ``rows(start, stop)``,
        releasing each block once written."""
        for start in range(0, arr.shape[0], BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, arr.shape[0])
            arr[start:stop] = rows(start, stop)
            release_pages(arr)

    def release(self) -> None:
        """Drop the rows written so far from memory (:func:`release_pages`)."""
        for arr in self.arrays.values():
            release_pages(arr)

    def commit(self, *, columns: list[str] | None = None, extra: dict | None = None):
        for name, arr in self.arrays.items():
            arr.flush()
            if np.issubdtype(arr.dtype, np.floating) and not _all_finite(arr):
                raise ValueError(f"{self.key.extractor} for {self.key.video_id}: {name!r} has NaN")
        values = self.arrays.get("values")
        if columns is not None and values is not None and values.shape[1] != len(columns):
            raise ValueError(f"{self.key.extractor}: column names do not match the values")
        meta = self.cache._meta(
            self.key, self.timing, self.arrays, columns=columns, extra=extra, **self.meta
        )
        (self.tmp / META).write_text(json.dumps(meta, indent=2, default=str))
        self.arrays.clear()  # drop the memmaps before the rename
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.tmp, self.target)
        self.committed = self.cache.load(self.key)
        return self.committed

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.arrays.clear()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


class FeatureCache:
    """Feature entries on disk under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def video_dir(self, video_id: str) -> Path:
        return self.root / video_id

    def entry_dir(self, key: EntryKey) -> Path:
        return self.video_dir(key.video_id) / key.dirname

    def is_fresh(self, key: EntryKey, source: dict[str, Any] | None = None) -> bool:
        meta_path = self.entry_dir(key) / META
        if not meta_path.is_file():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if meta.get("config_hash") != key.config_hash or not meta.get("complete"):
            return False
        if source is not None:
            old = meta.get("source") or {}
            return all(old.get(k) == v for k, v in source.items() if k != "path")
        return True

    def load(self, key: EntryKey, *, mmap: bool = True) -> FeatureEntry:
        folder = self.entry_dir(key)
        meta = json.loads((folder / META).read_text())
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)
            for name in meta["arrays"]
        }
        return FeatureEntry(key=key, path=folder, meta=meta, arrays=arrays)

    def write(
        self,
        key: EntryKey,
        arrays: dict[str, np.ndarray],
        *,
        timing: FrameTiming,
        config: dict[str, Any],
        source: dict[str, Any] | None = None,
        columns: list[str] | None = None,
        unaligned: tuple[str, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> FeatureEntry:
        """Validate and write an entry atomically.

        Every array not named in ``unaligned`` must have ``timing.n_frames`` rows; ``columns``,
        when given, must match the width of the ``values`` array.
        """
        for name, array in arrays.items():
            if name in unaligned:
                continue
            if array.shape[0] != timing.n_frames:
                raise RowCountError(
                    f"{key.extractor} for {key.video_id}: array {name!r} has {array.shape[0]} "
                    f"rows but the video has {timing.n_frames} frames"
                )
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(f"{key.extractor} for {key.video_id}: {name!r} has NaN or inf")
        if columns is not None and "values" in arrays and arrays["values"].shape[1] != len(columns):
            raise ValueError(
                f"{key.extractor}: {len(columns)} column names for "
                f"{arrays['values'].shape[1]} columns"
            )
        with self.writer(key, timing=timing, config=config, source=source) as w:
            for name, array in arrays.items():
                if name in unaligned:  # any leading size: written as is
                    out = np.lib.format.open_memmap(
                        w.tmp / f"{name}.npy", mode="w+", dtype=array.dtype, shape=array.shape
                    )
                    w.arrays[name] = out
                else:
                    out = w.array(name, array.shape[1:], array.dtype)
                w.fill(out, lambda a, b, array=array: array[a:b])
            return w.commit(columns=columns, extra=extra)

    def writer(
        self,
        key: EntryKey,
        *,
        timing: FrameTiming,
        config: dict[str, Any],
        source: dict[str, Any] | None = None,
    ) -> EntryWriter:
        """A streaming writer for an entry whose rows arrive chunk by chunk."""
        return EntryWriter(self, key, timing, config=config, source=source)

    @staticmethod
    def _meta(key, timing, arrays, *, config, source=None, columns=None, extra=None) -> dict:
        return {
            "extractor": key.extractor,
            "video_id": key.video_id,
            "config_hash": key.config_hash,
            "config": config,
            "timing": timing.to_dict(),
            "arrays": {
                n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in arrays.items()
            },
            "columns": columns,
            "source": source,
            "mmaffect": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
            "complete": True,
        }

    # Side files (transcripts): plain JSON next to the entries.
    def json_path(self, video_id: str, name: str, config_hash_: str) -> Path:
        return self.video_dir(video_id) / f"{name}-{config_hash_[:12]}.json"

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str))

    def entries(self, video_id: str) -> list[Path]:
        folder = self.video_dir(video_id)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if (p / META).is_file())
