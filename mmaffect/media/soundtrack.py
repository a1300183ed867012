"""The soundtrack in pieces of bounded length, cut in pauses, decoded as it is read.

Holding a whole soundtrack costs little by itself (16 kHz float32: 3.84 MB per minute), but what
is computed over it at once grows with it: with Whisper's log-mel spectrogram of the entire
signal, the audio side's peak memory grew 40-60 MB per minute of video (``docs/benchmarks.md``).
A :class:`Soundtrack` streams the audio from ffmpeg and hands it out as :class:`AudioPiece` s of
at most ``piece_seconds`` (:data:`PIECE_SECONDS` by default). Once more than that has been read,
the piece ends in the middle of the longest pause that Silero VAD (the copy faster-whisper
ships) finds in the last 30 s of those ``piece_seconds`` (:data:`SEARCH_SECONDS`, at most their
second half); with no pause there, at the quietest 100 ms. A soundtrack no longer than
``piece_seconds`` is one piece holding exactly the samples
:func:`~mmaffect.media.audio.load_audio` returns.

The cuts found on the first pass are kept: every later pass (speech features, ASR, ...) gets
the same pieces without running the VAD again, at any sample rate (cuts are kept as instants).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmaffect.errors import MediaError
from mmaffect.media.audio import SAMPLE_RATE, AudioTrack, NoAudio, _start_time, iter_audio
from mmaffect.media.probe import MediaInfo, probe

__all__ = ["PIECE_SECONDS", "AudioPiece", "Soundtrack", "open_soundtrack"]

#: Longest piece in seconds. Whisper's memory grows with the piece (its log-mel spectrogram
#: and the STFT behind it take about 35 MB per minute), so this bounds the audio side's peak
#: (60 s rather than 120 s: docs/benchmarks.md, "Audio entries written block by block").
PIECE_SECONDS = 60.0
#: A piece ends in a pause found in its last this many seconds (at most its second half): the
#: VAD runs on these only (about 0.2 % of real time for 120-s pieces; 60-s pieces search
#: twice as much of the track).
SEARCH_SECONDS = 30.0
#: Pauses shorter than this are not cut in (the quietest-100-ms rule applies instead).
MIN_PAUSE_SECONDS = 0.1
_QUIET_SECONDS = 0.1
_VAD_RATE = 16_000  # Silero VAD runs at 16 kHz
_READ_SECONDS = 10.0  # audio read from ffmpeg at a time


@dataclass(frozen=True)
class AudioPiece:
    """Consecutive samples of a soundtrack.

    Attributes
    ----------
    samples : np.ndarray
        ``(n,)`` float32 in [-1, 1], mono.
    sample_rate : int
        Hz.
    offset : int
        Index of ``samples[0]`` in the whole soundtrack (at this sample rate).
    start_time : float
        Seconds on the video timeline of ``samples[0]``: the soundtrack's start time plus
        ``offset / sample_rate``.
    last : bool
        No sample follows this piece.
    source : Path
        The file decoded.
    """

    samples: np.ndarray
    sample_rate: int
    offset: int
    start_time: float
    last: bool
    source: Path

    def track(self) -> AudioTrack:
        """The piece as an :class:`AudioTrack` placed on the video timeline."""
        return AudioTrack(self.samples, self.sample_rate, self.start_time, self.source)


class Soundtrack:
    """The audio stream of a file, read piece by piece (see the module docstring).

    ``has_audio`` turns False (with ``reason``) once a pass has found no decodable samples.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        info: MediaInfo | None = None,
        stream_index: int = 0,
        sample_rate: int = SAMPLE_RATE,
        piece_seconds: float = PIECE_SECONDS,
    ) -> None:
        if not piece_seconds >= 2 * MIN_PAUSE_SECONDS:
            raise ValueError(f"piece_seconds must be at least 0.2, got {piece_seconds}")
        self.source = Path(path)
        self.info = info or probe(self.source, count="header")
        if not self.info.audio:
            raise ValueError(f"{self.source.name} has no audio stream (use open_soundtrack)")
        if stream_index >= len(self.info.audio):
            raise MediaError(
                f"{self.source.name} has {len(self.info.audio)} audio stream(s), "
                f"not {stream_index + 1}"
            )
        self.stream_index, self.sample_rate = stream_index, int(sample_rate)
        self.piece_seconds = float(piece_seconds)
        self.start_time = _start_time(self.info, stream_index)
        self.has_audio, self.reason = True, ""
        self._cuts: list[float] | None = None  # seconds from the first sample, once known

    @property
    def cuts(self) -> list[float] | None:
        """Where the pieces were cut (seconds from the first sample); None before a first pass."""
        return None if self._cuts is None else list(self._cuts)

    def pieces(self, sample_rate: int | None = None) -> Iterator[AudioPiece]:
        """Decode the soundtrack (at ``sample_rate``, default the soundtrack's) piece by piece.

        Nothing is yielded when the stream holds no decodable samples.
        """
        sr = int(sample_rate or self.sample_rate)
        found: list[float] = []
        blocks: list[np.ndarray] = []
        size = offset = 0
        stream = iter_audio(
            self.source,
            block_seconds=_READ_SECONDS,
            sample_rate=sr,
            stream_index=self.stream_index,
            info=self.info,
        )
        for block in stream:
            blocks.append(block)
            size += block.size
            while (cut := self._next_cut(blocks, size, offset, sr, found)) is not None:
                y = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
                yield self._piece(y[:cut], offset, sr, last=False)
                blocks, size, offset = [y[cut:]], size - cut, offset + cut
                release_free_memory()
        if offset + size == 0:
            self.has_audio, self.reason = False, "audio stream holds no decodable samples"
            return
        y = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if self._cuts is None:
            self._cuts = found
        yield self._piece(y, offset, sr, last=True)

    def _piece(self, y: np.ndarray, offset: int, sr: int, *, last: bool) -> AudioPiece:
        start = self.start_time + offset / sr
        return AudioPiece(y, sr, offset, start, last, self.source)

    def _next_cut(
        self, blocks: list[np.ndarray], size: int, offset: int, sr: int, found: list[float]
    ) -> int | None:
        """Where to end the next piece (index into the buffered samples), or None to read on.

        A piece ends only with a sample after it, so the last piece is never empty."""
        if self._cuts is not None:  # a later pass: the first pass's cuts
            later = [round(t * sr) for t in self._cuts if round(t * sr) > offset]
            return later[0] - offset if later and later[0] < offset + size else None
        limit = max(1, round(self.piece_seconds * sr))
        if size <= limit:
            return None
        y = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        blocks[:] = [y]
        cut = pause_cut(y[:limit], sr)
        found.append((offset + cut) / sr)
        return cut


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere).

    Called between pieces: what a consumer computed over the last piece is freed by then, but
    glibc keeps freed blocks of up to 32 MB in its heaps (it raises its mmap threshold after
    freeing a large block), and the holes they leave add up over many pieces. Measured on a
    20-minute soundtrack: ASR's peak memory was 30 MB higher than on a 5-minute one without the
    trim and the same with it (``docs/benchmarks.md``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def pause_cut(y: np.ndarray, sample_rate: int) -> int:
    """Where to cut ``y``: the middle of the longest pause Silero VAD finds in its last
    ``SEARCH_SECONDS`` (at most its second half; the latest of equally long pauses), else the
    middle of the quietest 100 ms there."""
    half = max(len(y) // 2, len(y) - round(SEARCH_SECONDS * sample_rate))
    window = y[half:]
    pauses = _pauses(window, sample_rate)
    if pauses:
        start, stop = max(pauses, key=lambda p: (p[1] - p[0], p[0]))
        return half + (start + stop) // 2
    step = max(1, round(_QUIET_SECONDS * sample_rate))
    n = len(window) // step
    if n == 0:
        return half + len(window) // 2
    energy = np.square(window[: n * step].reshape(n, step), dtype=np.float64).sum(axis=1)
    quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))  # the latest of equal minima
    return half + quietest * step + step // 2


