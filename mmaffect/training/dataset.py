"""Windows of cached features around labelled frames, for training the fusion model.

One sample is one labelled frame ``f`` of one video: the features of frames
``f - T//2 … f - T//2 + T - 1`` of every modality, read from the feature cache through
read-only memory maps, and the frame's targets. Rules and decisions: ``docs/training_dataset.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate

from mmaffect.annotations import AU_12, MtlLabels, VideoLabels
from mmaffect.errors import InputError
from mmaffect.features.cache import BLOCK_ROWS, META, FeatureCache, release_pages
from mmaffect.media.frame_folder import split_subject

MODALITIES = ("frame", "clip", "speech", "word")
AUDIO_MODALITIES = ("speech", "word")
EXPR_ABSENT = -1
AU_ABSENT = -1.0
VA_ABSENT = -5.0

LabelsArg = (
    Mapping[str, VideoLabels] | MtlLabels | Sequence[Mapping[str, VideoLabels]] | Sequence[str]
)


# --------------------------------------------------------------------------------------------
# Finding entries
# --------------------------------------------------------------------------------------------


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if meta.get("complete") else None


def _candidates(cache: FeatureCache, video_id: str, extractor: str) -> list[tuple[Path, dict]]:
    """Complete entries of one extractor for one video, oldest first (``created``, then name)."""
    found = []
    for folder in cache.entries(video_id):
        if not folder.name.startswith(f"{extractor}-"):
            continue
        meta = _read_meta(folder)
        if meta is not None and meta.get("extractor", extractor) == extractor:
            found.append((folder, meta))
    return sorted(found, key=lambda fm: (str(fm[1].get("created", "")), fm[0].name))


def _pick(candidates: list[tuple[Path, dict]], wanted_hash: str | None) -> tuple[Path, dict] | None:
    if wanted_hash is None:
        return candidates[-1] if candidates else None
    for folder, meta in candidates:
        full = str(meta.get("config_hash", ""))
        if full.startswith(wanted_hash) or wanted_hash.startswith(folder.name.split("-", 1)[1]):
            return folder, meta
    return None


def _missing(cache: FeatureCache, video_id: str, modality: str, wanted_hash: str | None) -> str:
    which = f"{modality!r} features" + (f" with config {wanted_hash}" if wanted_hash else "")
    return f"{video_id}: no complete {which} in the feature cache {cache.root}"


def find_entries(
    cache: FeatureCache | str | Path,
    video_id: str,
    modalities: Iterable[str],
    configs: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """The cache entry folder of each requested modality of a video.

    Parameters
    ----------
    cache
        The feature cache (or its root folder).
    video_id
        The labelled video's id, ``_left``/``_right`` kept.
    modalities
        Extractor names among ``frame``, ``clip``, ``speech``, ``word`` (``faces`` also works).
    configs
        Optional ``{modality: config_hash}`` (full hash or a prefix of at least 12 characters,
        the entry folder's suffix) choosing one configuration when several exist. Without it the
        newest complete entry is taken: entries sorted by ``created`` in ``meta.json``, then by
        folder name, last one wins (deterministic, no warning).

    Returns
    -------
    dict
        ``{modality: entry folder}`` in the order asked.

    Raises
    ------
    InputError
        An entry is missing; the message names the video, the modality and the
        ``mmaffect extract`` command that makes it.

    Notes
    -----
    ``speech`` and ``word`` of ``<video>_left``/``_right`` are looked up under the subject's own
    id (where ``mmaffect extract`` writes them) and, when that has none, under the base id.
    """
    cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    configs = dict(configs or {})
    out: dict[str, Path] = {}
    for modality in modalities:
        wanted = configs.get(modality)
        ids = [video_id]
        base, subject = split_subject(video_id)
        if modality in AUDIO_MODALITIES and subject is not None:
            ids.append(base)
        chosen = None
        for vid in ids:
            chosen = _pick(_candidates(cache, vid, modality), wanted)
            if chosen is not None:
                break
        if chosen is None:
            raise InputError(
                _missing(cache, video_id, modality, wanted),
                hint=f"make it with: mmaffect extract <video {video_id}> --cache {cache.root} "
                f"--modalities {modality}",
            )
        out[modality] = chosen[0]
    return out


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class _VideoTargets:
    """Targets of one video on its labelled rows (frame indices, not necessarily contiguous)."""

    frames: np.ndarray  # (n,) int64
    expr: np.ndarray  # (n,) int64, -1 absent
    au: np.ndarray  # (n, n_au) float32, -1 absent
    va: np.ndarray  # (n, 2) float32, -5 absent
    label_count: int  # frames the labels cover (per-video files: their line count)
    sampled_rows: bool = False  # MTL: rows are a sample of frames, not every frame


def _au_size(labels: LabelsArg) -> int:
    if isinstance(labels, MtlLabels):
        return AU_12.size
    tracks = [labels] if isinstance(labels, Mapping) else list(labels)
    for track in tracks:
        for v in track.values():
            if v.track == "AU":
                return v.space.size
    return AU_12.size


def _targets_from_files(
    per_track: Sequence[Mapping[str, VideoLabels]], n_au: int
) -> dict[str, _VideoTargets]:
    videos: dict[str, list[VideoLabels]] = {}
    for track in per_track:
        for vid, lab in track.items():
            videos.setdefault(vid, []).append(lab)
    out = {}
    for vid, labs in videos.items():
        seen = [lab.track for lab in labs]
        if len(set(seen)) != len(seen):
            raise InputError(f"{vid}: labels of one track given twice ({', '.join(seen)})")
        n = max(lab.num_frames for lab in labs)
        expr = np.full(n, EXPR_ABSENT, np.int64)
        au = np.full((n, n_au), AU_ABSENT, np.float32)
        va = np.full((n, 2), VA_ABSENT, np.float32)
        for lab in labs:
            m, k = lab.mask, lab.num_frames
            if lab.track == "EXPR":
                expr[:k] = np.where(m, lab.values, EXPR_ABSENT)
            elif lab.track == "AU":
                if lab.space.size != n_au:
                    raise InputError(f"{vid}: AU labels with {lab.space.size} units, not {n_au}")
                au[:k] = np.where(m, lab.values, AU_ABSENT)
            else:
                va[:k] = np.where(m[:, None], lab.values, VA_ABSENT)
        out[vid] = _VideoTargets(np.arange(n, dtype=np.int64), expr, au, va, n)
    return out


def _targets_from_mtl(mtl: MtlLabels) -> dict[str, _VideoTargets]:
    out = {}
    for vid, rows in mtl.by_video().items():
        order = np.argsort(rows.frames, kind="stable")
        rows = rows.subset(order)
        out[vid] = _VideoTargets(
            frames=rows.frames.astype(np.int64),
            expr=np.where(rows.expr_mask, rows.expr, EXPR_ABSENT).astype(np.int64),
            au=np.where(rows.au_mask, rows.au, AU_ABSENT).astype(np.float32),
            va=np.where(rows.va_mask[:, None], rows.va, VA_ABSENT).astype(np.float32),
            label_count=int(rows.frames.max()) + 1,
            sampled_rows=True,
        )
    return out


def _every_frame(n: int, n_au: int) -> _VideoTargets:
    """Every frame of an unlabelled video, targets absent (prediction)."""
    return _VideoTargets(
        frames=np.arange(n, dtype=np.int64),
        expr=np.full(n, EXPR_ABSENT, np.int64),
        au=np.full((n, n_au), AU_ABSENT, np.float32),
        va=np.full((n, 2), VA_ABSENT, np.float32),
        label_count=n,
    )


def _annotated(t: _VideoTargets) -> np.ndarray:
    return (t.expr != EXPR_ABSENT) | (t.au != AU_ABSENT).any(axis=1) | (t.va != VA_ABSENT).all(1)


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


@dataclass
class _VideoSource:
    video_id: str
    n_frames: int
    entries: dict[str, Path]  # modality -> entry folder
    faces: Path | None  # faces entry, for has_face, if any
    arrays: dict[str, list[str]] = field(default_factory=dict)  # entry arrays to open


#: Items read between two releases of the memory-mapped rows read (:func:`release_pages`):
#: without it a pass over a long video keeps every feature row it read resident.
RELEASE_EVERY = 256


class WindowDataset(Dataset):
    """Windows of cached features centred on labelled frames.

    Parameters
    ----------
    cache
        Feature cache root (or a :class:`FeatureCache`).
    labels
        ``{video_id: VideoLabels}`` of one track; a sequence of such dicts, one per track (EXPR,
        AU, VA) for multi-task training from uni-task folders; an :class:`MtlLabels`; or a list
        of video ids: every frame of those videos, targets absent (for prediction).
    modalities
        Extractors whose ``values`` make the inputs (``frame``, ``clip``, ``speech``, ``word``).
    window
        ``T``, frames per window (60 as in the authors' code). Frame ``f``'s window is
        ``f - T//2 … f - T//2 + T - 1``; frames outside the video repeat the edge frame.
    stride
        Every ``stride``-th sampled frame of each video is kept (1: every labelled frame).
    configs
        ``{modality: config_hash}`` choosing an entry when several exist (:func:`find_entries`).
    tolerance
        Largest accepted difference, in frames, between the label count and the feature frame
        count (the ABAW3 "count + 1" rule). Label frames past the features are dropped and
        counted in :meth:`summary`; a larger difference is an :class:`InputError`.

    Notes
    -----
    Item ``i`` is a dict: ``feat_<modality>`` ``(T, D_m)`` float32 (prefixed: the ``frame``
    modality would clash with the ``frame`` index); ``mask_<modality>`` ``(T,)``
    bool, False on padded frames and, for ``frame``/``clip``, where the entry's ``valid`` is
    False (``speech`` and ``word`` rows are always kept: their zeros mean silence / no word);
    ``expr`` int64 (-1 absent); ``au`` ``(n_au,)`` float32 (-1 absent); ``va`` ``(2,)``
    float32 (-5 absent); ``has_face`` bool of the middle frame (``faces`` entry ``found``, else
    the ``frame``/``clip`` entry's ``valid``, else True); ``video_id`` str; ``frame`` int64.

    A frame is sampled when at least one of its targets is annotated; frames where every
    target is a sentinel are skipped (counted in :meth:`summary`), the other targets of a
    partly annotated frame (several tracks, MTL) stay at their sentinel.

    Memory maps are opened lazily, per process, on first use: a dataset can be handed to a
    ``DataLoader`` with worker processes (forked or spawned) safely. The rows read are
    dropped from the process every :data:`RELEASE_EVERY` items, so a pass over a long video
    does not keep its features resident.
    """

    def __init__(
        self,
        cache: FeatureCache | str | Path,
        labels: LabelsArg,
        modalities: Sequence[str] = MODALITIES,
        *,
        window: int = 60,
        stride: int = 1,
        configs: Mapping[str, str] | None = None,
        tolerance: int = 2,
    ):
        if window < 1 or stride < 1:
            raise ValueError("window and stride must be at least 1")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise InputError(f"unknown modalities {unknown}: choose among {', '.join(MODALITIES)}")
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.modalities = tuple(modalities)
        self.window, self.stride, self.tolerance = int(window), int(stride), int(tolerance)
        unlabelled = isinstance(labels, (list, tuple)) and all(isinstance(v, str) for v in labels)
        self.n_au = AU_12.size if unlabelled else _au_size(labels)
        if unlabelled:
            targets = {vid: None for vid in labels}
        elif isinstance(labels, MtlLabels):
            targets = _targets_from_mtl(labels)
        elif isinstance(labels, Mapping):
            targets = _targets_from_files([labels], self.n_au)
        else:
            targets = _targets_from_files(list(labels), self.n_au)

        self.videos: list[_VideoSource] = []
        self._dropped_past_end: dict[str, int] = {}
        self._dropped_unannotated: dict[str, int] = {}
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("vi", "frame", "expr", "au", "va")}
        for vid in sorted(targets):
            src = self._open_video(vid, configs)
            n = src.n_frames
            t = targets[vid] or _every_frame(n, self.n_au)
            excess = t.label_count - n
            too_many = excess > self.tolerance
            too_few = not t.sampled_rows and -excess > self.tolerance
            if too_many or too_few:
                raise InputError(
                    f"{vid}: the labels cover {t.label_count} frames but the features have "
                    f"{n} frames (more than {self.tolerance} apart)",
                    hint="check that the labels and the extracted video belong together, "
                    "or raise tolerance",
                )
            inside = t.frames < n
            self._dropped_past_end[vid] = int((~inside).sum())
            annotated = np.ones(len(t.frames), bool) if unlabelled else _annotated(t)
            self._dropped_unannotated[vid] = int((inside & ~annotated).sum())
            rows = np.flatnonzero(inside & annotated)[:: self.stride]
            vi = len(self.videos)
            self.videos.append(src)
            parts["vi"].append(np.full(len(rows), vi, np.int64))
            parts["frame"].append(t.frames[rows])
            parts["expr"].append(t.expr[rows])
            parts["au"].append(t.au[rows])
            parts["va"].append(t.va[rows])
        empty = {"vi": (0,), "frame": (0,), "expr": (0,), "au": (0, self.n_au), "va": (0, 2)}
        cat = {k: np.concatenate(v) if v else np.zeros(empty[k]) for k, v in parts.items()}
        self._video_index = cat["vi"].astype(np.int64)
        self.frames = cat["frame"].astype(np.int64)
        self.expr = cat["expr"].astype(np.int64)
        self.au = cat["au"].astype(np.float32).reshape(-1, self.n_au)
        self.va = cat["va"].astype(np.float32).reshape(-1, 2)
        self._arrays: dict[tuple[int, str, str], np.ndarray] = {}
        self._pid = os.getpid()
        self._reads = 0

    # ---------------------------------------------------------------- setup
    def _open_video(self, vid: str, configs: Mapping[str, str] | None) -> _VideoSource:
        entries = find_entries(self.cache, vid, self.modalities, configs)
        wanted_faces = (configs or {}).get("faces")
        counts = {}
        arrays: dict[str, list[str]] = {}
        for m, folder in entries.items():
            meta = json.loads((folder / META).read_text())
            # the faces entry the frame/clip features were computed from
            wanted_faces = wanted_faces or (meta.get("config") or {}).get("faces")
            counts[m] = int(meta["timing"]["n_frames"])
            names = ["values"] + (["valid"] if "valid" in meta["arrays"] else [])
            if "values" not in meta["arrays"]:
                raise InputError(f"{vid}: the {m!r} entry {folder} has no 'values' array")
            arrays[m] = names
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{m} {c}" for m, c in counts.items())
            raise InputError(
                f"{vid}: the modalities have different frame counts ({detail})",
                hint="re-extract them from the same video with mmaffect extract",
            )
        faces = _candidates(self.cache, vid, "faces")
        faces_pick = _pick(faces, wanted_faces) if faces else None
        return _VideoSource(
            vid, next(iter(counts.values())), entries, faces_pick[0] if faces_pick else None, arrays
        )

    # ---------------------------------------------------------------- lazy arrays
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # memory maps are reopened in the receiving process
        return state

    def _array(self, vi: int, modality: str, name: str) -> np.ndarray:
        if self._pid != os.getpid():  # forked worker: drop the parent's maps
            self._arrays, self._pid = {}, os.getpid()
        key = (vi, modality, name)
        arr = self._arrays.get(key)
        if arr is None:
            src = self.videos[vi]
            folder = src.faces if modality == "faces" else src.entries[modality]
            arr = np.load(folder / f"{name}.npy", mmap_mode="r")
            self._arrays[key] = arr
        return arr

    # ---------------------------------------------------------------- items
    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def window_indices(self, frame: Any, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of frame ``frame``'s window (edges repeated) and which rows are real
        (``frame`` may be a ``(B, 1)`` array: then ``(B, T)`` of each)."""
        raw = frame - self.window // 2 + np.arange(self.window)
        return np.clip(raw, 0, n_frames - 1), (raw >= 0) & (raw < n_frames)

    def _has_face(self, vi: int, frame: int) -> bool:
        src = self.videos[vi]
        if src.faces is not None:
            return bool(self._array(vi, "faces", "found")[frame])
        for m in ("frame", "clip"):
            if m in src.entries and "valid" in src.arrays[m]:
                return bool(self._array(vi, m, "valid")[frame])
        return True

    def __getitem__(self, i: int) -> dict[str, Any]:
        vi, f = int(self._video_index[i]), int(self.frames[i])
        src = self.videos[vi]
        idx, real = self.window_indices(f, src.n_frames)
        item: dict[str, Any] = {}
        for m in self.modalities:
            values = np.asarray(self._array(vi, m, "values")[idx], dtype=np.float32)
            mask = real.copy()
            if m in ("frame", "clip") and "valid" in src.arrays[m]:
                mask &= np.asarray(self._array(vi, m, "valid")[idx], dtype=bool)
            item[f"feat_{m}"] = torch.from_numpy(values)
            item[f"mask_{m}"] = torch.from_numpy(mask)
        item["expr"] = torch.tensor(int(self.expr[i]), dtype=torch.int64)
        item["au"] = torch.from_numpy(self.au[i].copy())
        item["va"] = torch.from_numpy(self.va[i].copy())
        item["has_face"] = torch.tensor(self._has_face(vi, f))
        item["video_id"] = src.video_id
        item["frame"] = torch.tensor(f, dtype=torch.int64)
        self._count_reads(1)
        return item

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any] | list[dict[str, Any]]:
        """A whole batch at once (``DataLoader`` calls this with a batch's indices): each
        video's windows gathered with one index array per modality instead of item by item,
        the same batch as :func:`collate` of the items. Subclasses with items of their own and
        a replaced :meth:`window_indices` get the items."""
        if not self.standard_windows():
            return [self[i] for i in indices]
        ids = np.asarray(indices, dtype=np.int64)
        batch = self._batch_features(ids)
        vis, frames = self._video_index[ids], self.frames[ids]
        batch["expr"] = torch.from_numpy(self.expr[ids].astype(np.int64))
        batch["au"] = torch.from_numpy(self.au[ids])
        batch["va"] = torch.from_numpy(self.va[ids])
        batch["has_face"] = torch.tensor(
            [self._has_face(int(v), int(f)) for v, f in zip(vis, frames, strict=True)]
        )
        batch["video_id"] = [self.videos[v].video_id for v in vis]
        batch["frame"] = torch.from_numpy(frames.astype(np.int64))
        self._count_reads(len(ids))
        return batch

    def _batch_features(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """``feat_<m>`` ``(B, T, D)`` and ``mask_<m>`` ``(B, T)`` of samples ``ids``."""
        vis, frames = self._video_index[ids], self.frames[ids]
        feats: dict[str, np.ndarray] = {}
        masks = {m: np.zeros((len(ids), self.window), bool) for m in self.modalities}
        for vi in np.unique(vis).tolist():
            rows, src = np.flatnonzero(vis == vi), self.videos[vi]
            idx, real = self.window_indices(frames[rows, None], src.n_frames)  # (rows, T)
            for m in self.modalities:
                values = self._array(vi, m, "values")
                if m not in feats:
                    feats[m] = np.empty((len(ids), self.window, values.shape[1]), np.float32)
                feats[m][rows] = values[idx]
                mask = real.copy()
                if m in ("frame", "clip") and "valid" in src.arrays[m]:
                    mask &= np.asarray(self._array(vi, m, "valid")[idx], dtype=bool)
                masks[m][rows] = mask
        batch: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            batch[f"feat_{m}"] = torch.from_numpy(feats[m])
            batch[f"mask_{m}"] = torch.from_numpy(masks[m])
        return batch

    def device_batches(self, batch_size: int, device: str) -> Iterator[dict[str, Any]]:
        """Every sample in order, in batches cut on ``device`` from one tensor per video and
        array: each video's rows are copied there once (about 9 KB per frame for the four
        branches), then each batch's windows are gathered there, so the host copies rows, not
        windows (``T`` times fewer). For a GPU, whose memory holds a video's rows; on the CPU
        it would hold them in memory. Batches hold ``feat_<m>``, ``mask_<m>``, ``frame`` and
        ``video_id`` (no targets), the same values as the loader's (tested)."""
        if not self.standard_windows():
            raise TypeError("device_batches cuts the standard windows only")
        offsets = torch.arange(self.window, device=device) - self.window // 2
        for vi in np.unique(self._video_index).tolist():
            rows = np.flatnonzero(self._video_index == vi)
            on_device = self._video_on_device(vi, device)
            for start in range(0, len(rows), batch_size):
                frames = torch.from_numpy(self.frames[rows[start : start + batch_size]])
                raw = frames.to(device)[:, None] + offsets
                real = (raw >= 0) & (raw < self.videos[vi].n_frames)
                idx = raw.clamp(0, self.videos[vi].n_frames - 1)
                batch: dict[str, Any] = {
                    "frame": frames,
                    "video_id": [self.videos[vi].video_id] * len(frames),
                }
                for m in self.modalities:
                    batch[f"feat_{m}"] = on_device[m][idx]
                    valid = on_device.get(f"valid_{m}")
                    batch[f"mask_{m}"] = real if valid is None else real & valid[idx]
                yield batch
            self._count_reads(len(rows))

    def _video_on_device(self, vi: int, device: str) -> dict[str, torch.Tensor]:
        """``{modality: (n_frames, D) float32, "valid_<m>": (n_frames,) bool}`` on ``device``."""
        out = {}
        for m in self.modalities:
            out[m] = _to_device(self._array(vi, m, "values"), device, np.float32)
            if m in ("frame", "clip") and "valid" in self.videos[vi].arrays[m]:
                out[f"valid_{m}"] = _to_device(self._array(vi, m, "valid"), device, bool)
        return out

    def standard_windows(self) -> bool:
        """Items are this class's and windows the standard rule's: batches can be cut whole
        (a subclass with items of its own, or a replaced :meth:`window_indices`, cannot)."""
        own_items = type(self).__getitem__ is WindowDataset.__getitem__
        return own_items and "window_indices" not in vars(self)

    def _count_reads(self, n: int) -> None:
        """Release the rows read every :data:`RELEASE_EVERY` items (they stay in the page
        cache, not in this process)."""
        before, self._reads = self._reads, self._reads + n
        if before // RELEASE_EVERY != self._reads // RELEASE_EVERY:
            for arr in self._arrays.values():
                release_pages(arr)

    # ---------------------------------------------------------------- report
    def summary(self) -> dict[str, Any]:
        """What was sampled and dropped, and which cache entries were used.

        Returns
        -------
        dict
            ``videos``, ``samples``, ``window``, ``stride``; ``dropped_past_end`` (label frames
            past the last feature frame, the "count + 1" rule) and ``dropped_unannotated``
            (frames with every target at its sentinel), each ``{"total": n, "per_video": …}``;
            ``entries`` ``{video_id: {modality: entry folder name}}``.
        """

        def counted(d: dict[str, int]) -> dict[str, Any]:
            return {"total": sum(d.values()), "per_video": {k: v for k, v in d.items() if v}}

        return {
            "videos": len(self.videos),
            "samples": len(self),
            "window": self.window,
            "stride": self.stride,
            "dropped_past_end": counted(self._dropped_past_end),
            "dropped_unannotated": counted(self._dropped_unannotated),
            "entries": {s.video_id: {m: p.name for m, p in s.entries.items()} for s in self.videos},
        }


# --------------------------------------------------------------------------------------------
# Sampling and loading
# --------------------------------------------------------------------------------------------


def sample_weights(dataset: WindowDataset, track: str = "expr") -> np.ndarray:
    """Per-sample weights for class-balanced sampling (see :func:`class_balanced_sampler`)."""
    track = track.lower()
    if track == "expr":
        y = dataset.expr
        weights = np.zeros(len(y), np.float64)
        known = y >= 0
        if known.any():
            counts = np.bincount(y[known])
            weights[known] = 1.0 / counts[y[known]]
        return weights
    if track == "au":
        positive = dataset.au == 1.0
        freq = positive.sum(axis=0).astype(np.float64)  # positives per unit
        inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1.0), 0.0)
        weights = (positive * inv[None, :]).max(axis=1) if len(positive) else np.zeros(0)
        annotated = (dataset.au != AU_ABSENT).any(axis=1)
        none = annotated & ~positive.any(axis=1)
        if none.any():
            weights[none] = 1.0 / none.sum()
        return weights
    raise ValueError(f"class-balanced sampling needs track 'expr' or 'au', not {track!r}")


def class_balanced_sampler(
    dataset: WindowDataset,
    track: str = "expr",
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler drawing samples with weights that balance the classes of one track.

    Parameters
    ----------
    dataset
        The dataset whose targets are balanced.
    track
        ``"expr"``: weight ∝ 1 / count of the sample's class; samples without an EXPR label get
        weight 0. ``"au"``: weight ∝ 1 / number of positives of the *rarest* AU the sample has
        positive; samples with every annotated AU negative form one more group, weight
        1 / its size; samples without AU labels get weight 0.
    num_samples
        Draws per epoch (default: ``len(dataset)``), with replacement.
    generator
        Seeded generator for reproducible draws.

    Returns
    -------
    torch.utils.data.WeightedRandomSampler
    """
    weights = sample_weights(dataset, track)
    if not (weights > 0).any():
        raise InputError(f"no sample has a {track} label to balance")
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=num_samples or len(dataset),
        replacement=True,
        generator=generator,
    )


def _to_device(arr: np.ndarray, device: str, dtype: Any) -> torch.Tensor:
    """A memory-mapped array as a tensor on ``device``, copied over in blocks of rows (the
    host holds one block at a time)."""
    out = torch.empty(arr.shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype, device=device)
    for start in range(0, len(arr), BLOCK_ROWS):
        block = np.array(arr[start : start + BLOCK_ROWS], dtype=dtype)
        out[start : start + len(block)] = torch.from_numpy(block)
    release_pages(arr)
    return out


def collate(items: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Stack items into a batch: tensors stacked, ``video_id`` a list of str (a batch that
    :meth:`WindowDataset.__getitems__` made whole is passed on as it is)."""
    return items if isinstance(items, dict) else default_collate(items)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def make_loader(
    dataset: WindowDataset,
    batch_size: int = 32,
    shuffle: bool = True,
    balanced: str | None = None,
    num_workers: int = 0,
    seed: int = 0,
    **kwargs: Any,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose order depends only on ``seed``.

    Parameters
    ----------
    dataset
        The dataset.
    batch_size
        Samples per batch.
    shuffle
        Random order (ignored when ``balanced`` is given: the sampler draws at random).
    balanced
        ``"expr"`` or ``"au"``: draw with :func:`class_balanced_sampler` of that track.
    num_workers
        Worker processes; batches are the same for any number of workers.
    seed
        Seeds the loader's generator (order, balanced draws, worker seeds).
    **kwargs
        Passed on to ``DataLoader`` (``pin_memory``, ``drop_last``, …).

    Returns
    -------
    torch.utils.data.DataLoader
    """
    generator = torch.Generator().manual_seed(int(seed))
    sampler = None
    if balanced:
        sampler = class_balanced_sampler(dataset, balanced, generator=generator)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers else None,
        **kwargs,
    )
