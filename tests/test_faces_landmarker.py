"""MediaPipe Face Landmarker wrapper on real media (RAVDESS actor 05, the sample clips).

Clips are decoded with :func:`mmaffect.media.iter_frames`. Landmarker runs are deterministic on
CPU, so the figures quoted in comments are what mediapipe 1.2.2 gives here; the thresholds
leave wide margins around them. The whole file takes about 10-25 s on 2 CPU cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, nonempty

from mmaffect.errors import MmaffectError, ModelNotFound
from mmaffect.faces.landmarker import (
    BLENDSHAPE_NAMES,
    N_LANDMARKS,
    FaceLandmarker,
    LandmarkerResult,
    head_pose_from_matrix,
)
from mmaffect.media.frames import FrameChunk, iter_frames
from mmaffect.store import resolve

RAVDESS = "video/ravdess_av_actor05"
NEUTRAL = "01-01-01-01-02-01-05.mp4"  # emotion 01 (neutral), "Dogs are sitting by the door"
HAPPY = "01-01-03-01-01-02-05.mp4"  # emotion 03 (happy), normal intensity
ASTRONAUT = REPO / "sample_media" / "astronaut_talking.mp4"
NO_FACE = REPO / "sample_media" / "no_face.mp4"


@pytest.fixture(scope="module")
def model(models_dir: Path) -> Path:
    return resolve("face_landmarker", models_dir)


def run_video(
    model: Path, path: Path, every: int = 1, **options
) -> tuple[LandmarkerResult, np.ndarray]:
    """A whole clip through one VIDEO-mode landmarker, in chunks; returns (result, times)."""
    results, times = [], []
    with FaceLandmarker(model, **options) as lm:
        for chunk in iter_frames(path, chunk_size=32, every=every):
            results.append(lm.process(chunk.images, chunk.times))
            times.append(chunk.times)
    return LandmarkerResult.concat(results), np.concatenate(times)


def first_frames(path: Path, n: int) -> FrameChunk:
    return next(iter_frames(path, chunk_size=n))


def face_box(landmarks: np.ndarray, scale: float = 1.7) -> tuple[float, float, float]:
    """Centre (x, y) and side of a square box ``scale`` times the landmarks' bounding box."""
    (x1, y1), (x2, y2) = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    return float(x1 + x2) / 2, float(y1 + y2) / 2, scale * float(max(x2 - x1, y2 - y1))


def smile(res: LandmarkerResult) -> np.ndarray:
    return res.blendshape("mouthSmileLeft") + res.blendshape("mouthSmileRight")


@pytest.fixture(scope="module")
def ravdess(shared_data: Path, model: Path) -> dict[str, tuple[LandmarkerResult, np.ndarray]]:
    """Neutral and happy clips, full 1280x720 frames, VIDEO mode, landmarks kept."""
    folder = shared_data / RAVDESS
    return {name: run_video(model, folder / name, keep_landmarks=True) for name in (NEUTRAL, HAPPY)}


# -- names, shapes, detection rate -----------------------------------------------------------


def test_blendshape_names_as_the_model_returns_them(model, shared_data):
    assert len(BLENDSHAPE_NAMES) == 52 == len(set(BLENDSHAPE_NAMES))
    for name in ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "browInnerUp"):
        assert name in BLENDSHAPE_NAMES
    chunk = first_frames(shared_data / RAVDESS / NEUTRAL, 2)
    with FaceLandmarker(model, check_names=False) as lm:
        assert lm.category_names is None
        lm.process(chunk.images, chunk.times)
        assert lm.category_names == BLENDSHAPE_NAMES  # read from the result's categories
    # Independently, mediapipe's own enum (MOUTH_SMILE_LEFT <-> mouthSmileLeft) has that order.
    from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

    as_enum = [re.sub(r"(?<!^)([A-Z])", r"_\1", n.lstrip("_")).upper() for n in BLENDSHAPE_NAMES]
    assert as_enum == [b.name for b in sorted(Blendshapes, key=int)]


