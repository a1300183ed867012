"""From cached features to a :class:`VideoPrediction`: predictors, fill rule, smoothing.

Two predictors produce raw per-frame outputs from the feature cache:

- :class:`BaselinePredictor`: the pretrained components alone (:mod:`mmaffect.predict.baseline`);
- :class:`CheckpointPredictor`: a model trained with ``mmaffect train``, run over a window
  centred on every frame (the windows of training,
  :class:`~mmaffect.training.dataset.WindowDataset`).

Then :func:`fill_missing` replaces the outputs of frames without a face (interpolation or hold)
and :func:`smooth` averages them over a centred window. See ``docs/predict.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmaffect.annotations import EXPR_8
from mmaffect.errors import InputError
from mmaffect.features.cache import FeatureCache
from mmaffect.predict.baseline import BASELINE_AU_NAMES, baseline_outputs
from mmaffect.predict.result import VideoPrediction
from mmaffect.training.feature_settings import PER_VIDEO_KEYS

__all__ = [
    "FILL_RULES",
    "BaselinePredictor",
    "CheckpointPredictor",
    "FaceTrack",
    "faceless_track",
    "fill_missing",
    "inference_autocast",
    "read_face_track",
    "read_words",
    "smooth",
    "window_batch",
]

FillRule = Literal["interpolate", "hold", "model", "prior"]
FILL_RULES: tuple[str, ...] = ("auto", "interpolate", "hold", "model")
HEADS = ("expr", "va", "au")


def _entry(cache: FeatureCache, video_id: str, extractor: str, wanted: str | None = None):
    from mmaffect.training.dataset import find_entries

    folder = find_entries(cache, video_id, [extractor], {extractor: wanted} if wanted else None)
    return folder[extractor]


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


class FaceTrack:
    """Face evidence of one video from its ``faces`` entry (and the clip entry's head pose)."""

    def __init__(self, found, score, box, head_pose, fps: float, n: int, start: float = 0.0):
        self.found = np.asarray(found, bool)
        self.score = np.asarray(score, np.float32)
        self.box = np.asarray(box, np.float32)
        self.head_pose = head_pose
        self.fps = float(fps)
        self.n = int(n)
        self.start = float(start)

    @property
    def times(self) -> np.ndarray:
        return self.start + np.arange(self.n) / self.fps


def read_face_track(cache: FeatureCache, video_id: str) -> FaceTrack:
    """The tracked face of every frame (``faces`` entry) and head pose (``clip`` entry, if any).

    Raises
    ------
    InputError
        The video has no ``faces`` entry (``mmaffect extract --modalities faces`` makes it).
    """
    folder = _entry(cache, video_id, "faces")
    meta = _meta(folder)
    n, fps = int(meta["timing"]["n_frames"]), float(meta["timing"]["fps"])
    found = np.load(folder / "found.npy")
    box = np.where(found[:, None], np.load(folder / "box.npy"), np.nan).astype(np.float32)
    score = np.where(found, np.load(folder / "score.npy"), 0).astype(np.float32)
    pose = None
    try:
        clip = _entry(cache, video_id, "clip")
    except InputError:
        clip = None
    if clip is not None:
        cols = _meta(clip)["columns"]
        values = np.load(clip / "values.npy", mmap_mode="r")
        idx = [cols.index(c) for c in ("yaw", "pitch", "roll")]
        valid = np.load(clip / "valid.npy") if (clip / "valid.npy").is_file() else found
        pose = np.where(valid[:, None], np.asarray(values[:, idx]), np.nan).astype(np.float32)
    return FaceTrack(found, score, box, pose, fps, n, float(meta["timing"].get("start", 0.0)))


def faceless_track(cache: FeatureCache, video_id: str, modalities: tuple[str, ...]) -> FaceTrack:
    """A track with no face on any frame, on the frame grid of the first cached ``modalities``.

    For audio-only inputs (no ``faces`` entry) predicted by a speech/word checkpoint.
    """
    for kind in modalities:
        try:
            folder = _entry(cache, video_id, kind)
        except InputError:
            continue
        timing = _meta(folder)["timing"]
        n = int(timing["n_frames"])
        box = np.full((n, 4), np.nan, np.float32)
        start = float(timing.get("start", 0.0))
        return FaceTrack(np.zeros(n, bool), np.zeros(n), box, None, timing["fps"], n, start)
    raise InputError(f"{video_id}: none of {', '.join(modalities)} is in the feature cache")


def read_words(cache: FeatureCache, video_id: str, n: int) -> list[str]:
    """The word spoken at each frame from the ``word`` entry; ``""`` everywhere when none."""
    try:
        folder = _entry(cache, video_id, "word")
    except InputError:
        return [""] * n
    words = _meta(folder).get("words", [])
    index = np.load(folder / "word_index.npy")
    if len(index) != n:
        return [""] * n
    return [words[i] if 0 <= i < len(words) else "" for i in index.tolist()]


# ------------------------------------------------------------------------------------ predictors


def face_model_outputs(
    cache: FeatureCache, video_id: str, frame_config: Any, heads: Sequence[str]
) -> dict[str, np.ndarray]:
    """The outputs a face model stored in the ``frame`` entry it made (``FrameConfig.model``);
    of the entries it made (one per faces configuration), the newest."""
    config = frame_config.to_dict()
    made = [
        folder
        for folder in cache.entries(video_id)
        if (folder / "meta.json").is_file()
        and _meta(folder).get("extractor") == "frame"
        and {k: v for k, v in _meta(folder)["config"].items() if k != "faces"} == config
    ]
    if not made:
        raise InputError(f"{video_id}: no frame entry of the face model {frame_config.model}")
    folder = max(made, key=lambda f: (f / "meta.json").stat().st_mtime_ns)
    return {h: np.load(folder / f"out_{h}.npy").astype(np.float32) for h in heads}


class BaselinePredictor:
    """EXPR from the shipped face model (``frame`` entry), AU from the blendshapes and VA from
    the expressions (``clip`` entry); see :mod:`mmaffect.predict.baseline`."""

    name = "baseline"
    modalities: tuple[str, ...] = ("frame", "clip")
    heads = HEADS
    uses_audio = False
    expr_names = tuple(str(n) for n in EXPR_8.names)
    au_names = BASELINE_AU_NAMES

    def describe(self) -> dict[str, Any]:
        from mmaffect.predict.baseline import describe

        return {"predictor": "baseline", **describe()}

    @staticmethod
    def frame_config():
        from mmaffect.features.vision import FrameConfig
        from mmaffect.store.registry import FACE_EXPRESSION_MODEL

        return FrameConfig(model=FACE_EXPRESSION_MODEL)

    def extract_options(self, base: Any) -> Any:
        """``base`` with the shipped face model as the frame branch."""
        from dataclasses import replace

        return replace(base, frame=self.frame_config())

    def outputs(self, cache: FeatureCache, video_id: str) -> dict[str, np.ndarray]:
        folder = _entry(cache, video_id, "clip")
        values = np.load(folder / "values.npy", mmap_mode="r")
        expr = face_model_outputs(cache, video_id, self.frame_config(), ["expr"])["expr"]
        return baseline_outputs(np.asarray(values), _meta(folder)["columns"], expr=expr)


class FaceModelPredictor:
    """A trained image model (``face_cnn``, ``dan``, ``hybrid_cnn_transformer`` or an ensemble
    of them) predicting every frame from its face.

    The model runs as the frame branch of the extraction (``FrameConfig.model``): its outputs
    are stored beside its features in the ``frame`` entry, and read here. Frames without a
    face get the fill rule.
    """

    name = "checkpoint"
    modalities: tuple[str, ...] = ("frame",)
    uses_audio = False

    def __init__(self, checkpoint: str | Path, device: str = "cpu"):
        from mmaffect.features.face_model import FaceModel

        self.checkpoint = Path(checkpoint)
        self.model = FaceModel(self.checkpoint, device)
        self.heads = tuple(h for h in HEADS if h in self.model.heads)
        self.expr_names = self.model.expr_names or tuple(str(n) for n in EXPR_8.names)
        self.au_names = self.model.au_names
        self.task = "mtl" if len(self.heads) == 3 else self.heads[0]
        self.dropped: tuple[str, ...] = ()
        self.trained_modalities = self.modalities

    def frame_config(self):
        from mmaffect.features.vision import FrameConfig

        return FrameConfig(model=str(self.checkpoint))

    def extract_options(self, base: Any) -> Any:
        """``base`` with this model as the frame branch."""
        from dataclasses import replace

        return replace(base, frame=self.frame_config())

    def describe(self) -> dict[str, Any]:
        hp = self.model.net.hparams
        return {
            "predictor": str(self.checkpoint),
            "model": self.model.model_name,
            **({"backbone": hp["backbone"]} if "backbone" in hp else {}),
            "crop": self.model.crop.to_dict(),
            "input_size": self.model.size,
            "task": self.task,
            "modalities": list(self.modalities),
        }

    def outputs(self, cache: FeatureCache, video_id: str) -> dict[str, np.ndarray]:
        return face_model_outputs(cache, video_id, self.frame_config(), self.heads)


class CheckpointPredictor:
    """A model trained with ``mmaffect train``: outputs for the window centred on every frame.

    Parameters
    ----------
    checkpoint
        A ``.ckpt`` written by ``mmaffect train``.
    modalities
        Branches to feed; default the checkpoint's. A branch the checkpoint was trained with
        may be left out (its inputs are then fully masked, which every registry model accepts:
        a learned null key/value or "missing" vector stands in); one it was not trained with is
        an error.
    device, batch_size
        Where and how many windows at a time; default :func:`window_batch` of the device.
        On CUDA the network runs under autocast (bfloat16 where the GPU supports it, else
        float16); the outputs are float32 either way.
    cut_on_device
        Cut the windows on ``device`` from each video's rows copied there once
        (:meth:`~mmaffect.training.dataset.WindowDataset.device_batches`) instead of in a
        ``DataLoader`` on the host; default on CUDA only (on the CPU it would hold a video's
        rows in memory).
    """

    name = "checkpoint"

    def __init__(
        self,
        checkpoint: str | Path,
        modalities: Sequence[str] | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        cut_on_device: bool | None = None,
    ):
        import torch

        from mmaffect.training.module import AffectModule

        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise InputError(f"{self.checkpoint}: no such checkpoint file")
        try:
            self.module = AffectModule.load_from_checkpoint(
                str(self.checkpoint), map_location=device
            )
        except Exception as e:  # noqa: BLE001 - torch/lightning raise many kinds
            raise InputError(
                f"{self.checkpoint}: not a checkpoint written by mmaffect train ({e})"
            ) from e
        self.module.eval()
        hp = self.module.hparams
        self.trained_modalities = tuple(hp["modalities"])
        wanted = tuple(modalities) if modalities else self.trained_modalities
        extra = [m for m in wanted if m not in self.trained_modalities]
        if extra:
            raise InputError(
                f"{self.checkpoint.name} was trained with {','.join(self.trained_modalities)}; "
                f"it cannot use {','.join(extra)}",
                hint="--modalities may only leave out branches the checkpoint has",
            )
        self.modalities = wanted
        self.dropped = tuple(m for m in self.trained_modalities if m not in wanted)
        self.heads = tuple(self.module.heads)
        self.window = int(hp["window"])
        self.task = str(hp["task"])
        self.edition = str(hp["edition"])
        names = hp.get("label_names", {})
        self.expr_names = tuple(names.get("expr", [str(n) for n in EXPR_8.names]))
        self.au_names = tuple(names.get("au", []))
        if "au" in self.heads and not self.au_names:
            from mmaffect.annotations import AU_12

            self.au_names = tuple(str(n) for n in AU_12.names)
        self.feature_settings = dict(hp.get("feature_settings") or {})
        # Hashes of entries keyed per video (older checkpoints kept the speech/word ones,
        # whose key holds the training video's frame grid) cannot select another video's.
        self.feature_configs = {
            m: h
            for m, h in (hp.get("feature_configs") or {}).items()
            if not any(k in (self.feature_settings.get(m) or {}) for k in PER_VIDEO_KEYS)
        }
        self.dims = dict(self.module.model.hparams.get("dims", {}))
        self.device = device
        self.batch_size = int(batch_size or window_batch(device))
        self.cuda = torch.device(device).type == "cuda"
        self.cut_on_device = self.cuda if cut_on_device is None else bool(cut_on_device)
        self.uses_audio = any(m in ("speech", "word") for m in self.modalities)
        # a checkpoint over named feature sets (seed 001): they are its modalities
        self.features = tuple(hp.get("features") or ())
        if self.features and self.dropped:
            raise InputError(f"{self.checkpoint.name} reads all its feature sets", hint=(
                "leave --modalities out"))  # fmt: skip

    def extract_options(self, base: Any) -> Any:
        """``base`` with the extractor settings the checkpoint was trained on (faces and the
        branches it uses), so that ``extract`` makes the entries it reads.

        Raises
        ------
        InputError
            This version cannot make a used branch's features the way they were made.
        """
        from mmaffect.training.feature_settings import extract_options_from_checkpoint

        used = {"faces", *self.modalities}
        if self.features:  # the branches holding the feature sets
            from mmaffect.training.feature_sets import FEATURE_SETS

            used = {"faces", *(FEATURE_SETS[f].extractor for f in self.features)}
        settings = {m: s for m, s in self.feature_settings.items() if m in used}
        return extract_options_from_checkpoint(settings, base)

    def describe(self) -> dict[str, Any]:
        hp = self.module.hparams
        return {
            "predictor": str(self.checkpoint),
            "model": hp["model_name"],
            "task": self.task,
            "edition": self.edition,
            "window": self.window,
            "modalities": list(self.modalities),
            "dropped_modalities": list(self.dropped),
            "feature_configs": self.feature_configs,
        }

    def outputs(
        self, cache: FeatureCache, video_id: str, *, independent: bool = False
    ) -> dict[str, np.ndarray]:
        """Outputs for the window centred on every frame; ``independent`` (image sets): each
        window holds its own frame only, as a one-frame video's would, never its neighbours."""
        import torch

        from mmaffect.training.dataset import WindowDataset, make_loader

        ds = self._windows(cache, video_id)
        if independent:
            ds.window_indices = _own_frame_window(self.window)
        if self.cut_on_device and isinstance(ds, WindowDataset) and ds.standard_windows():
            batches = ds.device_batches(self.batch_size, self.device)
        else:
            loader = dict(batch_size=self.batch_size, shuffle=False, pin_memory=self.cuda)
            batches = make_loader(ds, **loader)
        parts: dict[str, list[np.ndarray]] = {h: [] for h in self.heads}
        with torch.inference_mode(), inference_autocast(self.device):
            for batch in batches:
                for head, values in self._forward(batch).items():
                    parts[head].append(values)
        return {h: np.concatenate(v).astype(np.float32) for h, v in parts.items() if v}

    def _windows(self, cache: FeatureCache, video_id: str):
        """The dataset of the checkpoint's windows over every frame of the video."""
        from mmaffect.training.dataset import WindowDataset

        configs = {m: h for m, h in self.feature_configs.items() if m in self.modalities}
        try:
            if self.features:
                from mmaffect.training.feature_sets import FeatureSetWindows

                return FeatureSetWindows(
                    cache, [video_id], self.features, window=self.window, configs=configs
                )
            return WindowDataset(
                cache, [video_id], self.modalities, window=self.window, configs=configs or None
            )
        except InputError as e:
            settings = self.module.hparams.get("feature_settings") or {}
            trained = "; ".join(
                f"{m}: {json.dumps(settings[m], sort_keys=True)}" for m in configs if m in settings
            )
            raise InputError(
                f"{e.message} (the checkpoint was trained on features with config hashes "
                f"{', '.join(f'{m} {h[:12]}' for m, h in configs.items())})",
                hint="extract with the options used for training"
                + (f" ({trained})" if trained else ""),
            ) from e

    def _forward(self, batch: dict) -> dict[str, np.ndarray]:
        """One batch of windows through the network: probabilities, VA clamped to [-1, 1]."""
        import torch

        b, t = batch["frame"].shape[0], self.window
        for m in self.dropped:
            batch[f"feat_{m}"] = torch.zeros(b, t, int(self.dims[m]))
            batch[f"mask_{m}"] = torch.zeros(b, t, dtype=torch.bool)
        batch = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }
        out = self.module(batch)
        result = {}
        if "expr" in out:
            result["expr"] = torch.softmax(out["expr"].float(), -1).cpu().numpy()
        if "au" in out:
            result["au"] = torch.sigmoid(out["au"].float()).cpu().numpy()
        if "va" in out:
            result["va"] = out["va"].float().clamp(-1, 1).cpu().numpy()
        return result


