"""Image sets: photos read as a sequence of independent one-frame inputs.

An image set is the images of one folder (or the image files given from one folder), sorted by
file name (:func:`mmaffect.media.discover`). Image ``i`` is frame ``i`` of the set, at ``i``
seconds on a 1 fps grid, so the per-frame pipeline works on photos as it is: one cache entry per
set and extractor (not one per image), chunks of images through the networks, one model load
per batch. What differs is that nothing is carried from one image to the next: the face is
chosen in each image on its own, MediaPipe runs in IMAGE mode, and predictions are neither
interpolated nor smoothed across images.

Rules
-----
* **Orientation**: the EXIF orientation tag is applied (phone photos come out upright); sizes and
  coordinates are those of the upright image.
* **Size**: each image is analysed at its own size with its longest side brought into
  [:data:`MIN_SIDE`, :data:`MAX_SIDE`] (aspect kept): tiny images such as 48x48 FER2013 faces are
  upscaled to 320 px (RetinaFace finds half of them at 48 px, all of them at 320 px), large
  photos are downscaled to 1920 px (a 1080p video frame), JPEGs decoded at a reduced scale
  first. The rule depends on the image alone, so an image's result never depends on the other
  images of its folder, and no padding or letterboxing shifts its pixels. A chunk holds images
  of one analysed size, planned from the headers (photos of one camera share a size and fill
  whole chunks; a chunk's indices need not be consecutive).
* **Unreadable images** (not an image, empty, truncated, damaged) are found when the set is
  opened, by decoding every image (a JPEG at 1/8 scale, which still reads all its data), and
  left out of the set, each named with its reason (:attr:`ImageSetInfo.unreadable`); the set's
  frame count is the number of images that decode. A set with no readable image is a
  :class:`~mmaffect.errors.MediaError`. ``count="header"`` reads the headers only (fast; a
  truncated image then fails the set when it is decoded).
* **Coordinates**: faces are found in the analysed image; :func:`to_image_pixels` maps boxes
  to pixels of the upright original, which is what predictions report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.errors import MediaError
from mmaffect.media.frames import FrameChunk, output_size
from mmaffect.media.inputs import MediaSource
from mmaffect.media.probe import CountRule, MediaInfo, VideoStreamInfo
from mmaffect.watchdog import beat

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageEntry",
    "ImageSetInfo",
    "analysed_size",
    "image_set_signature",
    "iter_image_set",
    "probe_image_set",
    "read_image",
    "to_image_pixels",
    "upright_size",
]

#: Images whose longest side is shorter are upscaled to it (the face detector's smallest
#: anchors need faces of 16+ pixels after its own downscaling to 640).
MIN_SIDE = 320
#: Images whose longest side is longer are downscaled to it (the size of a 1080p frame).
MAX_SIDE = 1920
#: The frame grid of an image set: image i at i seconds.
FPS = Fraction(1)

_ORIENTATION_TAG = 0x0112
_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that exchange width and height


@dataclass(frozen=True)
class ImageEntry:
    """One readable image of a set: its file and its upright size in pixels."""

    path: Path
    width: int
    height: int
    format: str  # "jpeg", "png", …

    @property
    def analysed_size(self) -> tuple[int, int]:
        return analysed_size(self.width, self.height)


@dataclass(frozen=True)
class ImageSetInfo(MediaInfo):
    """Probe result of an image set: a :class:`MediaInfo` whose ``video`` describes the set
    (``frames`` = readable images, ``frames_header`` = image files, ``width``/``height`` = the
    largest image, ``codec`` = the image formats), plus the images and the unreadable files."""

    images: tuple[ImageEntry, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()  # (file name, reason)

    def listing(self) -> dict[str, Any]:
        """What the feature cache keeps with a set's faces: file names, upright sizes, the
        sizes they were analysed at, and the unreadable files with their reasons."""
        return {
            "files": [e.path.name for e in self.images],
            "sizes": [[e.width, e.height] for e in self.images],
            "analysed": [list(e.analysed_size) for e in self.images],
            "unreadable": [list(u) for u in self.unreadable],
        }


def analysed_size(
    width: int, height: int, resize: int | tuple[int, int] | None = None
) -> tuple[int, int]:
    """The size an image is analysed at: longest side brought into [MIN_SIDE, MAX_SIDE]
    (aspect kept), or ``resize`` as :func:`~mmaffect.media.frames.output_size` reads it."""
    if resize is not None:
        return output_size(width, height, resize)
    longest = max(width, height)
    if MIN_SIDE <= longest <= MAX_SIDE:
        return width, height
    scale = (MIN_SIDE if longest < MIN_SIDE else MAX_SIDE) / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _reason(error: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can read"
    return str(error) or type(error).__name__


def _read_header(path: Path, decode: bool) -> ImageEntry:
    """The upright size and format of an image; with ``decode`` the whole file is decoded
    (a JPEG at 1/8 scale) so that truncated and damaged images are found now."""
    from PIL import Image

    if path.stat().st_size == 0:
        raise OSError("an empty file (0 bytes)")
    with Image.open(path) as im:
        width, height = _upright(im)
        fmt = (im.format or path.suffix.lstrip(".")).lower()
        if decode:
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    return ImageEntry(path=path, width=width, height=height, format=fmt)


def _upright(im) -> tuple[int, int]:
    width, height = im.size
    swapped = im.getexif().get(_ORIENTATION_TAG, 1) in _SWAPPED
    return (height, width) if swapped else (width, height)


def upright_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as shown (EXIF orientation applied), from its header."""
    from PIL import Image

    with Image.open(path) as im:
        return _upright(im)