def test_result_shapes_and_dtypes(ravdess):
    res, times = ravdess[NEUTRAL]
    n = len(times)
    assert n > 80 and len(res) == n
    assert res.found.shape == (n,) and res.found.dtype == bool
    assert res.blendshapes.shape == (n, 52) and res.blendshapes.dtype == np.float32
    assert res.head_pose.shape == (n, 3) and res.head_pose.dtype == np.float32
    assert res.transforms.shape == (n, 4, 4)
    assert res.landmarks is not None and res.landmarks.shape == (n, N_LANDMARKS, 3)
    f = res.found
    assert (res.blendshapes[f] >= 0).all() and (res.blendshapes[f] <= 1).all()
    # Landmarks in pixels of the 1280x720 frame, on the face (centre of the frame here).
    xy = res.landmarks[f, :, :2]
    assert 300 < xy[..., 0].mean() < 1000 and 150 < xy[..., 1].mean() < 650
    assert np.ptp(xy[0, :, 0]) > 200  # the face is ~350 px wide at 720p


def test_face_found_in_ravdess(ravdess):
    for name, (res, _) in ravdess.items():
        assert res.found.mean() >= 0.95, name  # 100% here


def test_face_found_in_other_ravdess_clips_image_mode(shared_data, model):
    clips = nonempty(sorted((shared_data / RAVDESS).glob("*.mp4")), "RAVDESS clips")
    others = [c for c in clips if c.name not in (NEUTRAL, HAPPY)]
    assert len(others) >= 4
    with FaceLandmarker(model, running_mode="image") as lm:
        for clip in others[:: len(others) // 4][:4]:  # frames 0, 12, 24, 36 of 4 more clips
            chunk = next(iter_frames(clip, chunk_size=4, every=12))
            found = lm.process(chunk.images).found  # each frame detected from scratch
            assert found.all(), clip.name


# -- blendshapes mean what they say ------------------------------------------------------------


def test_happy_clip_smiles_more_than_neutral(ravdess):
    happy, neutral = smile(ravdess[HAPPY][0]).mean(), smile(ravdess[NEUTRAL][0]).mean()
    assert happy > 0.3 and neutral < 0.1  # ~1.05 vs ~0.003
    assert happy > 5 * neutral


def test_jaw_moves_during_speech_not_before(ravdess):
    res, times = ravdess[NEUTRAL]
    jaw = res.blendshape("jawOpen")
    before, speech = jaw[times < 0.5], jaw[(times >= 1.0) & (times <= 2.3)]
    assert len(before) >= 10 and len(speech) >= 30
    assert speech.std() > 0.03 and np.ptp(speech) > 0.1  # std ~0.074, range ~0.22
    assert speech.std() > 5 * before.std()  # before: std ~0.001


# -- head pose -------------------------------------------------------------------------------


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_head_pose_from_matrix_round_trip():
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in rng.uniform(-60, 60, size=(50, 3)):
        m = np.eye(4)
        m[:3, :3] = 1.3 * _rot("y", yaw) @ _rot("x", -pitch) @ _rot("z", roll)  # with a scale
        m[:3, 3] = (1.0, -2.0, -40.0)
        np.testing.assert_allclose(head_pose_from_matrix(m), [yaw, pitch, roll], atol=1e-6)
    # Nose (+z of the face) turned towards the image right (+x): the subject's left -> yaw > 0.
    assert head_pose_from_matrix(_rot("y", 20))[0] == pytest.approx(20)
    # Nose towards image up (+y): looking up -> pitch > 0.
    forward = _rot("x", -15) @ np.array([0, 0, 1])
    assert forward[1] > 0 and head_pose_from_matrix(_rot("x", -15))[1] == pytest.approx(15)
    batch = head_pose_from_matrix(np.stack([np.eye(4)] * 3))
    assert batch.shape == (3, 3) and np.allclose(batch, 0)


def test_head_pose_near_frontal_on_ravdess(ravdess):
    for name, (res, _) in ravdess.items():
        mean_abs = np.abs(res.head_pose[res.found]).mean(axis=0)
        assert (mean_abs < 20).all(), (name, mean_abs)  # ~(2-4, 4-6, 1-3) degrees


def test_yaw_and_pitch_signs_follow_the_nose(ravdess):
    """Yaw > 0 is a turn to the subject's left: the nose tip moves to the image right of the
    eyes' midpoint. Pitch > 0 is looking up: the nose tip moves up (image y decreases) from
    the midpoint of eyes and mouth. Checked frame by frame on the neutral clip's 2-D landmarks
    (its small head movements: yaw std ~0.1, pitch std ~0.8 degrees)."""
    res, _ = ravdess[NEUTRAL]
    lm = res.landmarks
    eyes = (lm[:, 33, :2] + lm[:, 263, :2]) / 2  # outer eye corners
    mouth = (lm[:, 13, :2] + lm[:, 14, :2]) / 2  # inner lips
    nose = lm[:, 1, :2]  # nose tip
    assert np.corrcoef(res.yaw, nose[:, 0] - eyes[:, 0])[0, 1] > 0.3  # ~0.6
    assert np.corrcoef(res.pitch, nose[:, 1] - (eyes[:, 1] + mouth[:, 1]) / 2)[0, 1] < -0.5  # ~-0.9


def test_in_plane_rotation_adds_to_roll(ravdess, shared_data, model):
    """Rotating the image +10 degrees (counter-clockwise, OpenCV's convention) adds ~+10 to roll
    and leaves yaw and pitch nearly unchanged; -10 takes 10 off."""
    chunk = first_frames(shared_data / RAVDESS / NEUTRAL, 16)
    base, _ = ravdess[NEUTRAL]
    base_pose = base.head_pose[:16]
    cx, cy, _ = face_box(base.landmarks[0])
    h, w = chunk.images.shape[1:3]
    for angle in (10.0, -10.0):
        m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        rotated = np.stack(
            [cv2.warpAffine(im, m, (w, h), borderMode=cv2.BORDER_REFLECT) for im in chunk.images]
        )
        with FaceLandmarker(model) as lm:
            res = lm.process(rotated, chunk.times)
        assert res.found.all()
        delta = (res.head_pose - base_pose).mean(axis=0)
        assert delta[2] == pytest.approx(angle, abs=2.0), delta  # ~ +10.0 / -9.9
        assert abs(delta[0]) < 3 and abs(delta[1]) < 3, delta


def test_mirroring_flips_yaw_and_roll_not_pitch(ravdess, shared_data, model):
    chunk = first_frames(shared_data / RAVDESS / HAPPY, 16)
    base = ravdess[HAPPY][0].head_pose[:16].mean(axis=0)  # ~(-3.8, -5.8, +2.8)
    assert abs(base[0]) > 1.5 and abs(base[2]) > 1.5  # not near zero: the check is meaningful
    with FaceLandmarker(model) as lm:
        res = lm.process(np.ascontiguousarray(chunk.images[:, :, ::-1]), chunk.times)
    assert res.found.all()
    mirrored = res.head_pose.mean(axis=0)  # ~(+3.5, -5.5, -3.2)
    assert np.sign(mirrored[0]) == -np.sign(base[0]) and abs(mirrored[0] + base[0]) < 1.5
    assert np.sign(mirrored[2]) == -np.sign(base[2]) and abs(mirrored[2] + base[2]) < 1.5
    assert abs(mirrored[1] - base[1]) < 1.5


# -- no face ---------------------------------------------------------------------------------


def test_no_face_gives_found_false_and_zeros(model):
    rng = np.random.default_rng(1)
    images = np.stack(
        [
            np.zeros((480, 640, 3), np.uint8),
            np.full((480, 640, 3), 255, np.uint8),
            rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        ]
    )
    for mode in ("video", "image"):
        with FaceLandmarker(model, running_mode=mode, keep_landmarks=True) as lm:
            res = lm.process(images, np.array([0.0, 0.04, 0.08]))
        assert not res.found.any()
        assert not res.blendshapes.any() and not res.head_pose.any()
        assert not res.transforms.any() and not res.landmarks.any()


def test_no_face_sample_clip(model):
    with FaceLandmarker(model) as lm:
        found = np.concatenate(
            [lm.process(c.images, c.times).found for c in iter_frames(NO_FACE, every=5)]
        )
    assert len(found) == 15 and not found.any()


# -- crops -----------------------------------------------------------------------------------


def test_crops_agree_with_full_frames(ravdess, shared_data, model):
    """A fixed 256x256 crop (1.7x the first frame's landmark box) gives the same blendshapes,
    and landmarks mapped back through ``boxes`` land where the full-frame ones are."""
    n = 48
    base, _ = ravdess[HAPPY]
    chunk = first_frames(shared_data / RAVDESS / HAPPY, n)
    cx, cy, side = face_box(base.landmarks[0])
    x0, y0, s = cx - side / 2, cy - side / 2, 256 / side
    warp = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
    crops = np.stack(
        [cv2.warpAffine(im, warp, (256, 256), flags=cv2.INTER_LINEAR) for im in chunk.images]
    )
    boxes = np.tile([x0, y0, x0 + side, y0 + side], (n, 1))
    with FaceLandmarker(model, keep_landmarks=True) as lm:
        res = lm.process(crops, chunk.times, boxes=boxes)
    assert res.found.all()
    full = base.blendshapes[:n]
    diff = np.abs(res.blendshapes - full)
    assert diff.mean() < 0.02  # ~0.004
    assert np.abs(res.blendshapes.mean(0) - full.mean(0)).max() < 0.06  # ~0.015
    assert np.corrcoef(res.blendshape("jawOpen"), base.blendshape("jawOpen")[:n])[0, 1] > 0.95
    assert abs(smile(res).mean() - smile(base)[:n].mean()) < 0.1
    px = np.abs(res.landmarks[..., :2] - base.landmarks[:n, :, :2]).mean()
    assert px < 3.0  # ~0.3 px
    # Head pose moves a little (the crop is re-centred: different perspective), not a lot.
    assert np.abs((res.head_pose - base.head_pose[:n]).mean(0)).max() < 5  # pitch ~2 degrees


def test_crops_of_different_sizes_as_a_list(ravdess, shared_data, model):
    base, _ = ravdess[NEUTRAL]
    chunk = first_frames(shared_data / RAVDESS / NEUTRAL, 6)
    cx, cy, _ = face_box(base.landmarks[0])
    crops = []
    for k, im in enumerate(chunk.images):
        side = 480 + 24 * k  # growing, non-contiguous views of the frame (face ~350x430 px)
        y0 = min(max(int(cy) - side // 2, 0), im.shape[0] - side)
        x0 = int(cx) - side // 2
        crops.append(im[y0 : y0 + side, x0 : x0 + side])
    assert len({c.shape for c in crops}) == 6 and not crops[0].flags.c_contiguous
    with FaceLandmarker(model) as lm:
        res = lm.process(crops, chunk.times)
    assert res.found.all()
    assert np.abs(res.blendshapes - base.blendshapes[:6]).mean() < 0.03


# -- sample clip -----------------------------------------------------------------------------


def test_astronaut_sample_face_found(model):
    res, times = run_video(model, ASTRONAUT, every=2)  # times stay the video's
    assert len(res) == 75 and times[1] == pytest.approx(2 / 25)
    assert res.found.mean() >= 0.95  # 100%
    assert smile(res).mean() > 0.5  # she smiles in the photo (~1.8)


# -- timestamps, streams, lifecycle --------------------------------------------------------------


def test_duplicate_and_rounded_times_are_accepted(ravdess, shared_data, model):
    chunk = first_frames(shared_data / RAVDESS / NEUTRAL, 6)
    times = np.array([0.0, 0.0, 0.0004, 0.0004, 0.0333, 0.0334])  # equal and ms-rounded together
    with FaceLandmarker(model) as lm:
        res = lm.process(chunk.images, times)
        assert res.found.all()
        # last stamp was 34 ms (0.0334 s nudged past 0.0333 s's 33): the next 0.0334 s -> 35
        assert list(lm._timestamps_ms(np.array([0.0334, 0.05]))) == [35, 50]
        with pytest.raises(ValueError, match="backwards"):
            lm.process(chunk.images[:1], [0.01])
        lm.reset()  # a new stream may start again at 0
        assert lm.process(chunk.images[:1], [0.0]).found.all()
    with FaceLandmarker(model) as lm, pytest.raises(ValueError, match="times"):
        lm.process(chunk.images[:2])


def test_independent_streams_interleaved(ravdess, shared_data, model):
    """Two landmarkers fed chunk by chunk in turn give exactly what each gives alone."""
    a = first_frames(shared_data / RAVDESS / NEUTRAL, 16)
    b = first_frames(shared_data / RAVDESS / HAPPY, 16)
    with FaceLandmarker(model) as la, FaceLandmarker(model) as lb:
        parts_a, parts_b = [], []
        for s in (slice(0, 5), slice(5, 11), slice(11, 16)):
            parts_a.append(la.process(a.images[s], a.times[s]))
            parts_b.append(lb.process(b.images[s], b.times[s]))
    for parts, name in ((parts_a, NEUTRAL), (parts_b, HAPPY)):
        got = LandmarkerResult.concat(parts).blendshapes
        np.testing.assert_allclose(got, ravdess[name][0].blendshapes[:16], atol=1e-5)


def test_closed_landmarker_and_bad_inputs(model):
    lm = FaceLandmarker(model)
    with pytest.raises(ValueError, match="RGB"):
        lm.process(np.zeros((2, 64, 64), np.uint8), [0.0, 0.1])
    with pytest.raises(ValueError, match="times"):
        lm.process(np.zeros((2, 64, 64, 3), np.uint8), [0.0])
    with pytest.raises(ValueError, match="RGB"):  # e.g. a crop box entirely off the frame
        lm.process([np.zeros((0, 64, 3), np.uint8)], [0.0])
    lm.close()
    lm.close()
    assert lm.closed
    with pytest.raises(RuntimeError, match="closed"):
        lm.process(np.zeros((1, 64, 64, 3), np.uint8), [0.0])


def test_missing_or_broken_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="face_landmarker"):
        FaceLandmarker(tmp_path / "face_landmarker.task")
    broken = tmp_path / "broken.task"
    broken.write_bytes(b"not a model bundle" * 64)
    with pytest.raises(MmaffectError, match="could not load the face landmarker"):
        FaceLandmarker(broken)


def test_concat_and_empty():
    empty = LandmarkerResult.concat([])
    assert len(empty) == 0 and empty.blendshapes.shape == (0, 52)
    two = LandmarkerResult.concat([LandmarkerResult.empty(2), LandmarkerResult.empty(3)])
    assert len(two) == 5 and two.landmarks is None
    with pytest.raises(KeyError):
        two.blendshape("notABlendshape")


# -- process hygiene ---------------------------------------------------------------------------


def test_import_does_not_load_mediapipe():
    code = "import sys, mmaffect.faces.landmarker; assert 'mediapipe' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_landmarkers_built_in_threads_leave_stderr_alone(model):
    """The start-up capture swaps file descriptor 2: concurrent builds must not leave it
    pointing at a temporary file."""
    before = os.fstat(2)

    def build() -> None:
        for _ in range(2):
            FaceLandmarker(model).close()

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_start_up_chatter_is_silenced(model, capfd):
    capfd.readouterr()
    FaceLandmarker(model, quiet=False).close()
    loud = capfd.readouterr().err
    FaceLandmarker(model).close()
    quiet = capfd.readouterr().err
    assert "Feedback manager" in loud  # what mediapipe prints on every task creation
    assert "Feedback manager" not in quiet and "face_landmarker_graph" not in quiet


def test_landmarker_queue_matches_calling_the_landmarker_in_turn(model):
    """The queue of the extraction (MediaPipe a few chunks behind the networks, in its own
    thread) hands back exactly what calling one landmarker chunk after chunk gives."""
    from mmaffect.features.stages import StageClock
    from mmaffect.features.vision import LandmarkerQueue

    direct, _ = run_video(model, ASTRONAUT)
    got: list[tuple[int, LandmarkerResult]] = []
    clock = StageClock()
    with FaceLandmarker(model) as lm:
        queue = LandmarkerQueue(lm, clock, depth=2)
        try:
            for i, chunk in enumerate(iter_frames(ASTRONAUT, chunk_size=32)):
                queue.submit(chunk.images, chunk.times, lambda r, i=i: got.append((i, r)))
                assert len(got) >= i - 2  # never more than `depth` chunks behind
            queue.drain()
        finally:
            queue.close()
    assert [i for i, _ in got] == list(range(len(got)))  # in submission order
    queued = LandmarkerResult.concat([r for _, r in got])
    assert queued.found.mean() > 0.9
    np.testing.assert_array_equal(queued.found, direct.found)
    np.testing.assert_allclose(queued.blendshapes, direct.blendshapes, atol=1e-6)
    assert clock.as_dict()["blendshapes (MediaPipe)"]["items"] == len(direct.found)
