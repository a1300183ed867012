"""The vision side of extraction: decode → faces (detect + track, or organiser crops) →
aligned crops → frame backbone (``frame``) and expression + blendshapes + head pose (``clip``).

One pass over the frames fills every vision entry that is missing from the cache, chunk by
chunk, into memory-mapped arrays (memory does not grow with the video's length). Frames are
decoded in a background thread (:func:`prefetch`) so ffmpeg works while the models run.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.errors import InputError
from mmaffect.faces import DEFAULT_DETECT_EVERY
from mmaffect.faces.crops import box_crops
from mmaffect.faces.keyframes import KeyframeDetector
from mmaffect.faces.landmarker import BLENDSHAPE_NAMES, N_BLENDSHAPES
from mmaffect.faces.tracking import SubjectTracker, TrackerConfig
from mmaffect.features.cache import EntryKey, FeatureCache, config_hash, source_signature
from mmaffect.features.stages import StageClock
from mmaffect.features.timing import FrameTiming
from mmaffect.media.image_set import image_set_signature
from mmaffect.media.source import OpenedSource
from mmaffect.store.registry import FACE_EXPRESSION_MODEL
from mmaffect.watchdog import beat, on_abandon

FACE_VERSION = "1"
FRAME_VERSION = "1"
# 2: mini-Xception reads its own crop (the detector box, squared) with flip averaging, not the
# face-recognition template
CLIP_VERSION = "2"


@dataclass(frozen=True)
class FaceConfig:
    detector: str = "retinaface_mobilenet0.25"  # model-store name
    max_side: int = 640  # detection runs on frames downscaled to this longest side
    score_threshold: float = 0.6  # minimum face probability
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # detect on every N-th frame, interpolating in between (faces/keyframes.py); 1: every frame
    detect_every: int = DEFAULT_DETECT_EVERY
    version: str = FACE_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.detect_every == 1:  # every frame: the cache key of before the option existed
            del d["detect_every"]
        return d


def _store_face_model(name: str | None) -> str | None:
    """The registered sha256 when ``name`` is a face model of the model store, else None."""
    from mmaffect.store.registry import MODELS

    spec = MODELS.get(str(name))
    face_model = spec is not None and spec.filename.endswith((".ckpt", ".pt"))
    return spec.sha256 if face_model else None


def _checkpoint_sha256(path: str | None, recorded: str | None) -> str | None:
    """sha256 of a face model: a checkpoint file's, or a store model's registered one (None
    for a store model that is no face model, e.g. mini-Xception)."""
    if path is None:
        return None
    if _store_face_model(path) is not None:
        return _store_face_model(path)
    if not str(path).endswith(".ckpt"):
        return None
    if recorded is not None:  # rebuilt from recorded settings: checked when the model loads
        return recorded
    from mmaffect.store.lookup import file_sha256

    if not Path(path).is_file():
        raise InputError(f"{path}: no such checkpoint file")
    return file_sha256(Path(path))


@dataclass(frozen=True)
class FrameConfig:
    """The frame branch (``f_img``): by default the shipped face model (EfficientNet-Lite0
    trained on FER2013 faces, 96 px: face-trained features, and the baseline's expressions
    in the same pass); ``model=None`` runs the registry ``backbone`` instead."""

    backbone: str = "efficientnet_lite0"  # name in the frame-backbone registry (model=None)
    crop_size: int | None = None  # aligned crop side; None: the backbone's own (224 for Lite0)
    # a trained face model (a face_cnn checkpoint or store name) instead of the backbone: its
    # features are f_img, its outputs are kept beside them; its crop and size are its own
    model: str | None = FACE_EXPRESSION_MODEL
    model_sha256: str | None = None  # filled in from the file
    version: str = FRAME_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_sha256", _checkpoint_sha256(self.model, self.model_sha256))

    @classmethod
    def choose(
        cls, backbone: str | None = None, crop_size: int | None = None, model: str | None = None
    ) -> FrameConfig:
        """The frame branch of the command-line options: ``backbone`` (a registry network,
        at ``crop_size``), ``model`` (a trained face model) or neither (the default)."""
        if backbone is not None and model is not None:
            raise InputError("give --frame-backbone or --frame-model, not both")
        if backbone is not None:
            return cls(backbone=backbone, crop_size=crop_size, model=None)
        if crop_size is not None:
            raise InputError(
                "--frame-crop sets the crop of a --frame-backbone",
                hint="a face model reads the crop it was trained with; add e.g. "
                "--frame-backbone efficientnet_lite0",
            )
        return cls(model=model) if model is not None else cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClipConfig:
    # model-store name of the expression net, or a face model checkpoint (.ckpt)
    expression: str = "fer2013_mini_xception"
    expression_sha256: str | None = None  # of a checkpoint, filled in from the file
    # the store model's crop (kind box|template, scale; see faces/crops.py): the detector box
    # squared, as FER2013 frames its faces (measured: benchmarks/face_crop.py); a checkpoint
    # brings its own
    expression_crop: dict[str, Any] = field(default_factory=lambda: {"kind": "box", "scale": 1.0})
    # average each face and its mirror image: off by default since the baseline's expressions
    # come from the frame branch's face model (which flips); here it would double the cost of
    # features the fusion models learn from either way
    expression_flip: bool = False
    landmarker: str = "face_landmarker"  # model-store name of the MediaPipe bundle
    landmarker_crop: int = 256  # MediaPipe sees a square crop of this side around the face
    landmarker_margin: float = 1.8  # crop side = margin × the longer side of the face box
    version: str = CLIP_VERSION

    def __post_init__(self) -> None:
        sha = _checkpoint_sha256(self.expression, self.expression_sha256)
        object.__setattr__(self, "expression_sha256", sha)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def face_config_dict(config: FaceConfig, organiser_crops: bool) -> dict[str, Any]:
    if organiser_crops:  # organiser crops are used as they are: no detector involved
        return {"source": "organiser_crops", "version": FACE_VERSION}
    return config.to_dict()


def clip_columns(expression, blendshape_names: tuple[str, ...] = BLENDSHAPE_NAMES) -> list[str]:
    """Columns of the clip entry for an expression model (its features and class names)."""
    return (
        [f"expr_feat_{i}" for i in range(expression.dim)]
        + [f"p_{c}" for c in expression.expr_names]
        + [f"bs_{n}" for n in blendshape_names]
        + ["yaw", "pitch", "roll"]
    )


class VisionModels:
    """The vision networks, loaded on first use and shared by all videos of a batch."""

    def __init__(
        self,
        *,
        models_dir,
        device: str,
        face: FaceConfig,
        frame: FrameConfig,
        clip: ClipConfig,
        clock: StageClock,
    ):
        self.models_dir, self.device = models_dir, device
        self.face, self.frame, self.clip, self.clock = face, frame, clip, clock
        self._detector = self._backbone = self._expression = None

    def _resolve(self, name: str):
        from mmaffect.store import resolve

        return resolve(name, self.models_dir)

    @property
    def detector(self):
        if self._detector is None:
            from mmaffect.faces.retinaface import load_retinaface

            with self.clock("load models"):
                self._detector = load_retinaface(
                    self._resolve(self.face.detector),
                    device=self.device,
                    score_threshold=self.face.score_threshold,
                    max_side=self.face.max_side,
                )
        return self._detector

    @property
    def backbone(self):
        """The frame branch's network: a registry backbone or a trained face model."""
        if self._backbone is None:
            with self.clock("load models"):
                if self.frame.model is not None:
                    self._backbone = _face_model(
                        self.frame.model, self.frame.model_sha256, self.device
                    )
                else:
                    from mmaffect.features.frame import get_frame_backbone

                    cls = get_frame_backbone(self.frame.backbone)
                    self._backbone = cls.build(
                        self._resolve(cls.model), device=self.device, crop_size=self.frame.crop_size
                    )
        return self._backbone

    @property
    def expression(self):
        """The clip branch's expression model: mini-Xception or a trained face model."""
        if self._expression is None:
            clip = self.clip
            with self.clock("load models"):
                if clip.expression_sha256 is not None:
                    self._expression = _face_model(
                        clip.expression, clip.expression_sha256, self.device
                    )
                else:
                    from mmaffect.faces.crops import FaceCrop
                    from mmaffect.features.expression import ExpressionNet

                    self._expression = ExpressionNet(
                        self._resolve(clip.expression), self.device,
                        crop=FaceCrop.from_dict(clip.expression_crop), flip=clip.expression_flip,
                    )  # fmt: skip
        return self._expression

    def landmarker(self, running_mode: str = "video"):
        """A new MediaPipe landmarker (VIDEO mode keeps per-stream state: one per video; IMAGE
        mode, for image sets, sees every image on its own)."""
        from mmaffect.faces.landmarker import FaceLandmarker

        with self.clock("load models"):
            return FaceLandmarker(self._resolve(self.clip.landmarker), running_mode=running_mode)


