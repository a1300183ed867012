"""MediaPipe Face Landmarker: 52 blendshapes, head pose and 478 landmarks per frame.

A thin wrapper around ``mediapipe.tasks.python.vision.FaceLandmarker``, written against
mediapipe 1.2.x (its tasks API over the ``libmediapipe`` C library, called through ctypes). It
takes frames the way :func:`mmaffect.media.iter_frames` yields them, a ``(n, H, W, 3)`` uint8
RGB batch plus the frame times in seconds, and returns plain numpy arrays. mediapipe is imported
only when a landmarker is built, so importing this module is cheap. More (speed, the 52 names,
checks): ``docs/features_faces_landmarker.md``.

Running modes
-------------
``"video"`` (default) feeds frames to MediaPipe's VIDEO mode: after the first detection the
face is tracked from the previous frame's landmarks and the face detector only runs again when
tracking is lost. VIDEO mode requires strictly increasing integer millisecond timestamps; the
wrapper derives them from ``times`` (rounded to ms, duplicates and rounding collisions nudged
forward by 1 ms) and raises if ``times`` goes backwards. One landmarker follows one stream: use
one per video (or per tracked face), or call :meth:`FaceLandmarker.reset` between streams.
``"image"`` runs every frame independently (detector every time; ``times`` is ignored); use it
for frames that are not consecutive, e.g. organiser crops with gaps.

Face crops
----------
``process`` accepts any images, so the caller may pass crops around a tracked face (e.g.
256x256) instead of full frames; timestamps still come from the video. The crop must hold the
whole face with a margin: a square box 1.4-2x the face's landmark box, resized to 256x256,
gives blendshapes within ~0.005 (mean absolute difference) of the full frame's; a box smaller
than the face loses it. Give the crop boxes (``boxes=``, frame pixels) to get landmarks back in
frame coordinates. Head pose from a crop differs by 1-2 degrees (mostly pitch) for a face away
from the frame centre, because MediaPipe assumes a pinhole camera centred on the image it is
given: a face off-axis in the full frame is seen obliquely, in a centred crop it is not.

Head pose convention
--------------------
Derived from the facial transformation matrix ``M`` (4x4, canonical face model -> camera
space, both right-handed, metric units). Camera space as MediaPipe defines it: ``+x`` image
right, ``+y`` image up, ``+z`` out of the screen towards the viewer (the camera looks along
``-z``). With ``R`` the rotation part of ``M`` (columns normalised), the angles are the
intrinsic Y-X-Z decomposition ``R = Ry(yaw) @ Rx(-pitch) @ Rz(roll)``, in degrees:

* ``yaw`` (about the vertical axis): positive when the subject turns to **their left** (the
  nose moves towards the image right);
* ``pitch`` (about the horizontal axis): positive when the subject looks **up** (chin up);
* ``roll`` (about the viewing axis): positive when the head tilts **counter-clockwise as seen
  in the image**, i.e. towards the subject's right shoulder. Rotating the image by ``+a``
  degrees counter-clockwise (``cv2.getRotationMatrix2D(c, a, 1)``) adds ``a`` to roll.

A frontal face looking into the camera is ``(0, 0, 0)``. Mirroring the image left-right flips
the signs of yaw and roll and keeps pitch.

Lifecycle
---------
Close every landmarker deterministically: ``with FaceLandmarker(...) as lm`` or ``close()``
in a ``finally``. There is deliberately no ``__del__``: MediaPipe runs its C calls on a worker
thread and ``close()`` waits for it, so a close started by the garbage collector (which may run
on any thread, MediaPipe's included) can wait forever. Landmarkers still open at interpreter
exit are closed by an ``atexit`` hook. :meth:`FaceLandmarker.abandon` gives up one that is stuck.

Threads and logging
-------------------
Each MediaPipe landmarker runs its C calls on its own Python worker thread (a serial
dispatcher), and its graph on two native threads; mediapipe 1.2 exposes no thread-count option.
One landmarker keeps about one core busy; landmarkers in different threads run in parallel
(ctypes releases the GIL). The wrapper is not thread-safe: use one :class:`FaceLandmarker` per
thread. Creating a landmarker makes the C++
side print a few harmless lines (absl "Logging before InitGoogle()", the XNNPACK delegate
notice, "Feedback manager requires a model with a single signature") straight to file
descriptor 2, where environment variables such as ``GLOG_minloglevel`` do not reach them.
With ``quiet=True`` (default) file descriptor 2 is captured while the task is created: the
known lines go to this module's logger at DEBUG level, anything else is written back to stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmaffect.errors import MmaffectError, ModelNotFound

__all__ = [
    "BLENDSHAPE_NAMES",
    "N_BLENDSHAPES",
    "N_LANDMARKS",
    "FaceLandmarker",
    "LandmarkerResult",
    "RunningMode",
    "head_pose_from_matrix",
]

log = logging.getLogger(__name__)

RunningMode = Literal["video", "image"]

#: The 52 blendshape categories in MediaPipe's output order (index 0 is ``_neutral``). "Left"
#: and "Right" are the subject's sides, not the viewer's. The landmarker checks the names it
#: receives against this tuple on its first detection.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "eyeLookDownLeft",
    "eyeLookDownRight",
    "eyeLookInLeft",
    "eyeLookInRight",
    "eyeLookOutLeft",
    "eyeLookOutRight",
    "eyeLookUpLeft",
    "eyeLookUpRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "eyeWideLeft",
    "eyeWideRight",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "noseSneerLeft",
    "noseSneerRight",
)
N_BLENDSHAPES = len(BLENDSHAPE_NAMES)
#: Landmarks per face: 468 face-mesh points + 10 iris points.
N_LANDMARKS = 478

# Lines the C++ side prints on task creation that carry no information for a user.
_NOISE = re.compile(
    r"Logging before InitGoogle|FaceBlendshapesGraph acceleration|"
    r"Created TensorFlow Lite XNNPACK delegate|Feedback manager requires a model"
)

# Every open landmarker, held strongly: one that is dropped without close() stays alive until
# the atexit hook closes it in the main thread, while mediapipe's modules are intact, and is
# never closed by the garbage collector (MediaPipe's own task finaliser calls close(), which can
# deadlock there, see "Lifecycle").
_OPEN: set[FaceLandmarker] = set()
# Landmarkers given up while stuck (see FaceLandmarker.abandon): kept alive, never closed.
_ABANDONED: list[FaceLandmarker] = []


@atexit.register
def _close_all() -> None:
    for landmarker in list(_OPEN):
        with contextlib.suppress(Exception):
            landmarker.close()


@dataclass(frozen=True)
class LandmarkerResult:
    """Per-frame Face Landmarker outputs for a batch of frames (one face per frame).

    Attributes
    ----------
    found
        (n,) bool, whether a face was found in the frame.
    blendshapes
        (n, 52) float32 scores in [0, 1], columns in :data:`BLENDSHAPE_NAMES` order; zeros
        where no face was found.
    head_pose
        (n, 3) float32 ``(yaw, pitch, roll)`` in degrees (convention in the module docstring);
        zeros where no face was found.
    transforms
        (n, 4, 4) float32 facial transformation matrices (canonical face -> camera space,
        centimetre-scale units); zeros where no face was found.
    landmarks
        (n, 478, 3) float32 or ``None`` (only kept on request). ``x, y`` in pixels of the
        frame (of the input image, or of the full frame when crop boxes were given); ``z`` is
        MediaPipe's relative depth (smaller = nearer the camera) in the same pixel scale as
        ``x``. Zeros where no face was found.
    """

    found: np.ndarray
    blendshapes: np.ndarray
    head_pose: np.ndarray
    transforms: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.found)

    @property
    def yaw(self) -> np.ndarray:
        """(n,) yaw in degrees, positive when the subject turns to their left."""
        return self.head_pose[:, 0]

    @property
    def pitch(self) -> np.ndarray:
        """(n,) pitch in degrees, positive when the subject looks up."""
        return self.head_pose[:, 1]

    @property
    def roll(self) -> np.ndarray:
        """(n,) roll in degrees, positive for a counter-clockwise tilt in the image."""
        return self.head_pose[:, 2]

    def blendshape(self, name: str) -> np.ndarray:
        """(n,) scores of one blendshape, by its MediaPipe name (e.g. ``"jawOpen"``)."""
        try:
            return self.blendshapes[:, BLENDSHAPE_NAMES.index(name)]
        except ValueError:
            raise KeyError(f"unknown blendshape {name!r}") from None

    @classmethod
    def empty(cls, n: int, *, keep_landmarks: bool = False) -> LandmarkerResult:
        """A result of ``n`` frames without a face."""
        return cls(
            found=np.zeros(n, bool),
            blendshapes=np.zeros((n, N_BLENDSHAPES), np.float32),
            head_pose=np.zeros((n, 3), np.float32),
            transforms=np.zeros((n, 4, 4), np.float32),
            landmarks=np.zeros((n, N_LANDMARKS, 3), np.float32) if keep_landmarks else None,
        )

    @classmethod
    def concat(cls, results: Sequence[LandmarkerResult]) -> LandmarkerResult:
        """Join the results of consecutive chunks into one."""
        if not results:
            return cls.empty(0)
        has_landmarks = all(r.landmarks is not None for r in results)
        return cls(
            found=np.concatenate([r.found for r in results]),
            blendshapes=np.concatenate([r.blendshapes for r in results]),
            head_pose=np.concatenate([r.head_pose for r in results]),
            transforms=np.concatenate([r.transforms for r in results]),
            landmarks=(
                np.concatenate([r.landmarks for r in results])  # type: ignore[misc]
                if has_landmarks
                else None
            ),
        )


def head_pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll in degrees from facial transformation matrices.

    Parameters
    ----------
    matrix
        (4, 4) or (..., 4, 4) (or the 3x3 rotation part) as MediaPipe's Face Landmarker returns
        it: canonical face -> camera space, camera ``+x`` right, ``+y`` up, ``+z`` towards the
        viewer. Any uniform scale in the matrix is removed.

    Returns
    -------
    np.ndarray
        (..., 3) float64 ``(yaw, pitch, roll)`` with ``R = Ry(yaw) @ Rx(-pitch) @ Rz(roll)``:
        yaw positive when the subject turns to their left, pitch positive when they look up,
        roll positive for a counter-clockwise head tilt as seen in the image.
    """
    m = np.asarray(matrix, dtype=np.float64)
    r = m[..., :3, :3]
    norms = np.linalg.norm(r, axis=-2, keepdims=True)  # column norms (the scale, if any)
    r = r / np.where(norms > 0, norms, 1.0)
    # R = Ry(a) Rx(b) Rz(c):  R[1,2] = -sin b,  R[0,2]/R[2,2] = tan a,  R[1,0]/R[1,1] = tan c
    rx = np.degrees(np.arcsin(np.clip(-r[..., 1, 2], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(r[..., 0, 2], r[..., 2, 2]))
    roll = np.degrees(np.arctan2(r[..., 1, 0], r[..., 1, 1]))
    return np.stack([yaw, -rx, roll], axis=-1)


# File descriptor 2 is process-wide: captures from several threads must not interleave (a
# thread restoring "its" saved descriptor could otherwise leave fd 2 on another's temp file).
_FD2_LOCK = threading.Lock()


@contextlib.contextmanager
def _captured_stderr(enabled: bool) -> Iterator[list[str]]:
    """Capture what C code writes to file descriptor 2; the lines are in the yielded list."""
    lines: list[str] = []
    if not enabled:
        yield lines
        return
    with _FD2_LOCK, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _pass_on(lines: list[str]) -> None:
    """Known noise to the debug log; anything unexpected back to stderr."""
    for line in lines:
        if not line.strip():
            continue
        if _NOISE.search(line):
            log.debug("mediapipe: %s", line)
        else:
            print(line, file=sys.stderr)


class FaceLandmarker:
    """MediaPipe Face Landmarker over batches of RGB frames (or face crops).

    Parameters
    ----------
    model_path
        ``face_landmarker.task`` (e.g. ``mmaffect.store.resolve("face_landmarker", dir)``).
    running_mode
        ``"video"`` (track across consecutive frames; needs ``times``) or ``"image"`` (every
        frame on its own).
    num_faces
        Faces MediaPipe looks for. With more than one, the largest face (landmark bounding box)
        of each frame is reported. For several people, prefer one landmarker per tracked face
        on crops.
    min_detection_confidence, min_presence_confidence, min_tracking_confidence
        MediaPipe's thresholds (face detector score, landmark-model face presence, and the
        tracking score below which VIDEO mode re-runs the detector).
    keep_landmarks
        Also return the (n, 478, 3) landmarks (about 5.7 kB per frame).
    check_names
        Check the blendshape names of the first detection against :data:`BLENDSHAPE_NAMES`.
    quiet
        Capture the C++ start-up chatter (see the module docstring).

    Raises
    ------
    ModelNotFound
        When ``model_path`` does not exist.
    MmaffectError
        When MediaPipe cannot build the task from the file.

    Examples
    --------
    >>> with FaceLandmarker(resolve("face_landmarker", models_dir)) as lm:  # doctest: +SKIP
    ...     for chunk in iter_frames(video):
    ...         res = lm.process(chunk.images, chunk.times)
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        running_mode: RunningMode = "video",
        num_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        keep_landmarks: bool = False,
        check_names: bool = True,
        quiet: bool = True,
    ) -> None:
        if running_mode not in ("video", "image"):
            raise ValueError(f"running_mode must be 'video' or 'image', not {running_mode!r}")
        if num_faces < 1:
            raise ValueError("num_faces must be >= 1")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelNotFound(
                f"face landmarker model not found: {self.model_path}",
                hint='get it with mmaffect.store.resolve("face_landmarker", models_dir)',
            )
        self.running_mode: RunningMode = running_mode
        self.num_faces = int(num_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_presence_confidence = float(min_presence_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.keep_landmarks = keep_landmarks
        self.check_names = check_names
        self.quiet = quiet
        #: Blendshape category names as received on the first detection (``None`` before).
        self.category_names: tuple[str, ...] | None = None
        self._task: Any = None
        self._mp: Any = None
        self._last_ms: int | None = None
        self._last_time: float | None = None
        self._open()

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=(
                vision.RunningMode.VIDEO
                if self.running_mode == "video"
                else vision.RunningMode.IMAGE
            ),
            num_faces=self.num_faces,
            min_face_detection_confidence=self.min_detection_confidence,
            min_face_presence_confidence=self.min_presence_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            with _captured_stderr(self.quiet) as lines:
                self._task = vision.FaceLandmarker.create_from_options(options)
        except (ValueError, RuntimeError) as exc:
            raise MmaffectError(
                f"MediaPipe could not load the face landmarker {self.model_path.name}: {exc}",
                hint="is it a MediaPipe face_landmarker.task bundle?",
                detail="\n".join(lines),
            ) from exc
        _pass_on(lines)
        self._mp = mp
        self._last_ms = None
        self._last_time = None
        _OPEN.add(self)

    def close(self) -> None:
        """Release the MediaPipe task (and its worker thread). Safe to call twice."""
        task, self._task = self._task, None
        _OPEN.discard(self)
        if task is not None:
            task.close()

    def reset(self) -> None:
        """Start a new stream: forget the tracked face and the timestamps (rebuilds the task)."""
        self.close()
        self._open()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._task is None

    def abandon(self) -> None:
        """Forget this landmarker without closing it: for one stuck inside MediaPipe, whose
        close would wait on the stuck call. Nothing will close it, not even at exit."""
        _OPEN.discard(self)
        _ABANDONED.append(self)  # never garbage-collected, so MediaPipe's finaliser never runs

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # No __del__: closing from the garbage collector deadlocks. The collector can run inside
    # MediaPipe's own worker thread (e.g. while the next landmarker is created), and close()
    # waits for that very thread. Close with ``with`` or close(); see "Lifecycle" above.

    # -- timestamps ------------------------------------------------------------------------

    def _timestamps_ms(self, times: np.ndarray) -> np.ndarray:
        """Strictly increasing integer milliseconds for VIDEO mode, continuing the stream."""
        out = np.empty(len(times), np.int64)
        last_ms, last_time = self._last_ms, self._last_time
        for i, t in enumerate(times):
            t = float(t)
            if not np.isfinite(t):
                raise ValueError(f"frame time {t} is not finite")
            if last_time is not None and t < last_time - 1e-3:
                raise ValueError(
                    f"frame times go backwards ({t:.3f} s after {last_time:.3f} s): one "
                    "FaceLandmarker follows one stream; call reset() or use a new one per video"
                )
            ms = round(t * 1000.0)
            if last_ms is not None and ms <= last_ms:
                ms = last_ms + 1  # duplicate or rounded-together times
            out[i] = ms
            last_ms, last_time = ms, max(t, last_time) if last_time is not None else t
        self._last_ms, self._last_time = last_ms, last_time
        return out

    # -- inference -------------------------------------------------------------------------

    def process(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        times: np.ndarray | Sequence[float] | None = None,
        *,
        boxes: np.ndarray | None = None,
    ) -> LandmarkerResult:
        """Run the landmarker on a batch of frames or face crops.

        Parameters
        ----------
        images
            (n, H, W, 3) uint8 RGB, or a sequence of n (H_i, W_i, 3) uint8 RGB images (crops
            of different sizes).
        times
            (n,) frame times in seconds, from the video even for crops. Required in
            ``"video"`` mode, ignored in ``"image"`` mode. Must not decrease across calls
            (equal or rounded-together times are fine).
        boxes
            Optional (n, 4) ``(x0, y0, x1, y1)``: where each crop was cut from its frame, in
            frame pixels (a crop resized to W_i x H_i pixels is fine). Only affects the
            coordinates of the returned landmarks, which are then in frame pixels.

        Returns
        -------
        LandmarkerResult
        """
        if self._task is None:
            raise RuntimeError("this FaceLandmarker is closed")
        seq = list(images) if not isinstance(images, np.ndarray) else images
        if isinstance(seq, np.ndarray) and (seq.ndim != 4 or seq.shape[-1] != 3):
            raise ValueError(f"images must be (n, H, W, 3) RGB, got shape {seq.shape}")
        n = len(seq)
        if self.running_mode == "video":
            if times is None:
                raise ValueError("times (seconds) are required in video mode")
            times = np.asarray(times, dtype=np.float64).reshape(-1)
            if len(times) != n:
                raise ValueError(f"{n} images but {len(times)} times")
            stamps = self._timestamps_ms(times)
        else:
            stamps = np.zeros(n, np.int64)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if len(boxes) != n:
                raise ValueError(f"{n} images but {len(boxes)} boxes")

        res = LandmarkerResult.empty(n, keep_landmarks=self.keep_landmarks)
        mp = self._mp
        for i in range(n):
            image = np.asarray(seq[i])
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.size:
                raise ValueError(
                    f"image {i}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
                )
            # mp.Image reads the buffer as packed rows: views (crops, strides) must be copied.
            mp_image = mp.Image(mp.ImageFormat.SRGB, np.ascontiguousarray(image))
            if self.running_mode == "video":
                out = self._task.detect_for_video(mp_image, int(stamps[i]))
            else:
                out = self._task.detect(mp_image)
            if not out.face_landmarks:
                continue
            h, w = image.shape[:2]
            k = self._pick_face(out.face_landmarks, w, h)
            self._fill(res, i, out, k, w, h, None if boxes is None else boxes[i])
        return res

    def _pick_face(self, faces: list, w: int, h: int) -> int:
        if len(faces) == 1:
            return 0
        areas = []
        for face in faces:
            xs = [p.x * w for p in face]
            ys = [p.y * h for p in face]
            areas.append((max(xs) - min(xs)) * (max(ys) - min(ys)))
        return int(np.argmax(areas))

    def _fill(
        self,
        res: LandmarkerResult,
        i: int,
        out: Any,
        k: int,
        w: int,
        h: int,
        box: np.ndarray | None,
    ) -> None:
        categories = out.face_blendshapes[k] if k < len(out.face_blendshapes) else []
        if len(categories) != N_BLENDSHAPES:
            return  # never seen: a face without its blendshapes counts as not found
        if self.category_names is None:
            names = tuple(c.category_name for c in sorted(categories, key=lambda c: c.index))
            if self.check_names and names != BLENDSHAPE_NAMES:
                raise MmaffectError(
                    "the face landmarker model returns different blendshape names than "
                    "mmaffect expects",
                    hint="use the MediaPipe face_landmarker.task bundle from the model store",
                    detail=f"got {names}",
                )
            self.category_names = names
        res.found[i] = True
        for c in categories:
            res.blendshapes[i, c.index] = c.score
        if k < len(out.facial_transformation_matrixes):
            matrix = np.asarray(out.facial_transformation_matrixes[k], dtype=np.float32)
            res.transforms[i] = matrix
            res.head_pose[i] = head_pose_from_matrix(matrix)
        if res.landmarks is not None:
            pts = np.array([(p.x, p.y, p.z) for p in out.face_landmarks[k]], dtype=np.float32)
            pts *= np.array([w, h, w], dtype=np.float32)  # normalised -> pixels of the input
            if box is not None:
                sx = (box[2] - box[0]) / w
                sy = (box[3] - box[1]) / h
                pts[:, 0] = box[0] + pts[:, 0] * sx
                pts[:, 1] = box[1] + pts[:, 1] * sy
                pts[:, 2] *= sx
            res.landmarks[i, : len(pts)] = pts[:N_LANDMARKS]
