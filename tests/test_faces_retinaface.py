"""RetinaFace (MobileNet-0.25) detection and 5-point alignment on real media.

Frames are decoded with PyAV directly. The detector runs at ``max_side=320`` on the 720p
RAVDESS clips (the face is ~350 px wide at full size, ~90 px after the downscale) and at the
default 640 on the 1080p street scene, to keep the whole file well under 30 s on 2 CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import nonempty

from mmaffect.errors import ChecksumMismatch
from mmaffect.faces.align import (
    ARCFACE_TEMPLATE_112,
    align_faces,
    alignment_matrices,
    apply_affine,
    arcface_template,
    estimate_similarity,
    similarity_params,
)
from mmaffect.faces.retinaface import (
    Detections,
    RetinaFace,
    RetinaFaceDetector,
    clean_state_dict,
    load_retinaface,
    load_retinaface_net,
    nms,
    prior_boxes,
)

WEIGHTS = "retinaface_mobilenet0.25.pth"
RAVDESS = "video/ravdess_av_actor05"
NEUTRAL_CLIP = "01-01-01-01-02-01-05.mp4"  # emotion code 01: neutral


def read_frames(path: Path, every: int = 1, limit: int | None = None) -> np.ndarray:
    """Every ``every``-th decoded frame (up to ``limit`` of them) as (N, H, W, 3) RGB uint8."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding
        for i, frame in enumerate(container.decode(stream)):
            if i % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) == limit:
                    break
    assert frames, f"no frames decoded from {path}"
    return np.stack(frames)


@pytest.fixture(scope="module")
def weights(models_dir: Path) -> Path:
    path = models_dir / WEIGHTS
    assert path.is_file(), f"missing {path}"
    return path


@pytest.fixture(scope="module")
def detector(weights: Path) -> RetinaFaceDetector:
    return load_retinaface(weights, "cpu", max_side=640)


@pytest.fixture(scope="module")
def ravdess_clips(shared_data: Path) -> list[Path]:
    return nonempty(sorted((shared_data / RAVDESS).glob("*.mp4")), "RAVDESS clips")


@pytest.fixture(scope="module")
def neutral_frames(shared_data: Path) -> np.ndarray:
    return read_frames(shared_data / RAVDESS / NEUTRAL_CLIP, every=12, limit=6)


# --- weights --------------------------------------------------------------------------------


def test_state_dict_loads_strict(weights: Path) -> None:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = RetinaFace()
    result = net.load_state_dict(clean_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Every parameter and buffer of the module comes from the file.
    assert set(net.state_dict()) == set(clean_state_dict(state))
    # DataParallel checkpoints carry a "module." prefix: it is stripped.
    prefixed = {f"module.{k}": v for k, v in state.items()}
    assert list(clean_state_dict(prefixed)) == list(state)


def test_checksum_is_verified(weights: Path) -> None:
    with pytest.raises(ChecksumMismatch):
        load_retinaface_net(weights, expected_sha256="0" * 64)


def test_fused_batchnorm_matches_unfused(weights: Path, neutral_frames: np.ndarray) -> None:
    plain = RetinaFaceDetector(load_retinaface_net(weights), max_side=320)
    fused = load_retinaface(weights, max_side=320, fuse=True)
    a, b = plain.detect(neutral_frames[:2]), fused.detect(neutral_frames[:2])
    for da, db in zip(a, b, strict=True):
        assert len(da) == len(db) >= 1
        np.testing.assert_allclose(da.boxes, db.boxes, atol=0.05)
        np.testing.assert_allclose(da.landmarks, db.landmarks, atol=0.05)


# --- priors and NMS -------------------------------------------------------------------------


def test_prior_boxes_count_and_layout() -> None:
    priors = prior_boxes(640, 640)
    # (80*80 + 40*40 + 20*20) cells x 2 anchor sizes
    assert priors.shape == (16800, 4)
    np.testing.assert_allclose(priors[0].numpy(), [4 / 640, 4 / 640, 16 / 640, 16 / 640])
    np.testing.assert_allclose(priors[1].numpy(), [4 / 640, 4 / 640, 32 / 640, 32 / 640])
    np.testing.assert_allclose(priors[-1].numpy(), [624 / 640, 624 / 640, 0.8, 0.8])
    # Non-square, non-multiple-of-32 input: every level rounds its size up.
    assert prior_boxes(360, 640).shape[0] == 2 * (45 * 80 + 23 * 40 + 12 * 20)


def test_nms_hand_made_boxes() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A 0.90
            [1.0, 1.0, 11.0, 11.0],  # B 0.80: IoU(A) = 0.68, IoU(D) = 0.32
            [20.0, 20.0, 30.0, 30.0],  # C 0.70: overlaps nothing
            [0.0, 0.0, 10.0, 5.0],  # D 0.95: IoU(A) = 0.5
            [20.0, 20.0, 30.0, 26.0],  # E 0.60: IoU(C) = 0.6
        ]
    )
    scores = torch.tensor([0.90, 0.80, 0.70, 0.95, 0.60])
    # Greedy: D suppresses A (0.5 > 0.4); B survives since A is gone; C suppresses E.
    assert nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    # With a looser threshold A stays, and then removes B.
    assert nms(boxes, scores, 0.55).tolist() == [3, 0, 2]
    assert nms(boxes[:0], scores[:0], 0.4).numel() == 0


