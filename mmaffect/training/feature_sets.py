"""Named feature sets: several visual (or other) feature sets of the cache as a model's inputs.

The affine-module model of seed 001 maps *each feature set* to a common width; several sets may
come from one branch of the cache: the frame entries of the ImageNet backbone and of a trained
face model are both ``frame`` entries, the expression features and the blendshapes are columns
of the ``clip`` entry. A feature set names where its values are:

=====================  ========  ==========================================================
name                   entry     what
=====================  ========  ==========================================================
``imagenet``           frame     the ImageNet backbone (``--frame-backbone efficientnet_lite0``)
``face_cnn``           frame     a face model as the frame branch (the default, ``--frame-model``)
``expression``         clip      the expression net's features (``expr_feat_*``)
``expression_probs``   clip      its class probabilities (``p_*``)
``blendshapes``        clip      the 52 MediaPipe blendshapes (``bs_*``)
``head_pose``          clip      yaw, pitch, roll
``speech``             speech    MFCC, pitch, energy
``word``               word      the word vectors
=====================  ========  ==========================================================

:class:`FeatureSetWindows` serves them as the windows of
:class:`~mmaffect.training.dataset.WindowDataset` do (``feat_<set>``, ``mask_<set>`` and the
targets), one window dataset per cache entry behind them; ``mmaffect train --features
face_cnn,imagenet,blendshapes`` (or the config key ``features``) trains on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mmaffect.errors import InputError
from mmaffect.features.cache import META, FeatureCache

__all__ = ["FEATURE_SETS", "FeatureSet", "FeatureSetWindows", "check_feature_sets"]


@dataclass(frozen=True)
class FeatureSet:
    """Where a feature set is: the extractor of its entry, which entries, which columns."""

    extractor: str
    about: str
    entry: Callable[[Mapping[str, Any]], bool] = lambda config: True  # by the entry's config
    columns: Callable[[str], bool] | None = None  # by column name; None: every column


FEATURE_SETS: dict[str, FeatureSet] = {
    "imagenet": FeatureSet(
        "frame", "frame entry of the ImageNet backbone", lambda c: c.get("model") is None
    ),
    "face_cnn": FeatureSet(
        "frame", "frame entry of a trained face model", lambda c: c.get("model") is not None
    ),
    "expression": FeatureSet(
        "clip", "expression features", columns=lambda n: n.startswith("expr_feat_")
    ),
    "expression_probs": FeatureSet(
        "clip", "expression probabilities", columns=lambda n: n.startswith("p_")
    ),
    "blendshapes": FeatureSet("clip", "blendshapes", columns=lambda n: n.startswith("bs_")),
    "head_pose": FeatureSet("clip", "head pose", columns=lambda n: n in ("yaw", "pitch", "roll")),
    "speech": FeatureSet("speech", "speech features"),
    "word": FeatureSet("word", "word vectors"),
}


def check_feature_sets(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` checked against :data:`FEATURE_SETS` (order kept, duplicates dropped)."""
    names = tuple(dict.fromkeys(str(n) for n in names))
    unknown = [n for n in names if n not in FEATURE_SETS]
    if unknown or not names:
        raise InputError(
            f"unknown feature set(s) {', '.join(unknown) or '(none given)'}",
            hint=f"choose among {', '.join(FEATURE_SETS)}",
        )
    return names


def _video_ids(labels: Any) -> list[str]:
    if isinstance(labels, (list, tuple)) and all(isinstance(v, str) for v in labels):
        return list(labels)
    from mmaffect.training.crops import video_targets

    return sorted(video_targets(labels))


def _matching(cache: FeatureCache, vid: str, fs: FeatureSet) -> dict[str, dict[str, Any]]:
    """``{config hash: meta}`` of the complete entries of ``vid`` that hold feature set ``fs``."""
    out = {}
    for folder in cache.entries(vid):
        if not folder.name.startswith(f"{fs.extractor}-"):
            continue
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("complete") and fs.entry(meta.get("config") or {}):
            out[str(meta["config_hash"])] = meta
    return out