def _face_model(path: str, sha256: str | None, device: str, models_dir=None):
    """A face model (a checkpoint file, or a store name), refused when the file is not the
    one the settings recorded."""
    from mmaffect.features.face_model import FaceModel
    from mmaffect.store.lookup import file_sha256

    if _store_face_model(path) is not None:
        from mmaffect.store import resolve

        return FaceModel(resolve(path, models_dir), device)  # sha256-checked by the store
    if not Path(path).is_file():
        raise InputError(f"{path}: no such face model checkpoint")
    if sha256 is not None and file_sha256(Path(path)) != sha256:
        raise InputError(
            f"{path} is not the face model these features were made with (sha256 differs)",
            hint="use the checkpoint they were made with, or re-extract and re-train",
        )
    return FaceModel(path, device)


class Prefetch:
    """Runs an iterator in a background thread, ``depth`` items ahead; re-raises its errors.

    The thread starts at construction, so work begins before anyone asks for an item (this is
    how the next video is decoded while the models still work on the current one). When the
    consumer stops early, :meth:`close` stops the worker, which closes the source iterator
    (ending e.g. an ffmpeg pipe).
    """

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int = 2):
        self._iterator = iterator
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self._iterator:
                if not self._put(item):
                    break
            else:
                self._put(self._DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)
        finally:
            if self._stop.is_set() and hasattr(self._iterator, "close"):
                self._iterator.close()

    def __iter__(self) -> Iterator:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``iterator`` through a :class:`Prefetch` thread."""
    return iter(Prefetch(iterator, depth))


@dataclass
class VisionResult:
    frames: int = 0
    faces_found: int = 0
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def organiser_landmarks(size: int) -> np.ndarray:
    """Organiser crops are already aligned: their landmarks are the template's, at their size."""
    from mmaffect.faces.align import arcface_template

    return arcface_template(112).astype(np.float32) * (size / 112.0)