# --- detection on real media ----------------------------------------------------------------


def test_ravdess_one_face_per_frame(
    detector: RetinaFaceDetector, ravdess_clips: list[Path]
) -> None:
    detector.max_side = 320
    try:
        found = total = 0
        for clip in ravdess_clips[:3]:
            frames = read_frames(clip, every=3)
            height, width = frames.shape[1:3]
            assert (width, height) == (1280, 720)
            for start in range(0, len(frames), 16):
                for det in detector.detect(frames[start : start + 16]):
                    total += 1
                    if len(det) == 0:
                        continue
                    found += 1
                    x1, y1, x2, y2 = det.boxes[0]
                    assert det.scores[0] > 0.9
                    assert 0.10 * width <= x2 - x1 <= 0.60 * width
                    # Any other detection is a much smaller, weaker candidate.
                    sides = det.boxes[:, 2:] - det.boxes[:, :2]
                    areas = sides[:, 0] * sides[:, 1]
                    assert np.all(areas[1:] < 0.25 * areas[0])
                    pts = det.landmarks[0]
                    assert np.all((pts[:, 0] >= x1) & (pts[:, 0] <= x2))
                    assert np.all((pts[:, 1] >= y1) & (pts[:, 1] <= y2))
                    eyes_y, mouth_y = pts[:2, 1].max(), pts[3:, 1].min()
                    assert eyes_y < pts[2, 1] < mouth_y  # eyes above nose above mouth
                    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # left is left
        assert total >= 60
        assert found >= 0.95 * total, f"face found in {found}/{total} frames"
    finally:
        detector.max_side = 640


def test_street_scene_has_several_faces(detector: RetinaFaceDetector, shared_data: Path) -> None:
    frames = read_frames(shared_data / "video/street_multiface/video.mp4", every=25, limit=3)
    assert frames.shape[1:3] == (1080, 1920)
    dets = detector.detect(frames)
    counts = [len(d) for d in dets]
    assert max(counts) >= 2, counts
    for d in dets:
        assert isinstance(d, Detections)
        assert d.boxes.shape == (len(d), 4) and d.landmarks.shape == (len(d), 5, 2)
        assert np.all(np.diff(d.scores) <= 0) and np.all(d.scores > 0.6)
        # Boxes are in pixels of the 1080p frame, not of the 640-wide network input.
        assert np.all(d.boxes[:, [0, 2]] <= 1920) and np.all(d.boxes[:, [1, 3]] <= 1080)
    assert max(d.boxes[:, 2].max() for d in dets if len(d)) > 640


def test_batch_equals_one_by_one(detector: RetinaFaceDetector, neutral_frames: np.ndarray) -> None:
    batched = detector.detect(neutral_frames)
    assert len(batched) == len(neutral_frames)
    for frame, det in zip(neutral_frames, batched, strict=True):
        (single,) = detector.detect(frame[None])
        assert len(single) == len(det) >= 1
        np.testing.assert_allclose(det.boxes, single.boxes, atol=1.0)
        np.testing.assert_allclose(det.landmarks, single.landmarks, atol=1.0)
        np.testing.assert_allclose(det.scores, single.scores, atol=1e-3)


def test_detect_rejects_bad_input_and_empty_batch(detector: RetinaFaceDetector) -> None:
    with pytest.raises(ValueError):
        detector.detect(np.zeros((1, 64, 64, 3), np.float32))
    assert detector.detect(np.zeros((0, 64, 64, 3), np.uint8)) == []
    (blank,) = detector.detect(np.zeros((1, 120, 160, 3), np.uint8))
    assert len(blank) == 0 and blank.landmarks.shape == (0, 5, 2)


