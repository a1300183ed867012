"""Video frames streamed in chunks from an ffmpeg pipe.

Frames come out as RGB ``uint8`` arrays, ``chunk_size`` at a time, so memory is bounded by one
chunk whatever the video's length. Every chunk carries the 0-based index of each frame in the
source video and its time in seconds.

Frame numbering and variable frame rate (the rule)
--------------------------------------------------
Frames are numbered in presentation order, each decoded frame exactly once: ffmpeg runs with
``-fps_mode passthrough``, so nothing is duplicated or dropped. This is how OpenCV and the
Aff-Wild2 organisers number frames, and it is what :func:`mmaffect.media.probe.probe` counts.
Frame ``i`` is placed at ``start_time + i / fps`` where ``fps`` is the stream's *average* rate
(frames / duration). For constant-frame-rate video this is the exact time; for variable-rate
video (``VideoStreamInfo.vfr``) it is exact at both ends and approximate in between. Pass
``vfr="cfr"`` to resample such a video to its average rate instead (frames duplicated or
dropped so every time is exact); the frame count then becomes ``round(duration * fps)``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mmaffect.errors import MediaError
from mmaffect.media import ffmpeg
from mmaffect.media.probe import MediaInfo, VideoStreamInfo, is_damaged, probe

VfrRule = Literal["passthrough", "cfr"]


@dataclass(frozen=True)
class FrameChunk:
    """Consecutive (or 1-of-N selected) frames of one video."""

    images: np.ndarray  # (n, H, W, 3) uint8 RGB
    indices: np.ndarray  # (n,) int64, 0-based frame numbers in the source video
    times: np.ndarray  # (n,) float64 seconds

    def __len__(self) -> int:
        return len(self.indices)


def output_size(width: int, height: int, resize: int | tuple[int, int] | None) -> tuple[int, int]:
    """Frame size after ``resize``: ``None`` keeps it, ``(w, h)`` is exact, an int is the longest
    side with the aspect ratio kept (both sides rounded to even numbers, as codecs want)."""
    if resize is None:
        return width, height
    if isinstance(resize, tuple):
        return int(resize[0]), int(resize[1])
    scale = resize / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class _StderrTail:
    """Drains a pipe in a thread (so ffmpeg never blocks on it) and keeps its last lines."""

    def __init__(self, pipe, keep: int = 50):
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


def iter_frames(
    path: str | Path,
    *,
    chunk_size: int = 32,
    resize: int | tuple[int, int] | None = None,
    every: int = 1,
    vfr: VfrRule = "passthrough",
    info: MediaInfo | None = None,
    children: ffmpeg.ChildProcesses | None = None,
) -> Iterator[FrameChunk]:
    """Stream the frames of a video file in chunks.

    Parameters
    ----------
    path
        Video file (organiser frame folders: :func:`~mmaffect.media.iter_frame_folder`).
    chunk_size
        Frames per chunk.
    resize
        ``None``, ``(width, height)``, or the longest side in pixels (aspect kept).
    every
        Keep 1 frame of every ``every`` (frames 0, N, 2N, ...); indices stay those of the source.
    vfr
        Frame-rate rule, see the module docstring.
    info
        A probe result to reuse (probing again is skipped).
    children
        Where the ffmpeg process is registered, so a watchdog can kill it.

    Raises
    ------
    MediaError
        When ffmpeg fails, or when fewer frames decode than the probe result gave: a truncated
        or damaged file (probe's damage rule), or a count that is not what decodes (e.g.
        ``count="header"`` on a file whose edit list discards frames).
    """
    if chunk_size < 1 or every < 1:
        raise ValueError("chunk_size and every must be >= 1")
    path = Path(path)
    info = info or probe(path)
    video = info.require_video()
    width, height = output_size(video.width, video.height, resize)
    fps = float(video.fps)

    import ffmpeg as ffmpeg_python

    stream = ffmpeg_python.input(str(path)).video
    if vfr == "cfr":
        stream = stream.filter("fps", fps=str(video.fps))
    if every > 1:
        stream = stream.filter("select", f"not(mod(n,{every}))")  # ffmpeg-python escapes ","
    if (width, height) != (video.width, video.height):
        stream = stream.filter("scale", width, height, flags="bilinear")
    out = stream.output(
        "pipe:",
        format="rawvideo",
        pix_fmt="rgb24",
        **({"fps_mode": "passthrough"} if vfr == "passthrough" else {}),
    )
    args = ffmpeg.quiet_command(*ffmpeg.compile_args(out))

    frame_bytes = width * height * 3
    proc = ffmpeg.popen(args, children)
    stderr = _StderrTail(proc.stderr)
    produced = 0
    try:
        while True:
            buf = proc.stdout.read(frame_bytes * chunk_size)
            n = len(buf) // frame_bytes
            if n == 0:
                break
            images = np.frombuffer(buf, np.uint8, count=n * frame_bytes).reshape(
                n, height, width, 3
            )
            indices = (produced + np.arange(n, dtype=np.int64)) * every
            times = video.start_time + indices / fps
            produced += n
            yield FrameChunk(images=images, indices=indices, times=times)
            if n < chunk_size:
                break
        proc.stdout.close()
        code = proc.wait()
    finally:
        if proc.poll() is None:  # consumer stopped early: stop ffmpeg
            proc.kill()
            proc.wait()
    if code != 0:
        text = stderr.text()
        raise MediaError(
            f"ffmpeg failed while decoding {path.name}: {ffmpeg.stderr_reason(text)}", detail=text
        )
    expected = -(-video.frames // every) if vfr == "passthrough" else None
    if expected is not None and produced < expected:
        raise _shortfall(path, video, produced, every, stderr.text())


def _shortfall(
    path: Path, video: VideoStreamInfo, produced: int, every: int, errors: str
) -> MediaError:
    """Fewer frames than the probe result gave: damage (probe's rule) or a count that was wrong."""
    decoded = (produced - 1) * every + 1 if produced else 0  # at least this many decoded
    fps = float(video.fps)
    until = decoded / fps
    if is_damaged(
        decoded, video.frames, errors=errors, until=until, duration=video.duration, fps=fps
    ):
        return MediaError(
            f"{path.name} is truncated or damaged: decoded {produced * every} of "
            f"{video.frames} frames",
            hint="copy or download it again",
            detail=errors,
        )
    method = video.frame_count_method
    why = (
        "count 'header' trusts the container, which lists frames that an edit list discards"
        if method == "header"
        else f"the {method!r} count is not what decodes now"
    )
    return MediaError(
        f"{path.name} decodes to {decoded} frames, not the {video.frames} its probe result gave",
        hint=f"{why}; probe it with count 'auto' or 'decode', which count the frames that decode",
        detail=errors,
    )
