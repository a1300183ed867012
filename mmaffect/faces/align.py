"""Five-point face alignment to the ArcFace template (similarity transform).

The transform from the five detected landmarks (left eye, right eye, nose tip, left and right
mouth corners, as :mod:`mmaffect.faces.retinaface` returns them) to the standard ArcFace
112x112 reference points is estimated in closed form by least squares (Umeyama, 1991): a
rotation, a uniform scale and a translation, no shear. For a 224x224 output the template is
scaled by 2.

The warp uses ``torch.nn.functional.grid_sample`` (bilinear, zeros outside the frame), so it
needs no OpenCV, batches all faces in one call and can run on a GPU. It follows OpenCV's
``warpAffine`` pixel convention (pixel centres at integer coordinates), so the result matches
``cv2.warpAffine(frame, M, (size, size))`` up to interpolation rounding. Only the part of each
frame a face samples from is cropped and converted to float, so memory stays small whatever the
frame size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "align_faces",
    "alignment_matrices",
    "apply_affine",
    "arcface_template",
    "estimate_similarity",
    "invert_affine",
    "similarity_params",
]

#: ArcFace reference points for a 112x112 crop: left eye, right eye, nose tip, left and right
#: mouth corners, in (x, y) pixels with pixel centres at integer coordinates.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def arcface_template(size: int = 112) -> np.ndarray:
    """The five ArcFace reference points scaled for a ``size`` x ``size`` crop, (5, 2) float64."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama).

    Parameters
    ----------
    src
        (K, 2) or batched (B, K, 2) source points, K >= 2.
    dst
        Target points, same shape as ``src`` or (K, 2) shared by the whole batch.

    Returns
    -------
    np.ndarray
        (2, 3) or (B, 2, 3) float64 matrices ``M`` with ``dst ~= M[:, :2] @ p + M[:, 2]``;
        ``M[:, :2] = s * R`` with ``R`` a proper rotation (no reflection). Degenerate input
        (all source points equal) gives scale 0.
    """
    src = np.asarray(src, dtype=np.float64)
    single = src.ndim == 2
    if single:
        src = src[None]
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    if src.shape[-1] != 2 or src.shape[-2] < 2:
        raise ValueError(f"expected (..., K>=2, 2) points, got {src.shape}")
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=1, keepdims=True)
    xs, xd = src - mu_s, dst - mu_d
    cov = np.einsum("bki,bkj->bij", xd, xs) / src.shape[1]  # (B, 2, 2) dst x src
    u, sig, vt = np.linalg.svd(cov)
    # Force det(R) = +1: flip the weakest axis when the best orthogonal fit is a reflection.
    d = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    d[d == 0] = 1.0
    dmat = np.zeros((len(src), 2, 2))
    dmat[:, 0, 0] = 1.0
    dmat[:, 1, 1] = d
    rot = u @ dmat @ vt
    var_s = (xs**2).sum(axis=(1, 2)) / src.shape[1]
    trace = sig[:, 0] + d * sig[:, 1]
    scale = np.divide(trace, var_s, out=np.zeros_like(trace), where=var_s > 0)
    lin = scale[:, None, None] * rot
    trans = mu_d[:, 0] - np.einsum("bij,bj->bi", lin, mu_s[:, 0])
    out = np.concatenate([lin, trans[:, :, None]], axis=2)
    return out[0] if single else out


def similarity_params(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Scale, rotation angle and translation (2,) of a (2, 3) similarity matrix.

    The angle is ``atan2(M[1, 0], M[0, 0])`` in radians; with image axes (y down) a positive
    angle turns clockwise on screen.
    """
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    angle = float(np.arctan2(m[1, 0], m[0, 0]))
    return scale, angle, m[:, 2].copy()


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., K, 2) points through (2, 3) or matching (..., 2, 3) affine matrices."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("...ij,...kj->...ki", m[..., :2], p) + m[..., None, :, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of (2, 3) or (B, 2, 3) affine matrices."""
    m = np.asarray(matrix, dtype=np.float64)
    lin_inv = np.linalg.inv(m[..., :2])
    trans = -np.einsum("...ij,...j->...i", lin_inv, m[..., 2])
    return np.concatenate([lin_inv, trans[..., None]], axis=-1)