def vision_keys(video_id: str, face_cfg: dict, frame: FrameConfig, clip: ClipConfig):
    face_hash = config_hash(face_cfg)
    frame_cfg = {**frame.to_dict(), "faces": face_hash}
    clip_cfg = {**clip.to_dict(), "faces": face_hash}
    return {
        "faces": (EntryKey(video_id, "faces", face_hash), face_cfg),
        "frame": (EntryKey(video_id, "frame", config_hash(frame_cfg)), frame_cfg),
        "clip": (EntryKey(video_id, "clip", config_hash(clip_cfg)), clip_cfg),
    }


def vision_todo(
    opened: OpenedSource,
    cache: FeatureCache,
    models: VisionModels,
    wanted: set[str],
    force: bool = False,
):
    """(entries to compute, keys, source signature) of a video's vision side."""
    source = opened.source
    keys = vision_keys(
        source.id, face_config_dict(models.face, source.kind == "frames"), models.frame, models.clip
    )
    if source.kind == "images":
        signature = image_set_signature(source)
    else:
        signature = source_signature(source.path)
    todo = [
        name
        for name in ("faces", *sorted(wanted & {"frame", "clip"}))
        if force or not cache.is_fresh(keys[name][0], signature)
    ]
    return todo, keys, signature


@dataclass
class _VisionArrays:
    """The per-frame arrays one pass over a video fills (or reads, for cached faces)."""

    found: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray | None = None  # None: faces come from the cache
    n_faces: np.ndarray | None = None
    frame_values: np.ndarray | None = None  # None: the frame entry is not computed
    frame_valid: np.ndarray | None = None
    frame_outputs: dict[str, np.ndarray] = field(default_factory=dict)  # a face model's outputs
    clip_values: np.ndarray | None = None  # None: the clip entry is not computed
    clip_valid: np.ndarray | None = None
    landmarker_found: np.ndarray | None = None

    @classmethod
    def open(cls, writers: dict, cache: FeatureCache, faces_key: EntryKey, models: VisionModels):
        if "faces" in writers:
            w = writers["faces"]
            arrays = cls(
                found=w.array("found", (), bool),
                boxes=w.array("box", (4,)),
                landmarks=w.array("landmarks", (5, 2)),
                scores=w.array("score", ()),
                n_faces=w.array("n_faces", (), np.int16),
            )
        else:
            cached = cache.load(faces_key)
            arrays = cls(found=cached["found"], boxes=cached["box"], landmarks=cached["landmarks"])
        if "frame" in writers:
            net, w = models.backbone, writers["frame"]
            arrays.frame_values = w.array("values", (net.dim,))
            arrays.frame_valid = w.array("valid", (), bool)
            arrays.frame_outputs = {
                h: w.array(f"out_{h}", (width,)) for h, width in output_widths(net).items()
            }
        if "clip" in writers:
            w, expression = writers["clip"], models.expression
            dim = expression.dim + len(expression.expr_names) + N_BLENDSHAPES + 3
            arrays.clip_values = w.array("values", (dim,))
            arrays.clip_valid = w.array("valid", (), bool)
            arrays.landmarker_found = w.array("landmarker_found", (), bool)
        return arrays