def window_batch(device: str) -> int:
    """Windows per forward pass of a checkpoint's network: 64 on the CPU (2 cores, the fusion
    network over 60-frame windows: 475 windows/s against 249 at 16, peak memory +65 MB), 512
    on CUDA."""
    import torch

    return 512 if torch.device(device).type == "cuda" else 64


def inference_autocast(device: str):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing elsewhere."""
    import contextlib

    import torch

    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    bf16 = torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)


def _own_frame_window(window: int):
    """``WindowDataset.window_indices`` for frames that stand alone: every row of the window is
    the frame itself and only the middle one is real (the window of a one-frame video)."""
    middle = np.arange(window) == window // 2

    def indices(frame: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full(window, frame), middle.copy()

    return indices


# ------------------------------------------------------------------------------------ fill, smooth


def fill_missing(
    outputs: dict[str, np.ndarray], has_face: np.ndarray, rule: FillRule
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Replace the outputs of frames without a face.

    Parameters
    ----------
    outputs
        ``{"expr": (n, C) probabilities, "va": (n, 2), "au": (n, K) probabilities}``.
    has_face
        ``(n,)`` bool.
    rule
        ``interpolate``: linear in time between the nearest frames with a face (the first and
        last such frames are held towards the ends); ``hold``: the last frame with a face (the
        first one before it); ``model``: keep the predictor's outputs; ``prior`` (frames that
        stand alone: image sets): the prior of no evidence below.

    Returns
    -------
    tuple
        The new outputs and the ``(n,)`` mask of filled frames. A video with no face at all
        gets the prior of no evidence: Neutral with probability 1, valence and arousal 0, no AU.
    """
    has_face = np.asarray(has_face, bool)
    n = has_face.shape[0]
    if rule == "model" or has_face.all():
        return outputs, np.zeros(n, bool)
    if rule not in ("interpolate", "hold", "prior"):
        raise InputError(f"unknown fill rule {rule!r}", hint="interpolate, hold or model")
    filled = ~has_face
    out = {}
    if rule == "prior" or not has_face.any():
        for head, arr in outputs.items():
            prior = np.zeros_like(arr)
            if head == "expr":
                prior[:, 0] = 1.0  # Neutral
            out[head] = np.where(has_face[:, None], arr, prior)
        return out, filled
    good = np.flatnonzero(has_face)
    frames = np.arange(n)
    if rule == "hold":
        last = np.maximum.accumulate(np.where(has_face, frames, -1))
        source = np.where(last >= 0, last, good[0])
    for head, arr in outputs.items():
        if rule == "hold":
            out[head] = arr[source].astype(np.float32)
            continue
        new = arr.astype(np.float32).copy()
        for j in range(arr.shape[1]):
            new[filled, j] = np.interp(frames[filled], good, arr[good, j])
        out[head] = new
    return out, filled


