"""Face crops for image-level training, read once into a memory-mapped cache.

A training corpus of face images is decoded once into ``CROPS/<name>-<hash>/``:
``images.npy`` (``(N, S, S, 3)`` uint8, memory-mapped), ``labels.npz`` (``expr`` ``(N,)``,
``au`` ``(N, K)``, ``va`` ``(N, 2)`` with the ABAW sentinels -1 / -1 / -5 where a label is
unknown) and ``meta.json`` (where the crops came from, their ids, the source signature). An
epoch then decodes no JPEG or video again; a changed source folder (files, sizes, times) is
read again. The folder is written under a temporary name and renamed when complete.

Sources:

* :func:`class_folder_crops`: ``<folder>/<class>/<image>`` (FER2013, AffectNet, RAF-DB
  exported as class folders). Class names map to the ABAW expression classes
  (:data:`EXPR_ALIASES`); an unknown name is an error that lists the known ones.
* :func:`frame_folder_crops`: Aff-Wild2 ``cropped_aligned/<video>/00001.jpg`` frame folders and
  their ABAW label files (uni-task folders or MTL split files): frame file ``NNNNN.jpg`` is
  label line ``NNNNN`` (0-based frame ``NNNNN - 1``).
* :func:`video_crops`: videos through the faces ``extract`` found (the ``faces`` entry of each
  video in the feature cache: boxes, landmarks, found), cut with the model's crop rule
  (:class:`~mmaffect.faces.crops.FaceCrop`) from the video decoded once.

Labelled sources keep the frames that have at least one label (frames without a label line, or
whose labels are all sentinels, are left out), every ``stride``-th of them per video, and skip
what has no picture (no frame file, no face found, an unreadable image); :attr:`CropSet.skipped`
counts each reason. They are written row block by row block (never all crops in memory), and
their signature covers the labels of the chosen frames and the pictures they come from.

:class:`ImageDataset` serves the crops to :class:`~mmaffect.training.module.AffectModule` with
the ``face_cnn`` model (``feat_image`` uint8 ``(S, S, 3)`` and the targets of every head).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmaffect.annotations import AU_12, EXPR_8
from mmaffect.errors import InputError
from mmaffect.media.inputs import IMAGE_EXTENSIONS  # image files read as face crops

__all__ = [
    "EXPR_ALIASES",
    "IMAGE_EXTENSIONS",
    "CropSet",
    "ORGANISER_CROP",
    "ImageDataset",
    "class_folder_crops",
    "expr_class_index",
    "frame_folder_crops",
    "video_crops",
    "video_targets",
]

#: Class-folder names (lower case) → ABAW expression class.
EXPR_ALIASES: dict[str, str] = {
    "neutral": "Neutral",
    "anger": "Anger",
    "angry": "Anger",
    "disgust": "Disgust",
    "disgusted": "Disgust",
    "fear": "Fear",
    "fearful": "Fear",
    "happiness": "Happiness",
    "happy": "Happiness",
    "sadness": "Sadness",
    "sad": "Sadness",
    "surprise": "Surprise",
    "surprised": "Surprise",
    "other": "Other",
}


def expr_class_index(name: str, where: Path | str = "") -> int:
    """Index in the ABAW EXPR classes (:data:`~mmaffect.annotations.EXPR_8`) of a class-folder
    name; an unknown name is an :class:`InputError` listing the known ones."""
    abaw = EXPR_ALIASES.get(name.strip().lower())
    if abaw is None:
        raise InputError(
            f"{where}: class folder {name!r} is not an ABAW expression class",
            hint="known names: "
            + ", ".join(sorted(EXPR_ALIASES))
            + " (rename the folder, or move it out of the corpus)",
        )
    return list(EXPR_8.names).index(abaw)


@dataclass
class CropSet:
    """Face crops and their labels (arrays row-aligned; ``images`` memory-mapped).

    Rows are grouped: ``groups`` are the class folders or video ids, ``group`` each row's index
    in them and ``frames`` its 0-based frame in its video (class folders: the row number)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    expr: np.ndarray  # (N,) int64, -1 unknown
    au: np.ndarray  # (N, K) float32, -1 unknown
    va: np.ndarray  # (N, 2) float32, -5 unknown
    groups: list[str]
    group: np.ndarray  # (N,) int64 index in groups
    frames: np.ndarray  # (N,) int64
    path: Path | None = None  # the cache folder
    files: list[str] | None = None  # class folders: each image's path in the corpus
    skipped: dict[str, int] = field(default_factory=dict)  # labelled frames left out, by reason

    def __len__(self) -> int:
        return len(self.expr)

    @property
    def ids(self) -> list[str]:
        """Per crop: its group (video id or class folder)."""
        return [self.groups[g] for g in self.group.tolist()]

    @property
    def names(self) -> list[str]:
        """Per crop: its file (class folders) or ``<video>/<NNNNN>.jpg``."""
        if self.files is not None:
            return list(self.files)
        return [
            f"{self.groups[g]}/{f + 1:05d}.jpg"
            for g, f in zip(self.group.tolist(), self.frames.tolist(), strict=True)
        ]

    def describe(self) -> str:
        """One line: the crops served, groups, what was left out, where."""
        left = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        served = int(_annotated(self.expr, self.au, self.va).sum())
        return (
            f"{served} face crops of {len(self.groups)} "
            f"{'video(s)' if self.files is None else 'class(es)'}"
            + (f" (left out: {left})" if left else "")
            + f" in {self.path}"
        )


