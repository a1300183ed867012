"""The extractor settings behind a checkpoint's features, and the extraction options that make
the same cache entries again.

``mmaffect train`` keeps two things in a checkpoint's hyperparameters:

* ``feature_configs``: ``{name: config hash}`` of the cache entries trained on (``faces``,
  ``frame``, ``clip``; ``speech``/``word`` only when their key does not depend on the video),
  where every video used one configuration;
* ``feature_settings``: ``{name: configuration}`` of those entries (their ``meta.json``
  ``config``) without what depends on each video: the frame grid (frame rate and frame count)
  that keys the speech and word entries. ``faces`` is there because the frame and clip entries
  are keyed on its hash.

:func:`extract_options_from_checkpoint` turns ``feature_settings`` back into
:class:`~mmaffect.extraction.ExtractOptions`. Nothing heavy is imported here.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mmaffect.errors import InputError

__all__ = ["PER_VIDEO_KEYS", "collect_feature_settings", "extract_options_from_checkpoint"]

#: Parts of an entry's configuration that depend on the video (its frame rate and length).
PER_VIDEO_KEYS = ("grid",)
#: Parts that are not extractor settings: links to other entries and the user's own inputs.
#: ``faces`` (in frame/clip) is reproduced through the faces settings; ``transcripts`` is the
#: transcript folder of the training videos (``predict`` takes the one given to it).
_LINKS = {"frame": ("faces",), "clip": ("faces",), "word": ("transcripts",)}


def _strip(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in PER_VIDEO_KEYS}


def _most_common(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration most videos used (the first of those seen on a tie)."""
    from mmaffect.features.cache import config_hash

    counts = Counter(config_hash(c) for c in configs)
    top = max(counts.values())
    return next(c for c in configs if counts[config_hash(c)] == top)


def collect_feature_settings(datasets: Iterable[Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``feature_configs`` and ``feature_settings`` of the cache entries ``datasets`` read.

    Parameters
    ----------
    datasets
        :class:`~mmaffect.training.dataset.WindowDataset` objects (train and validation).

    Returns
    -------
    tuple
        ``({name: full config hash}, {name: configuration})``. A hash is given where every
        video used one configuration and that configuration holds nothing per video; the
        configuration is the one most videos used, per-video keys (``grid``) removed.
    """
    from mmaffect.features.cache import META

    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for ds in datasets:
        for src in ds.videos:
            folders = dict(src.entries)
            if src.faces is not None:
                folders["faces"] = src.faces
            for name, folder in folders.items():
                meta = json.loads((folder / META).read_text())
                seen.setdefault(name, []).append(
                    (str(meta.get("config_hash")), dict(meta.get("config") or {}))
                )
    hashes: dict[str, str] = {}
    settings: dict[str, Any] = {}
    for name, entries in seen.items():
        per_video = any(k in cfg for _, cfg in entries for k in PER_VIDEO_KEYS)
        distinct = {h for h, _ in entries}
        if len(distinct) == 1 and not per_video:
            hashes[name] = next(iter(distinct))
        settings[name] = _most_common([_strip(cfg) for _, cfg in entries])
    return hashes, settings


def _as_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


#: Settings added since features were first recorded, with the value that the recordings
#: made before them mean (a setting left out of ``to_dict`` at that value).
_ABSENT_MEANS: dict[str, dict[str, Any]] = {"faces": {"detect_every": 1}}


def _rebuild(name: str, cls: type, recorded: Mapping[str, Any], **override: Any) -> Any:
    """``cls`` built from ``recorded``; its ``to_dict()`` must hash like the recorded settings
    (with ``override`` applied), else the current code cannot make those features."""
    from mmaffect.features.cache import config_hash

    recorded = {k: v for k, v in _strip(recorded).items() if k not in _LINKS.get(name, ())}
    fields = {f.name for f in dataclasses.fields(cls)}
    # the version is this code's (a recorded older one is a difference, not a setting)
    args = {k: v for k, v in recorded.items() if k in fields and k != "version"}
    absent = {k: v for k, v in _ABSENT_MEANS.get(name, {}).items() if k in fields}
    args = {**absent, **args}
    try:
        built = cls(**{**args, **override})
    except (TypeError, ValueError, InputError) as e:
        built, problem = None, str(e)
    if built is not None:
        want = dict(recorded)
        for k, v in override.items():
            want[k] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
        new = _as_dict(built)
        if config_hash(new) == config_hash(want):
            return built
        diff = sorted(k for k in set(want) | set(new) if want.get(k) != new.get(k))
        problem = "; ".join(f"{k}: trained {want.get(k)!r}, now {new.get(k)!r}" for k in diff)
    raise InputError(
        f"the checkpoint's {name} features were made with settings this mmaffect cannot "
        f"make again ({problem})",
        hint="re-extract and re-train with this version, or leave the branch out (--modalities)",
    )


def extract_options_from_checkpoint(settings: Mapping[str, Any], base: Any = None) -> Any:
    """Extraction options that make the cache entries a checkpoint was trained on.

    Parameters
    ----------
    settings
        The checkpoint's ``feature_settings`` hyperparameter (``{name: configuration}``).
    base
        :class:`~mmaffect.extraction.ExtractOptions` whose other fields are kept (device,
        batch size, modalities, models folder, transcripts, …); default ``ExtractOptions()``.

    Returns
    -------
    ExtractOptions
        ``base`` with the face, frame, clip, speech and word settings of the checkpoint.
        Kept from ``base``: the tracked subject (``main``/``left``/``right`` is chosen per
        video) and any branch the settings do not hold. Features of organiser crops (frame
        folders) have no detector settings: ``base.face`` is kept (frame folders are read the
        same way again; videos then get the detector).

    Raises
    ------
    InputError
        A branch's settings cannot be made by this version (an extractor version or a setting
        that no longer exists); the message names the branch and what differs.
    """
    from mmaffect.extraction import ExtractOptions
    from mmaffect.faces.tracking import TrackerConfig
    from mmaffect.features.speech import SpeechConfig
    from mmaffect.features.vision import ClipConfig, FaceConfig, FrameConfig
    from mmaffect.features.words import WordConfig

    base = base if base is not None else ExtractOptions()
    changes: dict[str, Any] = {}
    faces = settings.get("faces")
    if faces and "detector" in faces:
        subject = base.face.tracker.subject
        tracker = _rebuild("faces", TrackerConfig, {**faces.get("tracker", {}), "subject": subject})
        changes["face"] = _rebuild("faces", FaceConfig, faces, tracker=tracker)
    for name, field, cls in (
        ("frame", "frame", FrameConfig),
        ("clip", "clip", ClipConfig),
        ("speech", "speech", SpeechConfig),
        ("word", "words", WordConfig),
    ):
        if settings.get(name):
            changes[field] = _rebuild(name, cls, settings[name])
    return dataclasses.replace(base, **changes)