def probe_image_set(source: MediaSource, count: CountRule = "auto") -> ImageSetInfo:
    """Read every image of an image set (see the module's rules).

    Raises
    ------
    MediaError
        No image of the set can be read.
    """
    entries: list[ImageEntry] = []
    unreadable: list[tuple[str, str]] = []
    size = 0
    for path in source.images:
        beat("reading images")  # a long set is progress, not a stall (mmaffect.watchdog)
        try:
            size += path.stat().st_size
            entries.append(_read_header(path, decode=count != "header"))
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds; the file is named
            unreadable.append((path.name, _reason(e)))
    if not entries:
        shown = "; ".join(f"{name}: {why}" for name, why in unreadable[:3])
        more = f"; and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        raise MediaError(
            f"{source.id}: none of its {len(source.images)} image(s) can be read ({shown}{more})",
            hint="check that the files are images and not damaged",
        )
    largest = max(entries, key=lambda e: e.width * e.height)
    n = len(entries)
    video = VideoStreamInfo(
        index=0,
        codec=",".join(sorted({e.format for e in entries})),
        width=largest.width,
        height=largest.height,
        rotation=0,
        fps=FPS,
        nominal_fps=FPS,
        frames=n,
        frames_header=len(source.images),
        frame_count_method="images",
        duration=float(n),
        start_time=0.0,
        pix_fmt="rgb24",
        vfr=False,
    )
    return ImageSetInfo(
        path=source.path,
        kind="images",
        container="image set",
        size_bytes=size,
        duration=float(n),
        video=video,
        images=tuple(entries),
        unreadable=tuple(unreadable),
    )


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as upright RGB ``uint8 (H, W, 3)``, resized to ``size`` ``(w, h)`` when given
    (a JPEG is decoded at the smallest scale that is still at least ``size``)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            swapped = im.getexif().get(_ORIENTATION_TAG, 1) in _SWAPPED
            im.draft("RGB", (size[1], size[0]) if swapped else tuple(size))
        upright = ImageOps.exif_transpose(im).convert("RGB")
    if size is not None and upright.size != tuple(size):
        upright = upright.resize(tuple(size), Image.BILINEAR)
    return np.asarray(upright)


def _plan_chunks(sizes: Sequence[tuple[int, int]], chunk_size: int) -> list[list[int]]:
    """Indices per chunk: images of one size together, chunks in the order of their first."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    chunks = [
        idx[k : k + chunk_size] for idx in groups.values() for k in range(0, len(idx), chunk_size)
    ]
    return sorted(chunks, key=lambda c: c[0])


def iter_image_set(
    info: ImageSetInfo,
    *,
    chunk_size: int = 32,
    resize: int | tuple[int, int] | None = None,
    every: int = 1,
) -> Iterator[FrameChunk]:
    """Stream an image set as :class:`FrameChunk` objects of equal-size images.

    Raises
    ------
    MediaError
        An image that was readable when the set was opened cannot be decoded now.
    """
    entries = [e for i, e in enumerate(info.images) if i % every == 0]
    indices = [i for i in range(len(info.images)) if i % every == 0]
    sizes = [analysed_size(e.width, e.height, resize) for e in entries]
    for chunk in _plan_chunks(sizes, chunk_size):
        w, h = sizes[chunk[0]]
        images = np.empty((len(chunk), h, w, 3), np.uint8)
        for k, j in enumerate(chunk):
            try:
                images[k] = read_image(entries[j].path, (w, h))
            except Exception as e:  # noqa: BLE001 - Pillow raises many kinds; the file is named
                raise MediaError(
                    f"{entries[j].path} is not a readable image any more: {_reason(e)}",
                    hint="it changed since the set was opened, or it is damaged; remove or "
                    "replace it and run again",
                ) from e
        rows = np.asarray([indices[j] for j in chunk], dtype=np.int64)
        yield FrameChunk(images=images, indices=rows, times=rows / float(FPS))


def image_set_signature(source: MediaSource) -> dict[str, Any]:
    """What identifies the images a set's features were computed from (for the cache): the
    folder, and the number, names, total size and newest modification of its image files."""
    stats = [p.stat() for p in source.images]
    names = "\n".join(p.name for p in source.images).encode()
    return {
        "path": str(Path(source.path).resolve()),
        "files": len(stats),
        "names": hashlib.sha1(names).hexdigest()[:16],
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def to_image_pixels(boxes: np.ndarray, listing: dict[str, Any]) -> np.ndarray:
    """``(n, 4)`` boxes from pixels of the analysed images to pixels of the upright originals
    (``listing`` as :meth:`ImageSetInfo.listing` made it; NaN rows stay NaN)."""
    sizes = np.asarray(listing["sizes"], dtype=np.float64).reshape(-1, 2)
    analysed = np.asarray(listing["analysed"], dtype=np.float64).reshape(-1, 2)
    scale = np.tile(sizes / analysed, 2)  # (sx, sy, sx, sy) per image
    return (np.asarray(boxes, dtype=np.float64) * scale).astype(np.float32)
