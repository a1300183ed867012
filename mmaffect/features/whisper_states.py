"""Whisper encoder states as per-frame speech features (the ``whisper`` speech feature set).

Whisper's encoder turns 30 s of log-mel spectrogram into 1,500 hidden states, one per 20 ms;
trained to recognise speech in 680,000 hours of audio, they carry how a thing is said as well
as what is said, and make a strong paralinguistic representation. The model is the one the
word branch already loads for ASR (``--asr-model``, ``whisper-tiny.en`` by default: 384 values
per state; ``whisper-base``: 512), loaded once per process and shared with ASR.

How the states are made, so that they do not depend on anything but the soundtrack:

* the soundtrack is cut into consecutive 30 s windows from its first sample (the last one
  shorter), whatever pieces it is read in (:mod:`mmaffect.media.soundtrack`: the remainder
  of a piece waits for the next one); each window's log-mel spectrogram is computed by
  faster-whisper's own feature extractor over that window alone and padded to 30 s as
  Whisper's training did, then encoded (several windows per encoder call);
* state ``j`` of a window starting at ``s`` covers ``[s + 0.02 j, s + 0.02 (j + 1))`` on the
  audio's time line (``audio.start_time`` places it on the video timeline); states of the
  padding are dropped;
* row ``i`` of the result is the mean of the states whose centres fall in frame ``i``'s
  interval (:meth:`FrameTiming.frame_edges`); a frame too short to hold a state centre (frame
  rates above 50 fps) takes the nearest state; frames outside the audio, and every frame of a
  video without audio, are zero.

ASR (``faster-whisper``'s ``transcribe``) runs the encoder over other windows (the speech that
its VAD keeps, at positions its decoding chooses), so the states are computed in a pass of
their own: they are the same whether or not ASR ran, and whatever its settings. The cost is
one encoder pass per 30 s of audio (about 1.5 s per minute of audio on 2 CPU cores,
``docs/benchmarks.md``). Memory is bounded by a few windows, whatever the length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from mmaffect.features.timing import FrameTiming
from mmaffect.watchdog import beat

if TYPE_CHECKING:
    from mmaffect.media.audio import AudioTrack, NoAudio
    from mmaffect.media.soundtrack import Soundtrack

__all__ = [
    "STATE_SECONDS",
    "WINDOW_SECONDS",
    "encode_windows",
    "encoder_states",
    "states_to_frames",
    "whisper_frames",
]

WINDOW_SECONDS = 30  # Whisper's input length
STATE_SECONDS = 0.02  # one encoder state per two 10 ms mel hops
_SAMPLE_RATE = 16_000
_WINDOWS_PER_CALL = 4  # windows encoded together (bounds memory: about 10 MB of mel per call)


def encode_windows(windows: list[np.ndarray], whisper: Any) -> list[np.ndarray]:
    """Encoder states of up to a few windows of at most 30 s (one encoder call): for each, one
    ``(ceil(len / 320), d_model)`` float32 array (the states of the padding left out)."""
    extractor = whisper.feature_extractor
    n_mel = extractor.nb_max_frames  # mel frames of a full window (3,000)
    per_state = round(STATE_SECONDS * _SAMPLE_RATE)
    beat("whisper encoder")
    mels = np.stack([_window_mel(extractor, w, n_mel) for w in windows])
    states = np.asarray(whisper.encode(mels), dtype=np.float32)
    return [st[: -(-len(w) // per_state)] for w, st in zip(windows, states, strict=True)]


def encoder_states(samples: np.ndarray, whisper: Any) -> np.ndarray:
    """Whisper encoder states of a whole 16 kHz mono soundtrack: ``(n_states, d_model)``
    float32, ``n_states = ceil(len(samples) / 320)`` (one per 20 ms)."""
    window = WINDOW_SECONDS * _SAMPLE_RATE
    chunks = [samples[s : s + window] for s in range(0, len(samples), window)]
    out: list[np.ndarray] = []
    for first in range(0, len(chunks), _WINDOWS_PER_CALL):
        out += encode_windows(chunks[first : first + _WINDOWS_PER_CALL], whisper)
    return np.concatenate(out) if out else np.zeros((0, _d_model(whisper)), np.float32)


def _window_mel(extractor: Any, chunk: np.ndarray, n_frames: int) -> np.ndarray:
    """Log-mel of one window, padded (or trimmed) to ``n_frames`` as Whisper expects."""
    mel = extractor(np.ascontiguousarray(chunk, dtype=np.float32))[:, :n_frames]
    if mel.shape[1] < n_frames:
        mel = np.pad(mel, ((0, 0), (0, n_frames - mel.shape[1])))
    return mel.astype(np.float32)


_WIDTHS: dict[int, int] = {}


def _d_model(whisper: Any) -> int:
    """Width of the encoder states (one encoder call on silence, once per loaded model)."""
    if id(whisper) not in _WIDTHS:
        extractor = whisper.feature_extractor
        silence = _window_mel(
            extractor, np.zeros(_SAMPLE_RATE, np.float32), extractor.nb_max_frames
        )
        _WIDTHS[id(whisper)] = int(np.asarray(whisper.encode(silence[None])).shape[-1])
    return _WIDTHS[id(whisper)]


def states_to_frames(
    states: np.ndarray, start: float, timing: FrameTiming, values: np.ndarray
) -> None:
    """Write into ``values`` the mean of the states centred in each frame whose time lies in
    the span of ``states`` (``states[j]`` covers ``[start + 0.02 j, start + 0.02 (j + 1))``);
    other rows are left as they are."""
    n = len(states)
    if n == 0 or timing.n_frames == 0:
        return
    times = timing.times()
    inside = np.flatnonzero((times >= start) & (times < start + n * STATE_SECONDS))
    if inside.size == 0:
        return
    centres = start + (np.arange(n) + 0.5) * STATE_SECONDS
    edges = timing.frame_edges()
    lo = np.searchsorted(centres, edges[inside], side="left")
    hi = np.searchsorted(centres, edges[inside + 1], side="left")
    nearest = np.clip(np.floor((times[inside] - start) / STATE_SECONDS), 0, n - 1).astype(int)
    empty = hi <= lo
    lo, hi = np.where(empty, nearest, lo), np.where(empty, nearest + 1, hi)
    csum = np.zeros((n + 1, states.shape[1]), np.float64)
    np.cumsum(states, axis=0, dtype=np.float64, out=csum[1:])
    values[inside] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def _pieces(audio: Any) -> Iterator[tuple[np.ndarray, float]]:
    """``(16 kHz samples, start time)`` of each piece of a soundtrack (a
    :class:`~mmaffect.media.soundtrack.Soundtrack` is decoded piece by piece), or of a whole
    :class:`~mmaffect.media.audio.AudioTrack`; nothing for no audio."""
    if hasattr(audio, "pieces"):
        for piece in audio.pieces(_SAMPLE_RATE):
            yield piece.samples, float(piece.start_time)
        return
    if not getattr(audio, "has_audio", False) or audio.samples.size == 0:
        return
    if audio.sample_rate != _SAMPLE_RATE:
        raise ValueError(f"Whisper needs 16 kHz audio, got {audio.sample_rate} Hz")
    yield np.asarray(audio.samples, np.float32), float(audio.start_time)


def _windows(audio: Any) -> Iterator[tuple[np.ndarray, float]]:
    """``(samples, start time)`` of consecutive 30 s windows from the soundtrack's first sample
    (the last one shorter), across its pieces: a piece's remainder waits for the next piece, so
    the windows, hence the states, are those of the whole track wherever the pieces were cut."""
    window = WINDOW_SECONDS * _SAMPLE_RATE
    rest, rest_start = np.zeros(0, np.float32), 0.0
    for samples, start in _pieces(audio):
        if rest.size:
            samples, start = np.concatenate([rest, samples]), rest_start
        full = len(samples) // window
        for k in range(full):
            yield samples[k * window : (k + 1) * window], start + k * WINDOW_SECONDS
        rest, rest_start = samples[full * window :], start + full * WINDOW_SECONDS
    if rest.size:
        yield rest, rest_start


def whisper_frames(
    audio: AudioTrack | NoAudio | Soundtrack,
    timing: FrameTiming,
    *,
    model: str,
    models_dir: Any = None,
    device: str = "cpu",
) -> np.ndarray:
    """``(timing.n_frames, d_model)`` float32 Whisper encoder states on the frame grid.

    ``model`` is a Whisper model of the store (or a CTranslate2 folder), loaded as ASR loads it
    (:func:`mmaffect.features.transcripts.whisper_model`). A soundtrack read in pieces gives
    the whole track's states: the 30 s windows run on across the pieces. Frames outside the
    audio, and every frame without audio, are zero.
    """
    from mmaffect.features.transcripts import whisper_model

    whisper = whisper_model(model, models_dir, device)
    values = np.zeros((timing.n_frames, _d_model(whisper)), np.float32)
    batch: list[tuple[np.ndarray, float]] = []
    for window in _windows(audio):
        batch.append(window)
        if len(batch) == _WINDOWS_PER_CALL:
            _encode_into(batch, whisper, timing, values)
            batch = []
    if batch:
        _encode_into(batch, whisper, timing, values)
    return values


def _encode_into(batch: list, whisper: Any, timing: FrameTiming, values: np.ndarray) -> None:
    """Encode ``(samples, start)`` windows and write their frames' rows of ``values``."""
    states = encode_windows([w for w, _ in batch], whisper)
    for st, (_, start) in zip(states, batch, strict=True):
        states_to_frames(st, start, timing, values)