def smooth(outputs: dict[str, np.ndarray], frames: int) -> dict[str, np.ndarray]:
    """Centred moving average over ``frames`` frames (odd; 1 = unchanged), edges repeated.

    EXPR rows are renormalised to sum to 1 (they already do: an average of distributions).
    """
    if frames <= 1:
        return outputs
    from scipy.ndimage import uniform_filter1d

    size = frames if frames % 2 else frames + 1
    out = {}
    for head, arr in outputs.items():
        s = uniform_filter1d(arr.astype(np.float64), size=size, axis=0, mode="nearest")
        if head == "expr":
            s /= np.maximum(s.sum(axis=1, keepdims=True), 1e-12)
        out[head] = s.astype(np.float32)
    return out


def build_prediction(
    predictor: BaselinePredictor | CheckpointPredictor,
    cache: FeatureCache,
    video_id: str,
    *,
    fill: str = "auto",
    smooth_seconds: float = 0.0,
    independent: bool = False,
) -> VideoPrediction:
    """Outputs of ``predictor`` for every frame of ``video_id``, filled and smoothed.

    ``fill="auto"`` interpolates over frames without a face when the predictor sees faces
    only, and keeps the model's outputs when it also hears the audio (speech or word branch).
    ``independent`` (image sets): every frame stands alone: a checkpoint's window holds that
    frame only, a frame without a face gets the prior of no evidence (``fill="model"`` keeps
    the model's outputs) and nothing is smoothed.
    """
    try:
        faces = read_face_track(cache, video_id)
    except InputError:
        if not predictor.uses_audio or {"frame", "clip"} & set(predictor.modalities):
            raise
        faces = faceless_track(cache, video_id, predictor.modalities)  # audio-only input
    if independent and getattr(predictor, "window", 1) > 1:
        raw = predictor.outputs(cache, video_id, independent=True)
    else:
        raw = predictor.outputs(cache, video_id)
    n = faces.n
    for head, arr in raw.items():
        if len(arr) != n:
            raise InputError(
                f"{video_id}: the {head} outputs have {len(arr)} rows for {n} frames",
                hint="re-extract the video's features (mmaffect extract --force)",
            )
    rule = fill
    if rule == "auto":
        rule = "model" if predictor.uses_audio else "interpolate"
    if independent and rule != "model":
        rule = "prior"
    filled_out, filled = fill_missing(raw, faces.found, rule)  # type: ignore[arg-type]
    k = int(round(smooth_seconds * faces.fps)) if smooth_seconds > 0 and not independent else 1
    final = smooth(filled_out, k)
    meta = {
        "fill": rule,
        "smooth_frames": k if k > 1 else 0,
        "decoded_frames": n,
        **predictor.describe(),
    }
    return VideoPrediction(
        video_id=video_id,
        fps=faces.fps,
        times=faces.times,
        expr_probs=final.get("expr"),
        expr_names=predictor.expr_names,
        va=final.get("va"),
        au_probs=final.get("au"),
        au_names=predictor.au_names,
        face_found=faces.found,
        face_score=faces.score,
        face_box=faces.box,
        head_pose=faces.head_pose,
        words=read_words(cache, video_id, n),
        filled=filled,
        predictor="baseline"
        if isinstance(predictor, BaselinePredictor)
        else str(predictor.checkpoint),
        meta=meta,
    )