def output_widths(net) -> dict[str, int]:
    """Widths of a face network's outputs (``expr``/``au`` classes, ``va`` 2), by head."""
    sizes = {"expr": len(net.expr_names), "au": len(net.au_names), "va": 2}
    return {h: sizes[h] for h in net.heads}


class FaceFinder:
    """Fills the faces arrays of a video's chunks, in order: organiser crops are whole faces;
    otherwise the detector (on key frames, :class:`KeyframeDetector`) and the tracker that
    follows one subject (image sets: each image on its own, no tracking, every image)."""

    def __init__(self, models: VisionModels, kind: str):
        self.models, self.organiser = models, kind == "frames"
        self.tracker = None if kind == "images" else SubjectTracker(models.face.tracker)
        every = 1 if kind == "images" else models.face.detect_every
        self.detector = KeyframeDetector(lambda images: models.detector.detect(images), every)

    def __call__(self, chunk, arrays: _VisionArrays) -> None:
        idx = chunk.indices
        if self.organiser:
            h, w = chunk.images.shape[1:3]
            arrays.found[idx] = True
            arrays.boxes[idx] = (0, 0, w, h)
            arrays.scores[idx] = 1.0
            arrays.landmarks[idx] = organiser_landmarks(w)
            arrays.n_faces[idx] = 1
            return
        with self.models.clock("face detection", len(idx)):
            dets = self.detector(chunk.images, idx)
        for row, det in zip(idx, dets, strict=True):
            arrays.n_faces[row] = len(det)
            # image sets: each image on its own (a fresh tracker picks its most prominent face)
            pick = (self.tracker or SubjectTracker(self.models.face.tracker)).update(det)
            if pick is not None:
                arrays.found[row] = True
                arrays.boxes[row] = det.boxes[pick]
                arrays.scores[row] = det.scores[pick]
                arrays.landmarks[row] = det.landmarks[pick]


