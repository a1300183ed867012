"""Detection on key frames (``mmaffect/faces/keyframes.py``): which frames the detector sees,
how the rest are filled in, and that on real clips the result stays close to detecting every
frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import nonempty
from test_faces_retinaface import read_frames

from mmaffect.faces.keyframes import KeyframeDetector, key_rows
from mmaffect.faces.retinaface import Detections, load_retinaface


def face_at(x: float, score: float = 0.99) -> Detections:
    """One 100-px face whose left edge is at ``x`` (landmarks at fixed offsets in the box)."""
    box = np.array([[x, 50, x + 100, 150]], np.float32)
    points = np.array([[[x + 30, 80], [x + 70, 80], [x + 50, 100], [x + 35, 120], [x + 65, 120]]])
    return Detections(box, np.array([score], np.float32), points.astype(np.float32))


def two_faces(x1: float, x2: float) -> Detections:
    a, b = face_at(x1), face_at(x2)
    return Detections(
        np.concatenate([a.boxes, b.boxes]),
        np.concatenate([a.scores, b.scores]),
        np.concatenate([a.landmarks, b.landmarks]),
    )


class Scripted:
    """A detector whose answer for frame ``i`` is ``script(i)``; the frame index is written
    in each image's first pixel. Records which frames it was asked about."""

    def __init__(self, script):
        self.script, self.seen = script, []

    def __call__(self, images: np.ndarray) -> list[Detections]:
        rows = [int(im[0, 0, 0]) for im in images]
        self.seen.extend(rows)
        return [self.script(i) for i in rows]


def images(n: int) -> np.ndarray:
    out = np.zeros((n, 4, 4, 3), np.uint8)
    out[:, 0, 0, 0] = np.arange(n)
    return out


def run(detect, n_frames: int, every: int = 4, chunk: int = 16) -> tuple[list, KeyframeDetector]:
    """Every frame's detections, the video cut in chunks as the extraction does."""
    keyed = KeyframeDetector(detect, every)
    frames = images(n_frames)
    out = []
    for start in range(0, n_frames, chunk):
        idx = np.arange(start, min(start + chunk, n_frames))
        out += keyed(frames[idx], idx)
    return out, keyed


def test_key_rows_close_each_run_of_n_frames_and_each_chunk() -> None:
    assert key_rows(np.arange(16), 4, previous=False).tolist() == [0, 3, 7, 11, 15]
    assert key_rows(np.arange(16, 32), 4, previous=True).tolist() == [3, 7, 11, 15]
    assert key_rows(np.arange(18, 30), 4, previous=True).tolist() == [1, 5, 9, 11]
    assert key_rows(np.arange(5, 6), 4, previous=True).tolist() == [0]


def test_a_steadily_moving_face_is_interpolated_between_key_frames() -> None:
    detect = Scripted(lambda i: face_at(5.0 * i))
    dets, keyed = run(detect, 32)
    # the first frame, then every 4th; the second chunk starts from the first's last frame
    assert sorted(detect.seen) == [0, 3, 7, 11, 15, 19, 23, 27, 31] and keyed.detected == 9
    for i, d in enumerate(dets):
        assert len(d) == 1
        np.testing.assert_allclose(d.boxes[0], face_at(5.0 * i).boxes[0], atol=1e-4)
        np.testing.assert_allclose(d.landmarks[0], face_at(5.0 * i).landmarks[0], atol=1e-4)


@pytest.mark.parametrize(
    "script, redone",
    [
        # a cut at frame 5: the face jumps; frames 4-6 (between keys 3 and 7) are detected
        (lambda i: face_at(0.0 if i < 5 else 500.0), [4, 5, 6]),
        # a second face enters at frame 9: keys 7 and 11 disagree on the count
        (lambda i: two_faces(0.0, 400.0) if i >= 9 else face_at(0.0), [8, 9, 10]),
        # an unsure face at key 11: frames 8-10 and 12-14 are detected
        (lambda i: face_at(0.0, score=0.7 if i == 11 else 0.99), [8, 9, 10, 12, 13, 14]),
        # a cut across the chunks: frames 16-18 (between key 15 and key 19) are detected
        (lambda i: face_at(0.0 if i < 17 else 500.0), [16, 17, 18]),
    ],
    ids=["scene-cut", "face-enters", "unsure-face", "cut-across-chunks"],
)
def test_key_frames_that_disagree_have_every_frame_between_them_detected(
    script, redone: list[int]
) -> None:
    detect = Scripted(script)
    dets, keyed = run(detect, 32)
    keys = [0, 3, 7, 11, 15, 19, 23, 27, 31]
    assert sorted(detect.seen) == sorted(keys + redone) and keyed.detected == 9 + len(redone)
    for i in redone:  # detected frames carry the detector's own answer
        np.testing.assert_array_equal(dets[i].boxes, script(i).boxes)


def test_no_face_at_two_key_frames_means_none_between() -> None:
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                       np.zeros((0, 5, 2), np.float32))  # fmt: skip
    detect = Scripted(lambda i: empty)
    dets, keyed = run(detect, 9)
    assert keyed.detected == 4 and all(len(d) == 0 for d in dets)  # frames 0, 3, 7, 8


def test_every_frame_detected_when_every_is_one() -> None:
    detect = Scripted(lambda i: face_at(50.0 * i))
    dets, keyed = run(detect, 20, every=1)
    assert sorted(detect.seen) == list(range(20)) and keyed.detected == 20


@pytest.fixture(scope="module")
def detector(models_dir: Path):
    return load_retinaface(models_dir / "retinaface_mobilenet0.25.pth", "cpu", max_side=320)


@pytest.mark.parametrize(
    "clip", ["video/ravdess_av_actor05/01-01-03-01-01-02-05.mp4", "video/talking_heads"]
)
def test_real_clip_every_fourth_frame_stays_close_to_every_frame(
    detector, shared_data: Path, clip: str
) -> None:
    path = shared_data / clip
    if path.is_dir():
        path = nonempty(sorted(path.glob("*.mp4")), "talking-head clips")[0]
    frames = read_frames(path, limit=48)
    every = detector.detect(frames)
    keyed = KeyframeDetector(detector.detect, 4)
    got_dets = [
        d for s in range(0, 48, 16) for d in keyed(frames[s : s + 16], np.arange(s, s + 16))
    ]
    assert keyed.detected <= 0.5 * len(frames)  # the detector saw at most half the frames
    assert [len(d) for d in got_dets] == [len(d) for d in every]
    assert all(len(d) >= 1 for d in every)
    ref = np.stack([d.landmarks[0] for d in every])
    got = np.stack([d.landmarks[0] for d in got_dets])
    eyes = np.linalg.norm(ref[:, 0] - ref[:, 1], axis=1)
    nme = np.linalg.norm(ref - got, axis=2).mean(axis=1) / eyes
    assert nme.mean() < 0.05 and nme.max() < 0.15, (nme.mean(), nme.max())
