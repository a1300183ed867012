"""Organiser frame folders (Aff-Wild2 ``cropped_aligned/<video>/00001.jpg``) read as a video.

File ``NNNNN.jpg`` is frame ``NNNNN - 1`` (names are 1-based, 5 digits). Missing files are frames
where the organisers found no face: they are absent from the chunks, and their indices are simply
skipped. The frame count of the folder is the highest file number (label files may list more
frames at the end; the label file is authoritative there). The frame rate is given explicitly or
read from the video id ``<id>-<fps>-<W>x<H>`` (e.g. ``2-30-640x360`` is 30 fps).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmaffect.errors import InputError, MediaError
from mmaffect.media.frames import FrameChunk, output_size
from mmaffect.media.probe import MediaInfo, VideoStreamInfo

FRAME_NAME = re.compile(r"^(\d{5})\.(jpg|jpeg|png)$", re.IGNORECASE)
VIDEO_ID = re.compile(r"^[^-]+-(\d+)-(\d+)x(\d+)(?:-\d+)?(?:_(left|right))?$")
SUBJECT_SUFFIX = re.compile(r"_(left|right)$")


def frame_files(folder: Path) -> dict[int, Path]:
    """0-based frame index → image file, for the files named like ``00001.jpg``."""
    files = {}
    for p in folder.iterdir():
        m = FRAME_NAME.match(p.name)
        if m:
            files[int(m.group(1)) - 1] = p
    return files


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(FRAME_NAME.match(p.name) for p in path.iterdir())


def fps_from_video_id(video_id: str) -> Fraction | None:
    """Frame rate coded in an Aff-Wild2 id (``5-60-1920x1080-3`` → 60), else ``None``."""
    m = VIDEO_ID.match(video_id)
    return Fraction(int(m.group(1))) if m else None


def split_subject(video_id: str) -> tuple[str, str | None]:
    """``"10-60-1280x720_left"`` → ``("10-60-1280x720", "left")``; other ids → ``(id, None)``."""
    m = SUBJECT_SUFFIX.search(video_id)
    if not m:
        return video_id, None
    return video_id[: m.start()], m.group(1)


def probe_frame_folder(folder: str | Path, fps: float | Fraction | None = None) -> MediaInfo:
    """Describe a frame folder as a video: frame count = highest file number."""
    from PIL import Image

    folder = Path(folder)
    files = frame_files(folder)
    if not files:
        raise MediaError(f"{folder.name}: no frame images named like 00001.jpg in {folder}")
    rate = Fraction(fps).limit_denominator(1001) if fps else fps_from_video_id(folder.name)
    if rate is None:
        raise InputError(
            f"{folder.name}: cannot tell the frame rate of this frame folder",
            hint="pass --fps, or name the folder <id>-<fps>-<W>x<H> as Aff-Wild2 does",
        )
    first = files[min(files)]
    try:
        with Image.open(first) as im:
            width, height = im.size
    except OSError as e:
        raise MediaError(f"{first} is not a readable image: {e}") from e
    frames = max(files) + 1
    video = VideoStreamInfo(
        index=0,
        codec="images",
        width=width,
        height=height,
        rotation=0,
        fps=rate,
        nominal_fps=rate,
        frames=frames,
        frames_header=None,
        frame_count_method="files",
        duration=frames / float(rate),
        start_time=0.0,
        pix_fmt="rgb24",
        vfr=False,
    )
    return MediaInfo(
        path=folder,
        kind="frames",
        container="frame folder",
        size_bytes=sum(p.stat().st_size for p in files.values()),
        duration=video.duration,
        video=video,
        audio=(),
    )


def iter_frame_folder(
    folder: str | Path,
    *,
    chunk_size: int = 32,
    resize: int | tuple[int, int] | None = None,
    every: int = 1,
    info: MediaInfo | None = None,
) -> Iterator[FrameChunk]:
    """Stream a frame folder as :class:`FrameChunk` objects (missing frames are skipped)."""
    from PIL import Image

    folder = Path(folder)
    info = info or probe_frame_folder(folder)
    video = info.require_video()
    files = frame_files(folder)
    selected = [i for i in sorted(files) if i % every == 0]
    size = output_size(video.width, video.height, resize)
    for start in range(0, len(selected), chunk_size):
        idx = selected[start : start + chunk_size]
        images = np.empty((len(idx), size[1], size[0], 3), np.uint8)
        for k, i in enumerate(idx):
            try:
                with Image.open(files[i]) as im:
                    im = im.convert("RGB")
                    if im.size != size:
                        im = im.resize(size, Image.BILINEAR)
                    images[k] = np.asarray(im)
            except OSError as e:
                raise MediaError(f"{files[i]} is not a readable image: {e}") from e
        indices = np.asarray(idx, dtype=np.int64)
        yield FrameChunk(images=images, indices=indices, times=indices / float(video.fps))