def _embed_faces(chunk, arrays: _VisionArrays, models: VisionModels, landmarker) -> None:
    """Frame and clip features of the chunk's frames that have a face; each network reads
    the crop it was trained with."""
    local = np.flatnonzero(np.asarray(arrays.found[chunk.indices]))
    rows = chunk.indices[local]
    if not len(rows):
        return
    clock = models.clock
    boxes, lms = np.asarray(arrays.boxes[rows]), np.asarray(arrays.landmarks[rows])
    natives: dict = {}  # full-size box crops, shared by the networks that cut the same box
    if arrays.frame_values is not None:
        net = models.backbone
        with clock("align", len(rows)):
            crops = net.crop.cut(chunk.images, boxes, lms, local, net.size, natives)
        with clock(f"frame ({net.name})", len(rows)):
            feats, outputs = net(crops)
        arrays.frame_values[rows] = feats
        arrays.frame_valid[rows] = True
        for head, out in arrays.frame_outputs.items():
            out[rows] = outputs[head]
    if arrays.clip_values is not None:
        expression = models.expression
        with clock("align", len(rows)):
            crops = expression.crop.cut(chunk.images, boxes, lms, local, expression.size, natives)
        with clock(f"expression ({expression.name})", len(rows)):
            feats, outputs = expression(crops)
        arrays.clip_values[rows, : feats.shape[1] + outputs["expr"].shape[1]] = np.concatenate(
            [feats, outputs["expr"]], axis=1
        )
        arrays.clip_valid[rows] = True
        clip = models.clip
        crops = box_crops(chunk.images, boxes, local, clip.landmarker_crop, clip.landmarker_margin)
        landmarker.submit(crops, chunk.times[local], partial(_store_landmarks, arrays, rows))


def _store_landmarks(arrays: _VisionArrays, rows: np.ndarray, lm) -> None:
    """The blendshapes and head pose of ``rows``: the clip entry's last columns."""
    width = lm.blendshapes.shape[1] + lm.head_pose.shape[1]
    arrays.clip_values[rows, -width:] = np.concatenate([lm.blendshapes, lm.head_pose], axis=1)
    arrays.landmarker_found[rows] = lm.found