def _folder_signature(files: list[Path]) -> dict[str, Any]:
    stats = [f.stat() for f in files]
    return {
        "files": len(files),
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def _class_files(folder: Path) -> list[tuple[Path, int]]:
    if not folder.is_dir():
        raise InputError(f"{folder}: no such image folder")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(
            f"{folder}: no class folders", hint="lay the images out as <folder>/<class>/<image>"
        )
    out = []
    for cls in classes:
        index = expr_class_index(cls.name, folder)
        out += [
            (f, index)
            for f in sorted(cls.rglob("*"))
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
        ]
    if not out:
        raise InputError(f"{folder}: no images in its class folders")
    return out


def _read_rgb(path: Path, side: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (side, side):
                im = im.resize((side, side), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def _storage_side(files: list[Path], size: int) -> int:
    """The side crops are stored at: the model's input side, but never larger than the
    largest image (upsampling adds nothing; the model resizes on the fly)."""
    from PIL import Image

    largest = 0
    for f in files[:: max(1, len(files) // 200)]:  # a sample of the headers is enough
        try:
            with Image.open(f) as im:
                largest = max(largest, *im.size)
        except OSError:  # unreadable: reported when it is read
            continue
    return max(1, min(int(size), largest))


def class_folder_crops(folder: str | Path, cache_root: str | Path, size: int) -> CropSet:
    """The crops of a class-folder corpus, from the cache (decoded into it the first time).

    Parameters
    ----------
    folder
        ``<folder>/<class>/<image>``.
    cache_root
        Where crop caches live.
    size
        The model's input side (crops are stored at it, or at the images' side if smaller).
    """
    from mmaffect.atomic import atomic_dir
    from mmaffect.features.cache import config_hash

    folder = Path(folder).resolve()
    items = _class_files(folder)
    files = [f for f, _ in items]
    side = _storage_side(files, size)
    key = {"source": str(folder), "kind": "class_folders", "side": side, "version": 1}
    target = Path(cache_root) / f"{folder.name}-{config_hash(key)[:12]}"
    signature = _folder_signature(files)
    cached = _open_crops(target, signature)
    if cached is not None:
        return cached
    with atomic_dir(target) as tmp:
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(files), side, side, 3)
        )
        for i, f in enumerate(files):
            images[i] = _read_rgb(f, side)
        images.flush()
        del images
        n = len(items)
        np.savez(
            tmp / "labels.npz",
            expr=np.array([c for _, c in items], np.int64),
            au=np.full((n, len(AU_12.names)), -1, np.float32),
            va=np.full((n, 2), -5, np.float32),
        )
        meta = {
            **key,
            "signature": signature,
            "ids": [f.parent.name for f in files],
            "names": [str(f.relative_to(folder)) for f in files],
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    return _open_crops(target, signature)


# --------------------------------------------------------------------------------------------
# Labelled frames: Aff-Wild2 frame folders and videos
# --------------------------------------------------------------------------------------------

#: How the organisers' ``cropped_aligned`` images were cut: the 5-point alignment to the ArcFace
#: template, 112 x 112, no zoom (:mod:`mmaffect.faces.crops`). A model trained on them records it.
ORGANISER_CROP: dict[str, Any] = {"kind": "template", "scale": 1.0}
_BLOCK = 256  # crops decoded and written per block
_EXPR_ABSENT, _AU_ABSENT, _VA_ABSENT = -1, -1.0, -5.0  # the window dataset's sentinels

Report = Callable[[str], None]


def _annotated(expr: np.ndarray, au: np.ndarray, va: np.ndarray) -> np.ndarray:
    """Rows with at least one label (the window dataset's rule)."""
    return (expr != _EXPR_ABSENT) | (au != _AU_ABSENT).any(axis=1) | (va != _VA_ABSENT).all(axis=1)


@dataclass
class _Plan:
    """The labelled frames a crop set will hold, row-aligned, grouped by video (nothing decoded)."""

    groups: list[str]
    starts: np.ndarray  # (len(groups) + 1,) first row of each video
    frames: np.ndarray
    expr: np.ndarray
    au: np.ndarray
    va: np.ndarray
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.frames)

    def rows(self, g: int) -> np.ndarray:
        return np.arange(self.starts[g], self.starts[g + 1])

    def labels_hash(self) -> str:
        import hashlib

        h = hashlib.sha256(json.dumps(self.groups).encode())
        for a in (self.starts, self.frames, self.expr, self.au, self.va):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def video_targets(labels: Any) -> dict[str, Any]:
    """Per-video targets with the window dataset's sentinels (EXPR -1, AU -1, VA -5) of labels
    as :class:`~mmaffect.training.dataset.WindowDataset` takes them: ``{video: VideoLabels}``,
    a list of such dicts (one per track), or :class:`~mmaffect.annotations.MtlLabels`."""
    from mmaffect.annotations import MtlLabels
    from mmaffect.training.dataset import _au_size, _targets_from_files, _targets_from_mtl

    if isinstance(labels, MtlLabels):
        return _targets_from_mtl(labels)
    tracks = [labels] if isinstance(labels, Mapping) else list(labels)
    return _targets_from_files(tracks, _au_size(labels))


Select = Callable[[str, Any, np.ndarray], tuple[np.ndarray, dict[str, int]]]


def _plan(targets: dict[str, Any], select: Select) -> _Plan:
    """The rows ``select(video, targets, annotated)`` keeps of every video (it returns them and
    the counts of what it left out, by reason); frames whose labels are all sentinels are
    never kept."""
    from collections import Counter

    skipped: Counter[str] = Counter()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "expr", "au", "va")}
    groups, starts = [], [0]
    for vid in sorted(targets):
        t = targets[vid]
        annotated = _annotated(t.expr, t.au, t.va)
        skipped["all labels unknown"] += int((~annotated).sum())
        rows, why = select(vid, t, annotated)
        skipped.update(why)
        if not len(rows):
            continue
        groups.append(vid)
        starts.append(starts[-1] + len(rows))
        for k in parts:
            parts[k].append(getattr(t, k)[rows])
    n_au = next(iter(targets.values())).au.shape[1] if targets else len(AU_12.names)
    empty = {"frames": (0,), "expr": (0,), "au": (0, n_au), "va": (0, 2)}
    cat = {k: np.concatenate(v) if v else np.zeros(empty[k]) for k, v in parts.items()}
    return _Plan(
        groups=groups,
        starts=np.array(starts, np.int64),
        frames=cat["frames"].astype(np.int64),
        expr=cat["expr"].astype(np.int64),
        au=cat["au"].astype(np.float32).reshape(-1, n_au),
        va=cat["va"].astype(np.float32).reshape(-1, 2),
        skipped={k: v for k, v in skipped.items() if v},
    )


def _labels_origin(labels: Any) -> str:
    """Where labels were read from (the key of their crop cache)."""
    from mmaffect.annotations import MtlLabels

    if isinstance(labels, MtlLabels):
        return str(labels.path or "")
    tracks = [labels] if isinstance(labels, Mapping) else list(labels)
    folders = sorted({str(v.path.parent) for t in tracks for v in t.values() if v.path})
    return os.path.commonpath(folders) if folders else ""


class _RowWriter:
    """Writes crops ``(N, S, S, 3)`` uint8 into an ``.npy`` file row block by row block, in
    row order, rows not given left black: nothing is mapped or held in memory (a memory map
    being written keeps every page it touched resident)."""

    def __init__(self, path: Path, n: int, side: int) -> None:
        self.file = path.open("wb")
        header = {"descr": "|u1", "fortran_order": False, "shape": (n, side, side, 3)}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.n, self.row_bytes, self.next = n, side * side * 3, 0

    def put(self, rows: np.ndarray | list[int], crops: np.ndarray) -> None:
        """Write ``crops[k]`` as row ``rows[k]`` (ascending, after the rows already written)."""
        for row, crop in zip(np.asarray(rows).tolist(), crops, strict=True):
            if row < self.next:
                raise ValueError(f"row {row} comes after row {self.next - 1}")
            self._skip_to(row)
            self.file.write(np.ascontiguousarray(crop, np.uint8).tobytes())
            self.next = row + 1

    def _skip_to(self, row: int) -> None:
        while self.next < row:  # black rows, a block at a time
            k = min(row - self.next, _BLOCK)
            self.file.write(bytes(self.row_bytes * k))
            self.next += k

    def close(self) -> None:
        self._skip_to(self.n)
        self.file.close()


class _Progress:
    """One line per tenth of a large crop set written (never per crop)."""

    def __init__(self, name: str, total: int, report: Report | None) -> None:
        self.name, self.total, self.report, self.done = name, total, report, 0
        self.step = max(total // 10, 1) if total >= 10_000 else total + 1

    def __call__(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        if self.report and before // self.step != self.done // self.step:
            self.report(f"{self.name}: {self.done}/{self.total} crops")


def _build(
    target: Path,
    key: dict[str, Any],
    signature: dict[str, Any],
    plan: _Plan,
    side: int,
    fill: Callable[[_RowWriter, _Progress], list[int]],
    report: Report | None,
) -> CropSet:
    """The crop set at ``target`` if its signature matches, else written there: ``fill(images,
    progress)`` puts the crops row block by row block, in row order, and returns the rows it
    found no picture for (left black; their labels become sentinels: they are not served)."""
    from mmaffect.atomic import atomic_dir, remove_dead_temps

    cached = _open_crops(target, signature)
    if cached is not None:
        return cached
    if not len(plan):
        left = ", ".join(f"{n} {why}" for why, n in plan.skipped.items()) or "no labels"
        raise InputError(f"{key['name']}: no labelled frame has a face image ({left})")
    remove_dead_temps(target.parent)
    if report:
        report(f"{key['name']}: reading {len(plan)} face crops into {target} (once)")
    with atomic_dir(target) as tmp:
        images = _RowWriter(tmp / "images.npy", len(plan), side)
        try:
            bad = fill(images, _Progress(key["name"], len(plan), report))
        finally:
            images.close()
        expr, au, va = plan.expr.copy(), plan.au.copy(), plan.va.copy()
        expr[bad], au[bad], va[bad] = _EXPR_ABSENT, _AU_ABSENT, _VA_ABSENT
        group = np.repeat(np.arange(len(plan.groups)), np.diff(plan.starts))
        np.savez(tmp / "labels.npz", expr=expr, au=au, va=va, group=group, frames=plan.frames)
        skipped = {**plan.skipped, **({"unreadable": len(bad)} if bad else {})}
        meta = {**key, "signature": signature, "groups": plan.groups, "skipped": skipped}
        (tmp / "meta.json").write_text(json.dumps(meta))
    return _open_crops(target, signature)


def _try_read(path: Path | None, side: int) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return _read_rgb(path, side)
    except InputError:
        return None


def frame_folder_crops(
    frames_root: str | Path,
    labels: Any,
    cache_root: str | Path,
    size: int,
    *,
    stride: int = 1,
    name: str = "train",
    report: Report | None = None,
) -> CropSet:
    """The crops of Aff-Wild2 frame folders for their labelled frames, from the cache (decoded
    into it the first time, or when the labels or the frame files changed).

    Parameters
    ----------
    frames_root
        ``cropped_aligned``: one folder per labelled video, ``<video>/00001.jpg…`` (file
        ``NNNNN`` is label line ``NNNNN``, 0-based frame ``NNNNN - 1``).
    labels
        ``{video: VideoLabels}`` of one track, a list of them (one per track), or
        :class:`~mmaffect.annotations.MtlLabels`.
    cache_root, size
        Where crop caches live; the model's input side (crops are stored at it, or at the
        images' side if smaller: 112 for the organisers' crops).
    stride
        Every ``stride``-th labelled frame with an image, per video.
    name
        The split (names the cache folder and the messages).
    report
        Receives a line when the crops are decoded (and progress on large sets).

    Raises
    ------
    InputError
        A labelled video has no frame folder, or no labelled frame has an image.
    """
    from mmaffect.features.cache import config_hash

    root = Path(frames_root).resolve()
    if not root.is_dir():
        raise InputError(f"{root}: no such frame folder root", hint="--frames cropped_aligned")
    targets = video_targets(labels)
    missing = sorted(v for v in targets if not (root / v).is_dir())
    if missing:
        raise InputError(
            f"{root}: no frame folder for {len(missing)} labelled video(s): "
            + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""),
            hint="--frames must be the cropped_aligned folder these labels belong to",
        )  # fmt: skip
    files_sig = {"files": 0, "size": 0, "mtime_ns": 0}
    sample: list[Path] = []

    def select(vid: str, t: Any, annotated: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        from mmaffect.media.frame_folder import frame_files

        files = frame_files(root / vid)
        has = np.fromiter((int(f) in files for f in t.frames), bool, len(t.frames))
        rows = np.flatnonzero(annotated & has)[::stride]
        stats = [files[int(f)].stat() for f in t.frames[rows]]
        files_sig["files"] += len(stats)
        files_sig["size"] += sum(s.st_size for s in stats)
        files_sig["mtime_ns"] = max([files_sig["mtime_ns"], *(s.st_mtime_ns for s in stats)])
        if len(rows) and len(sample) < 200:
            sample.append(files[int(t.frames[rows[0]])])
        why = {
            "no frame file": int((annotated & ~has).sum()),
            "no label line": len(files) - int(has.sum()),
        }
        return rows, why

    plan = _plan(targets, select)
    side = _storage_side(sample, size) if sample else int(size)
    key = {
        "kind": "frame_folders", "source": str(root), "labels": _labels_origin(labels),
        "name": name, "side": side, "stride": int(stride), "version": 1,
    }  # fmt: skip
    signature = {**files_sig, "labels": plan.labels_hash()}
    target = Path(cache_root) / f"{name}-frames-{config_hash(key)[:12]}"
    return _build(target, key, signature, plan, side, _folder_filler(root, plan, side), report)


def _folder_filler(
    root: Path, plan: _Plan, side: int
) -> Callable[[_RowWriter, _Progress], list[int]]:
    """Reads the planned frame files (a few threads: JPEG decoding releases the GIL)."""

    def fill(images: _RowWriter, progress: _Progress) -> list[int]:
        from concurrent.futures import ThreadPoolExecutor
        from functools import partial

        from mmaffect.media.frame_folder import frame_files

        bad: list[int] = []
        read = partial(_try_read, side=side)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for g, vid in enumerate(plan.groups):
                files = frame_files(root / vid)
                rows = plan.rows(g)
                for start in range(0, len(rows), _BLOCK):
                    block = rows[start : start + _BLOCK]
                    paths = [files.get(int(plan.frames[r])) for r in block]
                    for r, crop in zip(block.tolist(), pool.map(read, paths), strict=True):
                        if crop is None:
                            bad.append(r)
                        else:
                            images.put([r], crop[None])
                    progress(len(block))
        return bad

    return fill


@dataclass
class _VideoSource:
    """A labelled video of the feature cache: where it is and its faces entry."""

    video_id: str
    path: Path  # the video file (or frame folder) the faces were found in
    entry: Path  # its faces entry
    meta: dict[str, Any]  # the entry's meta.json

    @property
    def n_frames(self) -> int:
        return int(self.meta["timing"]["n_frames"])


def _videos_in(folder: Path) -> dict[str, Path]:
    from mmaffect.media.inputs import discover

    return {s.id: s.path for s in discover([folder]) if s.has_video}


def _video_sources(
    cache: Any, vids: list[str], videos_dir: Path | None, wanted: str | None
) -> dict[str, _VideoSource]:
    """Each labelled video's faces entry and video: the one named in ``videos_dir`` (``<id>``,
    or ``<base id>`` for ``_left``/``_right``), else the path the entry recorded; its size must
    be the one the entry recorded."""
    from mmaffect.features.cache import META
    from mmaffect.media.frame_folder import split_subject
    from mmaffect.training.dataset import find_entries

    found = _videos_in(videos_dir) if videos_dir is not None else {}
    out = {}
    for vid in vids:
        entry = find_entries(cache, vid, ["faces"], {"faces": wanted} if wanted else None)["faces"]
        meta = json.loads((entry / META).read_text())
        recorded = meta.get("source") or {}
        if videos_dir is not None:
            path = found.get(vid) or found.get(split_subject(vid)[0])
            if path is None:
                raise InputError(
                    f"{vid}: no video of that name in {videos_dir}",
                    hint="--videos must hold the videos the feature cache was extracted from",
                )
        else:
            path = Path(recorded.get("path") or vid)
            if not recorded.get("path") or not path.exists():
                raise InputError(
                    f"{vid}: {path}, the video its faces were found in, is not there",
                    hint="pass the folder that holds the videos with --videos DIR",
                )
        if path.is_file() and recorded.get("size") not in (None, path.stat().st_size):
            raise InputError(
                f"{vid}: {path} is not the video its faces were found in "
                f"({path.stat().st_size} bytes, not {recorded['size']})",
                hint="give the video extract read, or run mmaffect extract on this one again",
            )
        out[vid] = _VideoSource(vid, path, entry, meta)
    return out


def video_crops(
    feature_cache: str | Path,
    labels: Any,
    cache_root: str | Path,
    size: int,
    crop: Any,
    *,
    videos: str | Path | None = None,
    stride: int = 1,
    name: str = "train",
    faces_config: str | None = None,
    report: Report | None = None,
) -> CropSet:
    """The face crops of labelled videos, cut where ``extract`` found the face, from the cache
    (cut into it the first time, or when the labels, faces or videos changed).

    Parameters
    ----------
    feature_cache
        The cache ``mmaffect extract`` wrote: each labelled video's ``faces`` entry (``box``,
        ``landmarks``, ``found`` per frame) and the path of the video it read.
    labels
        As :func:`frame_folder_crops` takes them.
    cache_root, size
        Where crop caches live; the side crops are cut at (the model's input side).
    crop
        The :class:`~mmaffect.faces.crops.FaceCrop` of the model.
    videos
        A folder holding the videos (searched recursively; by default the path each faces
        entry recorded).
    stride, name, report
        As in :func:`frame_folder_crops`.
    faces_config
        The faces entry's config hash when the cache holds several.

    Raises
    ------
    InputError
        A labelled video without a faces entry, a video that is not there or not the one
        extracted, labels that do not fit its frame count, or no labelled frame with a face.
    """
    from mmaffect.features.cache import FeatureCache, config_hash

    cache = FeatureCache(Path(feature_cache).resolve())
    if not cache.root.is_dir():
        raise InputError(f"{cache.root}: no such feature cache", hint="--cache FEATURE_CACHE")
    if videos is not None and not Path(videos).is_dir():
        raise InputError(f"{videos}: no such video folder", hint="--videos DIR")
    targets = video_targets(labels)
    sources = _video_sources(cache, sorted(targets), videos and Path(videos), faces_config)

    def select(vid: str, t: Any, annotated: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        src = sources[vid]
        _check_label_count(vid, t, src.n_frames)
        inside = t.frames < src.n_frames
        face = np.zeros(len(t.frames), bool)
        face[inside] = np.load(src.entry / "found.npy")[t.frames[inside]]
        rows = np.flatnonzero(annotated & face)[::stride]
        return rows, {
            "past the video's end": int((annotated & ~inside).sum()),
            "no face": int((annotated & inside & ~face).sum()),
        }

    plan = _plan(targets, select)
    key = {
        "kind": "video_crops", "source": str(cache.root), "labels": _labels_origin(labels),
        "name": name, "crop": crop.to_dict(), "side": int(size), "stride": int(stride),
        "version": 1,
    }  # fmt: skip
    signature = {
        "labels": plan.labels_hash(),
        "faces": {v: [s.entry.name, s.meta.get("created")] for v, s in sources.items()},
        "videos": {v: _file_signature(s.path) for v, s in sources.items()},
    }
    target = Path(cache_root) / f"{name}-videos-{config_hash(key)[:12]}"
    fill = _video_filler(sources, plan, int(size), crop, report)
    return _build(target, key, signature, plan, int(size), fill, report)


def _file_signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _check_label_count(vid: str, t: Any, n_frames: int, tolerance: int = 2) -> None:
    """The window dataset's rule: labels and video may differ by ``tolerance`` frames (the
    ABAW3 "count + 1" rule); labels past the end are left out."""
    excess = t.label_count - n_frames
    if excess > tolerance or (not t.sampled_rows and -excess > tolerance):
        raise InputError(
            f"{vid}: the labels cover {t.label_count} frames but the video has {n_frames} "
            f"(more than {tolerance} apart)",
            hint="check that the labels and the extracted video belong together",
        )


def _video_filler(
    sources: dict[str, _VideoSource], plan: _Plan, side: int, crop: Any, report: Report | None
) -> Callable[[_RowWriter, _Progress], list[int]]:
    """Decodes each video once, cutting the planned frames' faces as they go by."""

    def fill(images: _RowWriter, progress: _Progress) -> list[int]:
        bad: list[int] = []
        for g, vid in enumerate(plan.groups):
            rows = plan.rows(g)
            done, error = _cut_video(
                sources[vid], plan.frames[rows], rows, images, side, crop, progress
            )
            if not done.all() and report:
                report(f"{vid}: {int((~done).sum())} labelled frames left out: {error}")
            bad += rows[~done].tolist()
        return bad

    return fill


def _cut_video(
    src: _VideoSource,
    frames: np.ndarray,
    rows: np.ndarray,
    images: _RowWriter,
    side: int,
    crop: Any,
    progress: _Progress,
) -> tuple[np.ndarray, str | None]:
    """Cut ``frames`` (ascending) of one video into ``rows`` of ``images``: which were cut, and why
    decoding stopped short (a damaged video keeps the frames decoded before the damage)."""
    from fractions import Fraction

    from mmaffect.errors import MediaError
    from mmaffect.media.inputs import discover
    from mmaffect.media.source import open_source

    fps = Fraction(src.meta["timing"]["fps"]).limit_denominator(1001)
    opened = open_source(discover([src.path], fps=fps)[0])
    if opened.frame_count != src.n_frames:
        raise InputError(
            f"{src.video_id}: {src.path} has {opened.frame_count} frames, its faces entry "
            f"{src.n_frames}",
            hint="give the video extract read, or run mmaffect extract on this one again",
        )
    boxes = np.load(src.entry / "box.npy", mmap_mode="r")
    landmarks = np.load(src.entry / "landmarks.npy", mmap_mode="r")
    done, error = np.zeros(len(frames), bool), None
    chunks = opened.frames(chunk_size=32)
    try:
        for chunk in chunks:
            pos = np.minimum(np.searchsorted(frames, chunk.indices), len(frames) - 1)
            local = np.flatnonzero(frames[pos] == chunk.indices)
            if len(local):
                f, p = chunk.indices[local], pos[local]
                images.put(rows[p], crop.cut(chunk.images, boxes[f], landmarks[f], local, side))
                done[p] = True
                progress(len(local))
            if chunk.indices[-1] >= frames[-1]:
                break
    except MediaError as e:
        error = e.one_line()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return done, error


def _open_crops(path: Path, signature: dict[str, Any]) -> CropSet | None:
    """The cached crops at ``path`` if complete and made from the same files, else None."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("signature") != signature:
        return None
    labels = np.load(path / "labels.npz")
    if "group" in labels:  # frame folders, videos
        groups, group, frames = list(meta["groups"]), labels["group"], labels["frames"]
        files = None
    else:  # class folders: a group per class folder, the file names in meta.json
        uniques, group = np.unique(np.array(meta["ids"], dtype=str), return_inverse=True)
        groups, files = uniques.tolist(), list(meta["names"])
        frames = np.arange(len(files), dtype=np.int64)
    return CropSet(
        images=np.load(path / "images.npy", mmap_mode="r"),
        expr=labels["expr"],
        au=labels["au"],
        va=labels["va"],
        groups=groups,
        group=group.astype(np.int64),
        frames=frames.astype(np.int64),
        path=path,
        files=files,
        skipped=dict(meta.get("skipped", {})),
    )


class ImageDataset(Dataset):
    """Items of a :class:`CropSet` for :class:`~mmaffect.training.module.AffectModule`:
    ``feat_image`` (uint8 ``(S, S, 3)``), ``expr``, ``au``, ``va`` (sentinels where unknown),
    ``video_id`` (the crop's group) and ``frame`` (its frame; class folders: its row).

    Rows whose labels are all sentinels (an unreadable image) are not served; ``expr`` and
    ``au`` are the served rows' labels (what class-balanced sampling weighs). The memory map is
    opened again in a worker process that receives the dataset pickled (spawn)."""

    videos: tuple = ()  # no feature-cache entries behind these samples

    def __init__(self, crops: CropSet) -> None:
        self.crops = crops
        self.rows = np.flatnonzero(_annotated(crops.expr, crops.au, crops.va))
        self.expr, self.au, self.va = (
            crops.expr[self.rows],
            crops.au[self.rows],
            crops.va[self.rows],
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["crops"] = dataclasses.replace(self.crops, images=None)  # not the pixels
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        crops = self.crops
        if crops.images is None:
            crops.images = np.load(crops.path / "images.npy", mmap_mode="r")
        row = int(self.rows[i])
        return {
            "feat_image": torch.from_numpy(np.array(crops.images[row])),
            "expr": torch.tensor(self.expr[i]),
            "au": torch.from_numpy(self.au[i]),
            "va": torch.from_numpy(self.va[i]),
            "video_id": crops.groups[int(crops.group[row])],
            "frame": torch.tensor(int(crops.frames[row])),
        }

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.expr[self.expr >= 0], minlength=len(EXPR_8.names))
        return {
            "samples": len(self),
            "crops": str(self.crops.path),
            "skipped": dict(self.crops.skipped),
            "expr_counts": dict(zip(EXPR_8.names, counts.tolist(), strict=True)),
        }