def alignment_matrices(landmarks: np.ndarray, size: int = 112, zoom: float = 1.0) -> np.ndarray:
    """Similarity transforms from detected landmarks to the ArcFace template of ``size``.

    Parameters
    ----------
    landmarks
        (5, 2) or (M, 5, 2) pixel coordinates in RetinaFace order.
    size
        Output crop size (112 or 224; any positive size works, the template scales with it).
    zoom
        The template scaled by this about the crop centre: above 1 the face fills more of the
        crop (less background), below 1 less.

    Returns
    -------
    np.ndarray
        (2, 3) or (M, 2, 3) float64 matrices, frame pixels -> crop pixels, in the convention of
        ``cv2.warpAffine``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape[-2:] != (5, 2):
        raise ValueError(f"landmarks must be (..., 5, 2), got {landmarks.shape}")
    centre = (size - 1) / 2.0
    template = centre + (arcface_template(size) - centre) * float(zoom)
    return estimate_similarity(landmarks, template)


def align_faces(
    frames: np.ndarray,
    landmarks: np.ndarray,
    size: int = 112,
    *,
    frame_index: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    zoom: float = 1.0,
) -> np.ndarray:
    """Warp faces to the ArcFace template with their 5-point similarity transform.

    Parameters
    ----------
    frames
        (N, H, W, 3) uint8 frames (any channel order; it is kept).
    landmarks
        (M, 5, 2) landmarks in frame pixels, RetinaFace order.
    size
        Output side: 112 (ArcFace) or 224 (template scaled by 2).
    frame_index
        (M,) index of the frame each face comes from. Default: face ``i`` is in frame ``i``
        (then M must equal N).
    device
        Where the sampling runs (``"cpu"`` or ``"cuda"``).
    zoom
        Template zoom (:func:`alignment_matrices`); 1 is the face-recognition crop.

    Returns
    -------
    np.ndarray
        (M, size, size, 3) uint8 aligned faces; parts outside the frame are black.
    """
    frames = np.asarray(frames)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (M, 5, 2), got {landmarks.shape}")
    m = len(landmarks)
    if frame_index is None:
        if m != len(frames):
            raise ValueError(
                f"{m} landmark sets for {len(frames)} frames: pass frame_index to say which "
                "frame each face is in"
            )
        frame_index = np.arange(m)
    frame_index = np.asarray(frame_index, dtype=np.int64)
    if frame_index.shape != (m,) or (
        m and not 0 <= frame_index.min() <= frame_index.max() < len(frames)
    ):
        raise ValueError(f"frame_index must be (M,) indices into the {len(frames)} frames")
    if m == 0:
        return np.zeros((0, size, size, 3), np.uint8)

    height, width = frames.shape[1:3]
    fwd = alignment_matrices(landmarks, size, zoom)
    if not np.all(np.isfinite(fwd)) or np.any(np.abs(np.linalg.det(fwd[:, :, :2])) < 1e-12):
        raise ValueError("degenerate landmarks (all points equal or not finite): cannot align")
    inv = invert_affine(fwd)  # crop pixels -> frame pixels
    grid = np.arange(size, dtype=np.float64)
    gx, gy = np.meshgrid(grid, grid)  # output pixel centres
    src_x = inv[:, 0, 0, None, None] * gx + inv[:, 0, 1, None, None] * gy + inv[:, 0, 2, None, None]
    src_y = inv[:, 1, 0, None, None] * gx + inv[:, 1, 1, None, None] * gy + inv[:, 1, 2, None, None]

    # Window of frame pixels each face reads (bilinear reads floor(x) and floor(x) + 1),
    # clipped to the frame: reads outside it hit grid_sample's zero padding, which is exactly
    # the black border of warpAffine.
    x0 = np.clip(np.floor(src_x.min(axis=(1, 2))), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(src_x.max(axis=(1, 2))) + 2, 0, width).astype(np.int64)
    y0 = np.clip(np.floor(src_y.min(axis=(1, 2))), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(src_y.max(axis=(1, 2))) + 2, 0, height).astype(np.int64)
    x1, y1 = np.maximum(x1, x0), np.maximum(y1, y0)
    win_w = max(int((x1 - x0).max()), 1)
    win_h = max(int((y1 - y0).max()), 1)
    crops = np.zeros((m, win_h, win_w, 3), np.uint8)
    for i in range(m):
        crops[i, : y1[i] - y0[i], : x1[i] - x0[i]] = frames[
            frame_index[i], y0[i] : y1[i], x0[i] : x1[i]
        ]

    # Window pixel coordinates -> grid_sample's normalised coordinates (align_corners=False:
    # -1 and 1 are the outer edges of the first and last pixels).
    norm_x = (2.0 * (src_x - x0[:, None, None]) + 1.0) / win_w - 1.0
    norm_y = (2.0 * (src_y - y0[:, None, None]) + 1.0) / win_h - 1.0
    dev = torch.device(device)
    grid_t = torch.from_numpy(np.stack([norm_x, norm_y], axis=-1)).float().to(dev)
    inp = torch.from_numpy(crops).to(dev).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        out = F.grid_sample(inp, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.contiguous().cpu().numpy()
