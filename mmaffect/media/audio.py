"""The soundtrack as 16 kHz mono float32, decoded by ffmpeg.

A file without an audio stream gives :class:`NoAudio`, an explicit result that downstream stages
turn into zero features plus a flag, never an exception. Channels are averaged to mono
(ffmpeg ``-ac 1``); samples are in [-1, 1]. ``start_time`` is where the first sample sits on the
file's timeline, the same timeline as :attr:`mmaffect.media.frames.FrameChunk.times`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmaffect.errors import MediaError
from mmaffect.media import ffmpeg
from mmaffect.media.probe import MediaInfo, probe

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioTrack:
    """Decoded mono audio."""

    samples: np.ndarray  # (n,) float32 in [-1, 1]
    sample_rate: int
    start_time: float  # seconds
    source: Path
    has_audio: bool = True

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class NoAudio:
    """The input has no audio stream; ``reason`` says why, for summaries and sidecar files."""

    source: Path
    reason: str
    has_audio: bool = False
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return 0.0


def _audio_stream_output(path: Path, sample_rate: int, stream_index: int):
    import ffmpeg as ffmpeg_python

    return ffmpeg_python.input(str(path))[f"a:{stream_index}"].output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate
    )


def _start_time(info: MediaInfo, stream_index: int) -> float:
    import av

    with av.open(str(info.path)) as container:
        s = container.streams.audio[stream_index]
        if s.start_time is None:
            return 0.0
        return float(s.start_time * s.time_base)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int = SAMPLE_RATE,
    stream_index: int = 0,
    info: MediaInfo | None = None,
) -> AudioTrack | NoAudio:
    """Decode the audio of a video or audio file to mono float32 at ``sample_rate``.

    Returns :class:`NoAudio` when the file has no audio stream; raises :class:`MediaError` when
    the audio exists but cannot be decoded.
    """
    path = Path(path)
    info = info or probe(path, count="header")
    if not info.audio:
        return NoAudio(source=path, reason="no audio stream")
    if stream_index >= len(info.audio):
        raise MediaError(
            f"{path.name} has {len(info.audio)} audio stream(s), not {stream_index + 1}"
        )
    args = ffmpeg.compile_args(_audio_stream_output(path, sample_rate, stream_index))
    proc = ffmpeg.popen(ffmpeg.quiet_command(*args))
    try:
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: stop ffmpeg
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        text = stderr.decode("utf-8", "replace")
        raise MediaError(
            f"ffmpeg failed while decoding the audio of {path.name}: {ffmpeg.stderr_reason(text)}",
            detail=text,
        )
    # Some decoders (MP2, AAC) overshoot full scale slightly; clip as a 16-bit decode would.
    samples = np.clip(np.frombuffer(stdout, dtype="<f4"), -1.0, 1.0).astype(np.float32)
    if samples.size == 0:
        return NoAudio(source=path, reason="audio stream holds no decodable samples")
    return AudioTrack(
        samples=samples,
        sample_rate=sample_rate,
        start_time=_start_time(info, stream_index),
        source=path,
    )


def iter_audio(
    path: str | Path,
    *,
    block_seconds: float = 30.0,
    sample_rate: int = SAMPLE_RATE,
    stream_index: int = 0,
    info: MediaInfo | None = None,
) -> Iterator[np.ndarray]:
    """Stream the audio in blocks of ``block_seconds`` (bounded memory for long recordings).

    Yields nothing for a file without audio. The blocks joined are the samples
    :func:`load_audio` returns; the ffmpeg process is killed if the watched work reading it is
    given up (:func:`mmaffect.media.ffmpeg.popen`).
    """
    path = Path(path)
    info = info or probe(path, count="header")
    if not info.audio:
        return
    args = ffmpeg.compile_args(_audio_stream_output(path, sample_rate, stream_index))
    proc = ffmpeg.popen(ffmpeg.quiet_command(*args))
    block_bytes = max(1, int(block_seconds * sample_rate)) * 4
    try:
        while buf := proc.stdout.read(block_bytes):
            yield np.clip(np.frombuffer(buf[: len(buf) // 4 * 4], dtype="<f4"), -1.0, 1.0)
        stderr = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise MediaError(
                f"ffmpeg failed while decoding the audio of {path.name}: "
                f"{ffmpeg.stderr_reason(stderr)}",
                detail=stderr,
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