# --- alignment ------------------------------------------------------------------------------


def test_similarity_recovers_scale_and_angle() -> None:
    rng = np.random.default_rng(0)
    for scale, degrees in [(0.5, 20.0), (2.3, -35.0), (1.0, 170.0)]:
        theta = math.radians(degrees)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        shift = rng.uniform(-200, 200, size=2)
        moved = ARCFACE_TEMPLATE_112 @ (scale * rot).T + shift
        est = estimate_similarity(ARCFACE_TEMPLATE_112, moved)
        s, a, t = similarity_params(est)
        assert s == pytest.approx(scale, rel=1e-9)
        assert a == pytest.approx(theta, abs=1e-9)
        np.testing.assert_allclose(t, shift, atol=1e-7)
        # Landmarks -> template is the inverse transform.
        back = alignment_matrices(moved, 112)
        s_back, a_back, _ = similarity_params(back)
        assert s_back == pytest.approx(1 / scale) and a_back == pytest.approx(-theta)
        # A noisy copy still gives the right parameters to within the noise.
        noisy = moved + rng.normal(0, 0.5, moved.shape)
        s_n, a_n, _ = similarity_params(estimate_similarity(ARCFACE_TEMPLATE_112, noisy))
        assert abs(s_n / scale - 1) < 0.05 and abs(a_n - theta) < math.radians(3)


def test_warp_puts_points_on_the_template() -> None:
    """Bright dots drawn at the landmarks land on the template points of the aligned crop."""
    theta = math.radians(25.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    landmarks = ARCFACE_TEMPLATE_112 @ (1.7 * rot).T + [300.0, 150.0]
    yy, xx = np.mgrid[0:480, 0:640]
    frame = np.zeros((480, 640), np.float64)
    for x, y in landmarks:
        frame += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2))
    frames = np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[None, :, :, None], 3, axis=3)
    for size in (112, 224):
        (crop,) = align_faces(frames, landmarks[None], size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        img = crop[:, :, 0].astype(np.float64)
        for tx, ty in arcface_template(size):
            x0, y0 = round(tx) - 5, round(ty) - 5
            patch = img[y0 : y0 + 11, x0 : x0 + 11]
            py, px = np.mgrid[0:11, 0:11]
            cx = (patch * px).sum() / patch.sum() + x0
            cy = (patch * py).sum() / patch.sum() + y0
            assert abs(cx - tx) < 0.5 and abs(cy - ty) < 0.5


def test_align_real_faces(detector: RetinaFaceDetector, neutral_frames: np.ndarray) -> None:
    dets = detector.detect(neutral_frames)
    landmarks = np.stack([d.landmarks[0] for d in dets])
    template = arcface_template(112)
    matrices = alignment_matrices(landmarks, 112)
    # A frontal neutral face fits the template closely through a similarity transform.
    dist = np.linalg.norm(apply_affine(matrices, landmarks) - template, axis=-1)
    assert dist.mean() < 2.0 and dist.max() < 3.5, dist.round(2)

    crops = align_faces(neutral_frames, landmarks, 112)
    assert crops.shape == (len(neutral_frames), 112, 112, 3) and crops.dtype == np.uint8
    assert crops.std() > 20  # an image, not a blank
    # The detector finds the face again in each crop, its landmarks where the transform put
    # them (a mirrored or shifted warp would move the eyes by tens of pixels).
    again = detector.detect(crops)
    for det, mapped in zip(again, apply_affine(matrices, landmarks), strict=True):
        assert len(det) >= 1
        assert np.linalg.norm(det.landmarks[0] - mapped, axis=-1).max() < 6.0

    # 224 crops are the 112 ones at twice the scale, and several faces of one frame can be
    # aligned with frame_index.
    big = align_faces(
        neutral_frames[:1], np.repeat(landmarks[:1], 2, axis=0), 224, frame_index=np.array([0, 0])
    )
    assert big.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(big[0], big[1])
    small = big[0].reshape(112, 2, 112, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - crops[0].astype(np.float64)).mean() < 8.0

    with pytest.raises(ValueError):
        align_faces(neutral_frames, landmarks[:1], 112)  # 1 face for 6 frames, no frame_index
    with pytest.raises(ValueError):
        align_faces(neutral_frames[:1], np.full((1, 5, 2), 50.0), 112)  # degenerate