def resolve_entries(
    cache: FeatureCache, videos: Sequence[str], name: str, wanted: str | None = None
) -> tuple[str, list[int] | None]:
    """The config hash of the entry holding feature set ``name`` in every video, and its
    columns (None: all).

    Raises
    ------
    InputError
        No entry common to the videos holds it, or several do (``wanted``, a hash prefix from
        ``feature_configs``, chooses one).
    """
    fs = FEATURE_SETS[name]
    common: dict[str, dict[str, Any]] | None = None
    for vid in videos:
        found = _matching(cache, vid, fs)
        common = found if common is None else {h: m for h, m in common.items() if h in found}
    common = {h: m for h, m in (common or {}).items() if wanted is None or h.startswith(wanted)}
    if not common:
        raise InputError(
            f"feature set {name}: no {fs.about} common to all {len(videos)} video(s) in "
            f"{cache.root}",
            hint="extract it for every video (mmaffect extract; face_cnn: --frame-model CKPT)",
        )
    if len(common) > 1:
        raise InputError(
            f"feature set {name}: {len(common)} different {fs.extractor} entries hold it "
            f"({', '.join(h[:12] for h in sorted(common))})",
            hint=f"choose one in the config: feature_configs: {{{name}: HASH}}",
        )
    ((config_hash, meta),) = common.items()
    if fs.columns is None:
        return config_hash, None
    cols = [i for i, c in enumerate(meta.get("columns") or []) if fs.columns(c)]
    if not cols:
        raise InputError(f"feature set {name}: the {fs.extractor} entry has no such columns")
    return config_hash, cols


class FeatureSetWindows(Dataset):
    """Windows of named feature sets around labelled frames (items as
    :class:`~mmaffect.training.dataset.WindowDataset`'s, ``feat_<set>``/``mask_<set>`` for
    each set).

    Parameters
    ----------
    cache, labels, window, stride
        As for :class:`~mmaffect.training.dataset.WindowDataset` (``labels`` may be a list of
        video ids, for prediction).
    sets
        Feature set names (:data:`FEATURE_SETS`).
    configs
        ``{set: config hash}`` choosing the entry of a set where several hold it.
    dataset_class
        The window dataset behind each entry (e.g. one with per-frame targets).
    """

    def __init__(
        self,
        cache: Any,
        labels: Any,
        sets: Sequence[str],
        *,
        window: int = 60,
        stride: int = 1,
        configs: Mapping[str, str] | None = None,
        dataset_class: type | None = None,
    ) -> None:
        from mmaffect.training.dataset import WindowDataset

        self.sets = check_feature_sets(sets)
        cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        videos = _video_ids(labels)
        self.hashes: dict[str, str] = {}
        self.columns: dict[str, list[int] | None] = {}
        for name in self.sets:
            wanted = (configs or {}).get(name)
            self.hashes[name], self.columns[name] = resolve_entries(cache, videos, name, wanted)
        cls = dataset_class or WindowDataset
        self.parts: dict[tuple[str, str], Any] = {}
        for name in self.sets:
            key = (FEATURE_SETS[name].extractor, self.hashes[name])
            if key not in self.parts:
                self.parts[key] = cls(
                    cache, labels, [key[0]], window=window, stride=stride, configs={key[0]: key[1]}
                )
        first = next(iter(self.parts.values()))
        if any(not np.array_equal(p.frames, first.frames) for p in self.parts.values()):
            raise InputError("the feature sets' entries cover different frames of the videos")
        self.window, self.stride = int(window), int(stride)
        self.expr, self.au, self.va = first.expr, first.au, first.va
        self.frames = first.frames

    @property
    def window_indices(self) -> Any:
        """The windows' rows (replaced, e.g. for image sets, on every entry's dataset)."""
        return next(iter(self.parts.values())).window_indices

    @window_indices.setter
    def window_indices(self, rule: Any) -> None:
        for part in self.parts.values():
            part.window_indices = rule

    @property
    def videos(self) -> list[Any]:
        """The videos of every entry behind the sets (for the checkpoint's feature settings)."""
        return [src for part in self.parts.values() for src in part.videos]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        items = {key: part[i] for key, part in self.parts.items()}
        item = dict(next(iter(items.values())))
        for key in items:
            item.pop(f"feat_{key[0]}", None)
            item.pop(f"mask_{key[0]}", None)
        for name in self.sets:
            key = (FEATURE_SETS[name].extractor, self.hashes[name])
            values, cols = items[key][f"feat_{key[0]}"], self.columns[name]
            item[f"feat_{name}"] = values if cols is None else values[:, cols]
            item[f"mask_{name}"] = items[key][f"mask_{key[0]}"]
        return item

    def widths(self) -> dict[str, int]:
        """``{set: feature width}``."""
        item = self[0]
        return {name: int(item[f"feat_{name}"].shape[-1]) for name in self.sets}