class LandmarkerQueue:
    """A video's MediaPipe landmarker, run in a thread of its own a few chunks behind the
    networks: MediaPipe keeps about one core busy, and the detector and the CNNs use the
    rest meanwhile. Chunks go through in order (one worker: VIDEO mode needs the frames in
    time order); each result is handed to its ``done`` in the calling thread.

    The caller waits for results without beating (:mod:`mmaffect.watchdog`), so a MediaPipe
    call that never returns stalls the video as it did when called in line; the worker is a
    daemon thread, so it cannot hold the interpreter at exit.
    """

    def __init__(self, landmarker, clock: StageClock, depth: int = 2):
        self.landmarker, self.clock, self.depth = landmarker, clock, depth
        self._jobs: queue.Queue = queue.Queue()
        self._pending: deque = deque()
        self._thread = threading.Thread(target=self._work, daemon=True, name="landmarker")
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            crops, times, answer = job
            try:
                with self.clock("blendshapes (MediaPipe)", len(crops)):
                    answer.put(self.landmarker.process(crops, times))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                answer.put(e)

    def submit(self, crops, times, done: Callable) -> None:
        answer: queue.Queue = queue.Queue(maxsize=1)
        self._jobs.put((crops, times, answer))
        self._pending.append((answer, done))
        while len(self._pending) > self.depth:
            self._finish_one()

    def _finish_one(self) -> None:
        answer, done = self._pending.popleft()
        result = answer.get()
        if isinstance(result, BaseException):
            raise result
        done(result)

    def drain(self) -> None:
        """Wait for every chunk submitted so far and store its results."""
        while self._pending:
            self._finish_one()

    def close(self) -> None:
        """Stop the worker once the call in progress (if any) returns; queued chunks are
        dropped."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
        self._jobs.put(None)
        self._thread.join()


def _close(chunks) -> None:
    """End a frame stream (and its ffmpeg) whether or not it was read to the end."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def run_vision(
    opened: OpenedSource,
    *,
    cache: FeatureCache,
    models: VisionModels,
    wanted: set[str],
    force: bool = False,
    batch_size: int = 32,
    chunks: Iterator | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> VisionResult:
    """Fill the missing vision entries (``faces`` always, ``frame``/``clip`` when wanted).

    ``chunks`` is the video's frame stream when the caller started decoding it already
    (:class:`Prefetch`); by default the frames are decoded here, two chunks ahead. The stream,
    its ffmpeg and the video's MediaPipe landmarker are closed before this returns or raises.
    Run as watched work (:mod:`mmaffect.watchdog`), every chunk is a beat, and the pass stops at
    the next chunk once its waiter has given it up.
    """
    video = opened.info.require_video()
    timing = FrameTiming(fps=float(video.fps), n_frames=video.frames, start=video.start_time)
    todo, keys, signature = vision_todo(opened, cache, models, wanted, force)
    result = VisionResult(frames=timing.n_frames, computed=todo)
    result.reused = [n for n in ("faces", "frame", "clip") if n in wanted | {"faces"}]
    result.reused = [n for n in result.reused if n not in todo]
    with contextlib.ExitStack() as stack:
        if chunks is not None:
            stack.callback(_close, chunks)
        if not todo:
            result.faces_found = int(np.asarray(cache.load(keys["faces"][0])["found"]).sum())
            return result
        if chunks is None:
            chunks = Prefetch(opened.frames(chunk_size=batch_size))
            stack.callback(chunks.close)
        writers = {
            n: stack.enter_context(
                cache.writer(keys[n][0], timing=timing, config=keys[n][1], source=signature)
            )
            for n in todo
        }
        arrays = _VisionArrays.open(writers, cache, keys["faces"][0], models)
        kind = opened.source.kind
        landmarker = _landmarker_queue(stack, models, kind) if "clip" in writers else None
        find_faces = FaceFinder(models, kind) if "faces" in writers else None
        seen = 0
        for chunk in chunks:
            beat("vision")
            if find_faces is not None:
                find_faces(chunk, arrays)
            _embed_faces(chunk, arrays, models, landmarker)
            for writer in writers.values():  # memory stays flat however long the video
                writer.release()
            seen += len(chunk.indices)
            if on_frames:
                on_frames(len(chunk.indices))
        if landmarker is not None:
            landmarker.drain()
        result.faces_found = int(np.asarray(arrays.found).sum())
        _commit(writers, arrays, models, opened, frames_seen=seen)
        return result


def _landmarker_queue(stack: contextlib.ExitStack, models: VisionModels, kind: str):
    """The video's MediaPipe landmarker behind a :class:`LandmarkerQueue`, closed by
    ``stack`` (VIDEO mode follows the face; an image set is seen image by image)."""
    mediapipe = stack.enter_context(models.landmarker("image" if kind == "images" else "video"))
    on_abandon(mediapipe.abandon)  # stuck inside MediaPipe: never close it
    landmarks = LandmarkerQueue(mediapipe, models.clock)
    stack.callback(landmarks.close)
    return landmarks


def _commit(writers: dict, arrays: _VisionArrays, models: VisionModels, opened, frames_seen):
    """Publish the entries written, with what each one's meta records beside the arrays."""
    for name, writer in writers.items():
        columns = clip_columns(models.expression) if name == "clip" else None
        extra = {"frames_seen": frames_seen}
        if name == "faces" and opened.source.kind == "images":  # each row's image and size
            extra["image_set"] = opened.info.listing()
        if name == "frame" and arrays.frame_outputs:
            net = models.backbone
            extra.update(expr_names=list(net.expr_names), au_names=list(net.au_names))
        writer.commit(columns=columns, extra=extra)