def _pauses(y: np.ndarray, sample_rate: int) -> list[tuple[int, int]]:
    """Stretches of ``y`` (sample ranges) without speech, at least ``MIN_PAUSE_SECONDS`` long."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    scale = sample_rate / _VAD_RATE
    y16 = y
    if sample_rate != _VAD_RATE:
        import librosa

        y16 = librosa.resample(y, orig_sr=sample_rate, target_sr=_VAD_RATE)
    options = VadOptions(min_silence_duration_ms=100, speech_pad_ms=30)
    speech = get_speech_timestamps(np.ascontiguousarray(y16, np.float32), options, _VAD_RATE)
    edges = [0, *(e for s in speech for e in (s["start"], s["end"])), len(y16)]
    shortest = MIN_PAUSE_SECONDS * _VAD_RATE
    return [
        (round(a * scale), round(b * scale))
        for a, b in zip(edges[::2], edges[1::2], strict=True)
        if b - a >= shortest
    ]


def open_soundtrack(
    path: str | Path,
    *,
    info: MediaInfo | None = None,
    stream_index: int = 0,
    sample_rate: int = SAMPLE_RATE,
    piece_seconds: float | None = None,
) -> Soundtrack | NoAudio:
    """The soundtrack of a video or audio file, or :class:`NoAudio` when it has no audio stream.

    ``piece_seconds`` defaults to :data:`PIECE_SECONDS`. Nothing is decoded yet;
    :meth:`Soundtrack.pieces` decodes."""
    path = Path(path)
    info = info or probe(path, count="header")
    if not info.audio:
        return NoAudio(source=path, reason="no audio stream")
    return Soundtrack(
        path,
        info=info,
        stream_index=stream_index,
        sample_rate=sample_rate,
        piece_seconds=piece_seconds or PIECE_SECONDS,
    )
