"""The vision side of extraction: decode → faces (detect + track, or organiser crops) →
aligned crops → frame backbone (``frame``) and expression + blendshapes + head pose (``clip``).

One pass over the frames fills every vision entry that is missing from the cache, chunk by
chunk, into memory-mapped arrays (memory does not grow with the video's length). Frames are
decoded in a background thread (:func:`prefetch`) so ffmpeg works while the models run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmaffect.faces.tracking import SubjectTracker, TrackerConfig
from mmaffect.features.cache import EntryKey, FeatureCache, config_hash, source_signature
from mmaffect.features.expression import FEATURE_DIM as EXPR_DIM
from mmaffect.features.expression import FER_CLASSES
from mmaffect.features.stages import StageClock
from mmaffect.features.timing import FrameTiming
from mmaffect.media.source import OpenedSource

FACE_VERSION = "1"
FRAME_VERSION = "1"
CLIP_VERSION = "1"


@dataclass(frozen=True)
class FaceConfig:
    detector: str = "retinaface_mobilenet0.25"  # model-store name
    max_side: int = 640  # detection runs on frames downscaled to this longest side
    score_threshold: float = 0.6  # minimum face probability
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    version: str = FACE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameConfig:
    backbone: str = "efficientnet_lite0"  # name in the frame-backbone registry
    crop_size: int | None = None  # aligned crop side; None: the backbone's own (224 for Lite0)
    version: str = FRAME_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClipConfig:
    expression: str = "fer2013_mini_xception"  # model-store name of the expression net
    landmarker: str = "face_landmarker"  # model-store name of the MediaPipe bundle
    landmarker_crop: int = 256  # MediaPipe sees a square crop of this side around the face
    landmarker_margin: float = 1.8  # crop side = margin × the longer side of the face box
    version: str = CLIP_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def face_config_dict(config: FaceConfig, organiser_crops: bool) -> dict[str, Any]:
    if organiser_crops:  # organiser crops are used as they are: no detector involved
        return {"source": "organiser_crops", "version": FACE_VERSION}
    return config.to_dict()


def clip_columns(blendshape_names: tuple[str, ...]) -> list[str]:
    return (
        [f"expr_feat_{i}" for i in range(EXPR_DIM)]
        + [f"p_{c}" for c in FER_CLASSES]
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
        if self._backbone is None:
            from mmaffect.features.frame import get_frame_backbone

            cls = get_frame_backbone(self.frame.backbone)
            with self.clock("load models"):
                self._backbone = cls.build(self._resolve(cls.model), device=self.device)
        return self._backbone

    @property
    def expression(self):
        if self._expression is None:
            from mmaffect.features.expression import ExpressionNet

            with self.clock("load models"):
                self._expression = ExpressionNet(self._resolve(self.clip.expression), self.device)
        return self._expression

    def landmarker(self):
        """A new MediaPipe landmarker (VIDEO mode keeps per-stream state: one per video)."""
        from mmaffect.faces.landmarker import FaceLandmarker

        with self.clock("load models"):
            return FaceLandmarker(self._resolve(self.clip.landmarker))


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


def landmarker_crops(
    images: np.ndarray, boxes: np.ndarray, frame_index: np.ndarray, size: int, margin: float
) -> np.ndarray:
    """Square crops around face boxes (zero-padded at the frame border), resized to ``size``."""
    import cv2

    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    height, width = images.shape[1:3]
    for k, (box, fi) in enumerate(zip(boxes, frame_index, strict=True)):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = margin * max(box[2] - box[0], box[3] - box[1])
        scale = size / max(side, 1.0)
        # Affine map: crop pixel = scale * (frame pixel - top-left corner).
        m = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
        out[k] = cv2.warpAffine(
            images[fi], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    return out


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
    signature = source_signature(source.path)
    todo = [
        name
        for name in ("faces", *sorted(wanted & {"frame", "clip"}))
        if force or not cache.is_fresh(keys[name][0], signature)
    ]
    return todo, keys, signature


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
    (:class:`Prefetch`); by default the frames are decoded here, two chunks ahead.
    """
    from mmaffect.faces.align import align_faces

    source = opened.source
    video = opened.info.require_video()
    timing = FrameTiming(fps=float(video.fps), n_frames=video.frames, start=video.start_time)
    organiser = source.kind == "frames"
    todo, keys, signature = vision_todo(opened, cache, models, wanted, force)
    result = VisionResult(frames=timing.n_frames)
    result.reused = [
        n for n in ("faces", "frame", "clip") if n in wanted | {"faces"} and n not in todo
    ]
    if not todo:
        if chunks is not None and hasattr(chunks, "close"):
            chunks.close()
        faces = cache.load(keys["faces"][0])
        result.faces_found = int(np.asarray(faces["found"]).sum())
        return result

    clock = models.clock
    writers = {
        n: cache.writer(keys[n][0], timing=timing, config=keys[n][1], source=signature)
        for n in todo
    }
    try:
        if "faces" in writers:
            w = writers["faces"]
            found, boxes = w.array("found", (), bool), w.array("box", (4,))
            scores, lms = w.array("score", ()), w.array("landmarks", (5, 2))
            n_faces = w.array("n_faces", (), np.int16)
            tracker = SubjectTracker(models.face.tracker)
        else:
            cached = cache.load(keys["faces"][0])
            found, boxes, lms = cached["found"], cached["box"], cached["landmarks"]
        if "frame" in writers:
            backbone = models.backbone
            frame_values = writers["frame"].array("values", (backbone.dim,))
            frame_valid = writers["frame"].array("valid", (), bool)
        if "clip" in writers:
            expression = models.expression
            landmarker = models.landmarker()
            from mmaffect.faces.landmarker import BLENDSHAPE_NAMES as bs_names

            clip_values = writers["clip"].array("values", (EXPR_DIM + 7 + len(bs_names) + 3,))
            clip_valid = writers["clip"].array("valid", (), bool)
            lm_found = writers["clip"].array("landmarker_found", (), bool)

        seen = 0
        if chunks is None:
            chunks = prefetch(opened.frames(chunk_size=batch_size))
        for chunk in chunks:
            idx = chunk.indices
            if "faces" in writers:
                if organiser:
                    h, w_ = chunk.images.shape[1:3]
                    found[idx] = True
                    boxes[idx] = (0, 0, w_, h)
                    scores[idx] = 1.0
                    lms[idx] = organiser_landmarks(w_)
                    n_faces[idx] = 1
                else:
                    with clock("face detection", len(idx)):
                        dets = models.detector.detect(chunk.images)
                    for row, det in zip(idx, dets, strict=True):
                        n_faces[row] = len(det)
                        pick = tracker.update(det)
                        if pick is not None:
                            found[row] = True
                            boxes[row] = det.boxes[pick]
                            scores[row] = det.scores[pick]
                            lms[row] = det.landmarks[pick]
            local = np.flatnonzero(np.asarray(found[idx]))
            rows = idx[local]
            if len(rows) and ("frame" in writers or "clip" in writers):
                chunk_lms = np.asarray(lms[rows])
                if "frame" in writers:
                    size = models.frame.crop_size or backbone.crop_size
                    with clock("align", len(rows)):
                        crops = align_faces(chunk.images, chunk_lms, size, frame_index=local)
                    with clock(f"frame ({backbone.name})", len(rows)):
                        frame_values[rows] = backbone.embed(crops)
                    frame_valid[rows] = True
                if "clip" in writers:
                    with clock("align", len(rows)):
                        crops112 = align_faces(chunk.images, chunk_lms, 112, frame_index=local)
                    with clock("expression (mini-Xception)", len(rows)):
                        feats, probs = expression(crops112)
                    with clock("blendshapes (MediaPipe)", len(rows)):
                        lm_in = landmarker_crops(
                            chunk.images,
                            np.asarray(boxes[rows]),
                            local,
                            models.clip.landmarker_crop,
                            models.clip.landmarker_margin,
                        )
                        lm = landmarker.process(lm_in, chunk.times[local])
                    clip_values[rows] = np.concatenate(
                        [feats, probs, lm.blendshapes, lm.head_pose], axis=1
                    )
                    clip_valid[rows] = True
                    lm_found[rows] = lm.found
            seen += len(idx)
            if on_frames:
                on_frames(len(idx))

        if "clip" in writers:
            landmarker.close()
        result.faces_found = int(np.asarray(found).sum())
        for name in todo:
            columns = None
            if name == "clip":
                columns = clip_columns(tuple(bs_names))
            writers[name].commit(columns=columns, extra={"frames_seen": seen})
        result.computed = todo
        return result
    finally:
        for w in writers.values():
            w.__exit__(None, None, None)
