"""Speech branch features: MFCC, deltas, pitch, voicing and energy, one row per video frame.

The soundtrack is analysed at a 10 ms hop (librosa STFT → log-mel → MFCC and deltas; RMS energy
from the same STFT; F0 with :func:`librosa.yin`, voicing from the normalised autocorrelation at
the YIN period). The 10 ms analysis hops are then aggregated onto the video's frame grid
(:class:`~mmaffect.features.timing.FrameTiming`): row ``i`` summarises the hops whose centres fall
in frame ``i``'s interval ``[edges[i], edges[i + 1])``, with ``audio.start_time`` placing the
audio on the video timeline. Frames without audio, and frames whose audio is below the silence
threshold, are all-zero rows with a flag set. Values are not normalised per utterance (the model
does that); ``docs/features_speech.md`` lists every column with its unit and range.

Long recordings are processed in blocks of whole video frames (``block_seconds``, 30 s by
default: about 70 MiB of temporaries, against 0.5 GiB for 5 minutes in one shot) with enough
context on each side that the result equals the one-shot computation; only three floats per
10 ms hop are kept for the whole recording (9 MB per hour). A
:class:`~mmaffect.media.soundtrack.Soundtrack` is read piece by piece, each frame computed once
the samples it needs have arrived, so the samples held are bounded by a piece too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmaffect.features.cache import BLOCK_ROWS, release_pages
from mmaffect.features.timing import FrameTiming

if TYPE_CHECKING:
    from mmaffect.media.audio import AudioTrack, NoAudio
    from mmaffect.media.soundtrack import Soundtrack

__all__ = [
    "SPEECH_FEATURES_VERSION",
    "SPEECH_FEATURE_SETS",
    "normalize_speech_features",
    "speech_config",
    "SpeechConfig",
    "SpeechFeatures",
    "speech_features",
]

#: Bump whenever the computation changes in a way that changes the numbers (the feature cache
#: keys entries by :meth:`SpeechConfig.config_hash`, which includes this string).
SPEECH_FEATURES_VERSION = "speech-1"

#: Rows of the autocorrelation gather done at once (bounds the temporary index arrays).
_NACF_CHUNK = 2048


#: The speech feature sets an entry can hold, in the order their columns are concatenated.
SPEECH_FEATURE_SETS = ("prosody", "whisper")


def normalize_speech_features(names: Any) -> tuple[str, ...]:
    """``"prosody,whisper"`` or a sequence of names, checked, in :data:`SPEECH_FEATURE_SETS`
    order; raises ``ValueError`` (unknown name or none)."""
    given = names.split(",") if isinstance(names, str) else list(names)
    given = [str(n).strip().lower() for n in given if str(n).strip()]
    unknown = sorted(set(given) - set(SPEECH_FEATURE_SETS))
    if unknown or not given:
        raise ValueError(
            f"unknown speech feature set(s) {', '.join(unknown) or '(none given)'}: "
            f"choose among {', '.join(SPEECH_FEATURE_SETS)}"
        )
    return tuple(n for n in SPEECH_FEATURE_SETS if n in given)


@dataclass(frozen=True)
class SpeechConfig:
    """How the speech features are computed. Every field enters :meth:`config_hash`
    (``features`` and ``whisper_model`` only when ``features`` is not the default
    ``("prosody",)``, so that caches made before they existed keep their keys)."""

    sample_rate: int = 16_000  # Hz the analysis runs at; audio at another rate is resampled
    hop_ms: float = 10.0  # analysis hop (one MFCC / F0 / RMS value per hop)
    win_ms: float = 25.0  # Hann window of the STFT behind MFCC and RMS
    n_fft: int = 512  # FFT size of that STFT (the window is zero-padded to it)
    n_mels: int = 64  # mel bands the MFCC are taken from
    mel_fmin: float = 20.0  # Hz, lowest mel band edge
    mel_fmax: float = 8_000.0  # Hz, highest mel band edge (at most sample_rate / 2)
    n_mfcc: int = 40  # cepstral coefficients kept (c0 included)
    deltas: bool = True  # add first-order deltas of the MFCC (n_mfcc more columns)
    delta_width: int = 9  # hops in the Savitzky-Golay delta window (odd, >= 3)
    # 65 Hz (C2, librosa's recommended floor) covers low male voices; 500 Hz covers high female,
    # child and shouted speech. A narrower range than YIN's music defaults cuts octave errors and
    # keeps the YIN frame short (cost grows with the longest period).
    f0_fmin: float = 65.0  # Hz, lowest F0 searched
    f0_fmax: float = 500.0  # Hz, highest F0 searched
    f0_frame_ms: float = 48.0  # YIN frame: about 3 periods of f0_fmin (Praat's rule)
    yin_threshold: float = 0.1  # YIN absolute trough threshold (librosa's trough_threshold)
    voicing_threshold: float = 0.5  # a hop is voiced when its NACF at the YIN period >= this
    f0_ref_hz: float = 100.0  # the f0 column is log2(F0 / f0_ref_hz)
    db_floor: float = -100.0  # dBFS floor of every log (log-mel, RMS); also rms column's zero
    silence_floor_db: float = -70.0  # absolute: frames below this dBFS are silent
    silence_rel_db: float = 40.0  # relative: frames this many dB below the reference are silent
    silence_ref_percentile: float = 95.0  # reference = this percentile of the clip's hop levels
    # Which feature sets make the entry, in SPEECH_FEATURE_SETS order: "prosody" (the MFCC, pitch
    # and energy columns above) and "whisper" (Whisper encoder states, whisper_states.py, of
    # the model named by whisper_model: the run's ASR model).
    features: tuple[str, ...] = ("prosody",)
    whisper_model: str = "whisper-tiny.en"

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", normalize_speech_features(self.features))
        problems = []
        if self.sample_rate <= 0:
            problems.append("sample_rate must be positive")
        if self.hop_ms <= 0 or self.win_ms <= 0 or self.f0_frame_ms <= 0:
            problems.append("hop_ms, win_ms and f0_frame_ms must be positive")
        elif self.win_length > self.n_fft:
            problems.append(f"the {self.win_ms} ms window exceeds n_fft={self.n_fft}")
        if not 0 <= self.mel_fmin < self.mel_fmax <= self.sample_rate / 2:
            problems.append("need 0 <= mel_fmin < mel_fmax <= sample_rate / 2")
        if not 1 <= self.n_mfcc <= self.n_mels:
            problems.append("need 1 <= n_mfcc <= n_mels")
        if self.delta_width < 3 or self.delta_width % 2 == 0:
            problems.append("delta_width must be odd and >= 3")
        if not 0 < self.f0_fmin < self.f0_fmax <= self.sample_rate / 2:
            problems.append("need 0 < f0_fmin < f0_fmax <= sample_rate / 2")
        elif self.sample_rate / self.f0_fmin >= self.f0_frame_length // 2:
            problems.append(
                f"f0_frame_ms={self.f0_frame_ms} must hold two periods of f0_fmin={self.f0_fmin}"
            )
        if not 0 < self.voicing_threshold < 1 or self.yin_threshold <= 0:
            problems.append("need 0 < voicing_threshold < 1 and yin_threshold > 0")
        if self.f0_ref_hz <= 0:
            problems.append("f0_ref_hz must be positive")
        if self.db_floor >= 0 or self.silence_floor_db < self.db_floor or self.silence_rel_db < 0:
            problems.append("need db_floor < 0, silence_floor_db >= db_floor, silence_rel_db >= 0")
        if not 0 < self.silence_ref_percentile <= 100:
            problems.append("silence_ref_percentile must be in (0, 100]")
        if problems:
            raise ValueError("invalid SpeechConfig: " + "; ".join(problems))

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        """Hop in samples."""
        return max(1, round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        """STFT window in samples."""
        return max(1, round(self.sample_rate * self.win_ms / 1000))

    @property
    def f0_frame_length(self) -> int:
        """YIN frame in samples."""
        return max(1, round(self.sample_rate * self.f0_frame_ms / 1000))

    @property
    def dim(self) -> int:
        """Number of columns: MFCC (+ deltas), f0, voiced, rms, silent, no_audio."""
        return self.n_mfcc * (2 if self.deltas else 1) + 5

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in order (``len == dim``)."""
        names = [f"mfcc_{i}" for i in range(self.n_mfcc)]
        if self.deltas:
            names += [f"d_mfcc_{i}" for i in range(self.n_mfcc)]
        return (*names, "f0", "voiced", "rms", "silent", "no_audio")

    # -- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``"version"`` (:data:`SPEECH_FEATURES_VERSION`), JSON-ready.

        The version is included so that anything keyed on this dict (the feature cache hashes it)
        changes when the computation does. :meth:`from_dict` reads it back.
        """
        data = {**dataclasses.asdict(self), "version": SPEECH_FEATURES_VERSION}
        data["features"] = list(self.features)
        if self.features == ("prosody",):  # the keys of caches made before the choice existed
            del data["features"], data["whisper_model"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeechConfig:
        """Inverse of :meth:`to_dict` (the ``"version"`` key is ignored; other unknown keys
        raise ``TypeError``)."""
        return cls(**{k: v for k, v in data.items() if k != "version"})

    def config_hash(self) -> str:
        """Stable sha256 hex digest of :meth:`to_dict` (fields and version), computed by
        :func:`mmaffect.features.cache.config_hash`, which also keys the cache entries (there
        with the frame grid added): equal configs give equal hashes in every process; any field
        change, or a version bump, gives a new one.
        """
        from mmaffect.features.cache import config_hash

        return config_hash(self.to_dict())


def speech_config(features: str, whisper_model: str) -> SpeechConfig:
    """The default :class:`SpeechConfig` with the feature sets of ``--speech-features`` (the
    Whisper states from ``whisper_model``, the run's ASR model); a bad name is an
    :class:`~mmaffect.errors.InputError`."""
    from mmaffect.errors import InputError

    try:  # SpeechConfig checks and orders the names
        return SpeechConfig(features=features, whisper_model=whisper_model)
    except ValueError as e:
        raise InputError(str(e), hint="e.g. --speech-features prosody,whisper") from None


@dataclass
class SpeechFeatures:
    """Per-frame speech features.

    Attributes
    ----------
    values : np.ndarray
        ``(timing.n_frames, config.dim)`` float32, never NaN. Row ``i`` belongs to frame ``i``.
    column_names : tuple of str
        Name of each column (see ``docs/features_speech.md``).
    timing : FrameTiming
        The frame grid the rows are aligned to.
    config : SpeechConfig
        The configuration that produced them (``config.config_hash()`` keys the cache).
    """

    values: np.ndarray
    column_names: tuple[str, ...]
    timing: FrameTiming
    config: SpeechConfig

    def column(self, name: str) -> np.ndarray:
        """The ``(n_frames,)`` column called ``name``."""
        return self.values[:, self.column_names.index(name)]


def speech_features(
    audio: AudioTrack | NoAudio | Soundtrack,
    timing: FrameTiming,
    config: SpeechConfig | None = None,
    *,
    block_seconds: float = 30.0,
    out: np.ndarray | None = None,
) -> SpeechFeatures:
    """Compute MFCC, deltas, pitch, voicing and energy aligned to a video's frames.

    Parameters
    ----------
    audio : AudioTrack, NoAudio or Soundtrack
        Mono audio from :func:`mmaffect.media.load_audio`; ``audio.start_time`` places its first
        sample on the video timeline. Another sample rate than ``config.sample_rate`` is
        resampled. :class:`~mmaffect.media.audio.NoAudio` (or an empty track) gives all-zero rows
        flagged ``no_audio``. A :class:`~mmaffect.media.soundtrack.Soundtrack` is decoded at
        ``config.sample_rate`` and analysed piece by piece (memory bounded by a piece); the
        result equals the whole track's up to float rounding.
    timing : FrameTiming
        The video's frame grid; frame ``i`` covers ``[edges[i], edges[i + 1])`` of
        :meth:`FrameTiming.frame_edges`. Any positive frame rate (float or Fraction) works.
    config : SpeechConfig, optional
        Analysis settings; ``SpeechConfig()`` when omitted.
    block_seconds : float
        Audio analysed per block (bounds memory on long recordings). Blocks hold whole video
        frames plus context, so the result does not depend on it beyond float rounding.
    out : numpy.ndarray, optional
        A zero-filled ``(timing.n_frames, config.dim)`` float32 array to fill instead of a new
        one, e.g. a cache entry's memory-mapped rows (then released block by block as they are
        written, :func:`~mmaffect.features.cache.release_pages`, so a long video's rows do not
        stay in memory).

    Returns
    -------
    SpeechFeatures
        ``values`` of shape ``(timing.n_frames, config.dim)``, float32, no NaN. Row ``i`` is the
        mean of the 10 ms hops centred in frame ``i`` (F0: median over its voiced hops; a frame
        with no hop centre inside takes the nearest hop). Rows without audio coverage (frame time
        outside the audio) are zero with ``no_audio = 1``; rows below the silence threshold are
        zero with ``silent = 1``.

    Raises
    ------
    ValueError
        On a negative frame count, a non-positive frame rate, non-positive ``block_seconds`` or
        multi-channel samples.
    """
    if config is None:
        config = SpeechConfig()
    n_frames = int(timing.n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {timing.n_frames}")
    if not float(timing.fps) > 0:
        raise ValueError(f"fps must be positive, got {timing.fps}")
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be positive, got {block_seconds}")
    names = config.column_names
    values = np.zeros((n_frames, config.dim), dtype=np.float32) if out is None else out
    if values.shape != (n_frames, config.dim):
        raise ValueError(f"out has shape {values.shape}, expected {(n_frames, config.dim)}")
    result = SpeechFeatures(values=values, column_names=names, timing=timing, config=config)
    if n_frames == 0:
        return result
    stream = _SpeechStream(values, timing, config, block_seconds)
    for y, start_time, last in _samples_of(audio, config):
        stream.feed(y, start_time, last=last)
    stream.finish()
    return result


class _SpeechStream:
    """The computation of :func:`speech_features` over consecutive pieces of the soundtrack.

    Frames are computed, in blocks of whole frames, as soon as the samples their hops and the
    context of those hops need have arrived (the rest once the last piece has come); the hop
    ranges of the frames are those of the one-shot computation, so pieces change nothing but
    float rounding. Only the samples still needed are kept. The silence threshold and the
    voicing need every hop's level, so they are set in :meth:`finish` from the three floats per
    hop kept for the whole recording.
    """

    def __init__(
        self, values: np.ndarray, timing: FrameTiming, config: SpeechConfig, block_seconds: float
    ) -> None:
        self.values, self.timing, self.config = values, timing, config
        self.col = {name: i for i, name in enumerate(config.column_names)}
        self.hop = config.hop_length
        self.hop_s = self.hop / config.sample_rate
        self.block_hops = max(1, int(round(block_seconds / self.hop_s)))
        self.edges = np.asarray(timing.frame_edges(), dtype=np.float64)
        self.centres = np.asarray(timing.times(), dtype=np.float64)
        self.analysis = _Analysis(config)
        self.n_cep = config.n_mfcc * (2 if config.deltas else 1)
        self.y = np.zeros(0, dtype=np.float32)  # samples [y0, y0 + len(y)) of the recording
        self.y0 = 0
        self.a0: float | None = None  # where the first sample sits on the video timeline
        self.done = 0  # frames computed, counted from the first frame inside the audio

    def feed(self, y: np.ndarray, start_time: float, *, last: bool) -> None:
        """Add the next samples; compute every frame they complete (all frames when last)."""
        if self.a0 is None:
            self._start(float(start_time))
        self.y = np.concatenate([self.y, y]) if self.y.size else y
        if last:
            return
        end = self.y0 + len(self.y)
        ready = int(np.searchsorted(self.hi_sorted, self._last_hop_ready(end), side="right"))
        self._run_blocks(ready, self.lo, self.hi, n_hops=-(-end // self.hop))
        keep = min(self._first_sample_needed() - self.y0, len(self.y))
        if keep > 0:
            self.y, self.y0 = self.y[keep:].copy(), self.y0 + keep

    def _start(self, a0: float) -> None:
        """Hop ranges of the frames at and after the audio's start, on a hop grid reaching past
        the last frame (the recording's length is known only at the end)."""
        self.a0 = a0
        self.fa = int(np.searchsorted(self.centres, a0, side="left"))
        grid = max(1, int(np.ceil((self.edges[-1] - a0) / self.hop_s)) + 2)
        self.lo, self.hi = self._hop_ranges(self.fa, len(self.centres), grid)
        self.hi_sorted = np.maximum.accumulate(self.hi) if len(self.hi) else self.hi
        n = max(grid, int(self.hi.max(initial=0)) + 1)
        self.hop_power, self.hop_f0, self.hop_nacf = (np.zeros(n) for _ in range(3))
        self.frame_power = np.zeros(len(self.centres) - self.fa)

    def _hop_ranges(self, fa: int, fb: int, n_hops: int) -> tuple[np.ndarray, np.ndarray]:
        """Hop range [lo, hi) of frames fa..fb-1: hop centres in [edges[i], edges[i + 1]); a
        frame too short to hold a hop centre (frame rates above 1 / hop) takes the nearest."""
        hop_times = self.a0 + np.arange(n_hops, dtype=np.float64) * self.hop_s
        lo = np.searchsorted(hop_times, self.edges[fa:fb], side="left")
        hi = np.searchsorted(hop_times, self.edges[fa + 1 : fb + 1], side="left")
        rel = (self.centres[fa:fb] - self.a0) / self.hop_s
        nearest = np.clip(np.rint(rel), 0, n_hops - 1).astype(np.int64)
        empty = hi <= lo
        return np.where(empty, nearest, lo), np.where(empty, nearest + 1, hi)

    def _last_hop_ready(self, end: int) -> int:
        """The largest ``h1`` such that hops before it, with their context, lie in the first
        ``end`` samples (as :meth:`_Analysis.hops` reads them); -1 when none."""
        c, a = self.config, self.analysis
        stft = (end - c.n_fft // 2) // self.hop + 1  # hops before k1 = h1 + margin
        yin = (end - c.f0_frame_length + c.f0_frame_length // 2) // self.hop + 1
        if c.deltas and (c.delta_width - 1) * self.hop + c.n_fft // 2 > end:
            return -1  # the delta filter's edge rule needs a full window first
        return min(stft - a.margin, yin)

    def _first_sample_needed(self) -> int:
        """The first sample any frame still to be computed reads."""
        if self.done >= len(self.lo):
            return self.y0 + len(self.y)
        c, a = self.config, self.analysis
        h0 = max(int(self.lo[self.done :].min()) - a.margin - c.delta_width, 0)
        return max(0, h0 * self.hop - max(c.n_fft // 2, c.f0_frame_length // 2))

    def _run_blocks(self, stop_frame: int, lo: np.ndarray, hi: np.ndarray, n_hops: int) -> None:
        """Compute frames ``done..stop_frame - 1`` in blocks of whole frames."""
        hi_sorted = np.maximum.accumulate(hi)
        while self.done < stop_frame:
            start = self.done
            stop = int(np.searchsorted(hi_sorted, lo[start] + self.block_hops, side="right"))
            stop = min(max(stop, start + 1), stop_frame)
            h0, h1 = int(lo[start:stop].min()), int(hi[start:stop].max())
            cep, power, f0, nacf = self.analysis.hops(self.y, h0, h1, n_hops, y0=self.y0)
            self.hop_power[h0:h1], self.hop_f0[h0:h1], self.hop_nacf[h0:h1] = power, f0, nacf
            # Means over each frame's hops from block-local cumulative sums (cepstra, power).
            n_cep = self.n_cep
            csum = np.zeros((h1 - h0 + 1, n_cep + 1), dtype=np.float64)
            np.cumsum(cep.T, axis=0, dtype=np.float64, out=csum[1:, :n_cep])
            np.cumsum(power, out=csum[1:, n_cep])
            blo, bhi = lo[start:stop] - h0, hi[start:stop] - h0
            mean = (csum[bhi] - csum[blo]) / (bhi - blo)[:, None]
            fa = self.fa
            self.values[fa + start : fa + stop, :n_cep] = mean[:, :n_cep]
            self.frame_power[start:stop] = mean[:, n_cep]
            self.done = stop
            release_pages(self.values)

    def finish(self) -> None:
        """Compute the frames left, then the silence, voicing and pitch columns."""
        values, col = self.values, self.col
        if self.a0 is None or self.y0 + len(self.y) == 0:  # no audio
            values[:, col["no_audio"]] = 1.0
            return
        n_samples = self.y0 + len(self.y)
        n_hops = -(-n_samples // self.hop)  # hop k is centred on sample k * hop, in the audio
        a1 = self.a0 + n_samples / self.config.sample_rate
        covered = (self.centres >= self.a0) & (self.centres < a1)
        values[~covered, col["no_audio"]] = 1.0
        if not covered.any():
            return
        fb = int(np.flatnonzero(covered)[-1]) + 1  # covered frames are contiguous, from fa
        lo, hi = self._hop_ranges(self.fa, fb, n_hops)
        self._run_blocks(fb - self.fa, lo, hi, n_hops)
        self._flags(lo, hi, n_hops)

    def _flags(self, lo: np.ndarray, hi: np.ndarray, n_hops: int) -> None:
        """Silence threshold from the clip's loudest hops (with an absolute floor), the silent
        flag, the voiced fraction, F0 and RMS of the frames inside the audio."""
        config, values, col = self.config, self.values, self.col
        hop_power, hop_f0, hop_nacf = (
            _fit(a, n_hops) for a in (self.hop_power, self.hop_f0, self.hop_nacf)
        )
        amin = 10.0 ** (config.db_floor / 10)
        hop_db = 10.0 * np.log10(np.maximum(hop_power, amin))
        reference = float(
            np.percentile(hop_db[int(lo.min()) : int(hi.max())], config.silence_ref_percentile)
        )
        threshold = max(config.silence_floor_db, reference - config.silence_rel_db)
        frame_db = 10.0 * np.log10(np.maximum(self.frame_power[: len(lo)], amin))
        silent = frame_db < threshold
        voiced_hop = (
            (hop_nacf >= config.voicing_threshold)
            & (hop_db >= threshold)
            & (hop_f0 >= config.f0_fmin * 0.999)
            & (hop_f0 <= config.f0_fmax * 1.001)
        )
        log_f0 = np.where(voiced_hop, np.log2(np.maximum(hop_f0, 1e-6) / config.f0_ref_hz), np.nan)
        f0_col, voiced_frac = _voiced_median(log_f0, lo, hi)
        rows = slice(self.fa, self.fa + len(lo))
        values[rows, col["f0"]] = f0_col
        values[rows, col["voiced"]] = voiced_frac
        values[rows, col["rms"]] = np.clip(frame_db / -config.db_floor + 1.0, 0.0, 1.0)
        block = values[rows]
        block[silent, : col["silent"]] = 0.0
        block[silent, col["silent"]] = 1.0
        for start in range(0, len(values), BLOCK_ROWS):
            np.nan_to_num(
                values[start : start + BLOCK_ROWS], copy=False, nan=0.0, posinf=0.0, neginf=0.0
            )
            release_pages(values)


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` cut or zero-padded to length ``n``."""
    if len(a) >= n:
        return a[:n]
    return np.concatenate([a, np.zeros(n - len(a), dtype=a.dtype)])


def _samples_of(audio: Any, config: SpeechConfig) -> Iterator[tuple[np.ndarray, float, bool]]:
    """``(samples, start_time, last)`` of each piece of ``audio`` at ``config.sample_rate``: one
    for an :class:`AudioTrack`, none for :class:`NoAudio`, a :class:`Soundtrack`'s pieces."""
    if hasattr(audio, "pieces"):
        if not getattr(audio, "has_audio", True):
            return
        for piece in audio.pieces(config.sample_rate):
            y = _prepare_samples(piece, config)
            if y is not None:
                yield y, piece.start_time, piece.last
        return
    y = _prepare_samples(audio, config)
    if y is not None:
        yield y, float(audio.start_time), True


# -- internals --------------------------------------------------------------------------------


def _prepare_samples(audio: AudioTrack | NoAudio, config: SpeechConfig) -> np.ndarray | None:
    """Mono float32 samples at ``config.sample_rate``, or None when there is no audio."""
    samples = getattr(audio, "samples", None)
    if samples is None or not getattr(audio, "has_audio", True):
        return None
    y = np.asarray(samples)
    if y.ndim != 1:
        raise ValueError(f"speech features need mono samples, got shape {y.shape}")
    if y.size == 0:
        return None
    y = y.astype(np.float32, copy=False)
    if not np.isfinite(y.sum(dtype=np.float64)):  # cheap check; copy only when needed
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    sr_in = int(audio.sample_rate)
    if sr_in != config.sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=sr_in, target_sr=config.sample_rate).astype(np.float32)
    return np.ascontiguousarray(y)


def _padded_slice(y: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``y[start:stop]`` with zeros where the range leaves the signal (what ``center=True``
    padding would give)."""
    if start >= 0 and stop <= len(y):
        return y[start:stop]
    out = np.zeros(stop - start, dtype=y.dtype)
    a, b = max(start, 0), min(stop, len(y))
    if b > a:
        out[a - start : b - start] = y[a:b]
    return out


class _Analysis:
    """Per-hop analysis of one block; holds the filter banks built once per call."""

    def __init__(self, config: SpeechConfig) -> None:
        import librosa

        self.config = config
        self.librosa = librosa
        sr = config.sample_rate
        self.mel_basis = librosa.filters.mel(
            sr=sr,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.mel_fmin,
            fmax=config.mel_fmax,
        ).astype(np.float32)
        window = librosa.filters.get_window("hann", config.win_length, fftbins=True)
        # Parseval: frame energy = (2 / n_fft) * sum_k c_k |X_k|^2 with half weight at DC and
        # Nyquist; dividing by sum(w^2) turns the windowed energy into a mean square.
        weights = np.full(config.n_fft // 2 + 1, 2.0 / config.n_fft)
        weights[0] /= 2
        if config.n_fft % 2 == 0:
            weights[-1] /= 2
        self.power_weights = (weights / np.sum(window**2)).astype(np.float32)
        self.margin = config.delta_width // 2 if config.deltas else 0
        self.max_period = min(int(math.ceil(sr / config.f0_fmin)), config.f0_frame_length - 1)

    def hops(
        self, y: np.ndarray, h0: int, h1: int, n_hops: int, *, y0: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features of hops ``[h0, h1)``: cepstra ``(n_cep, n)`` float32, mean-square power,
        YIN F0 in Hz and NACF at the YIN period (each ``(n,)``). ``y`` holds the recording's
        samples from sample ``y0`` on (zeros are read before sample 0 and after the end)."""
        c, lr = self.config, self.librosa
        hop = c.hop_length
        # Context hops so the delta filter sees the same neighbours as in one shot; near the ends
        # of the track its 'interp' edge fit needs a full window of hops.
        k0, k1 = max(h0 - self.margin, 0), min(h1 + self.margin, n_hops)
        if c.deltas and k1 - k0 < c.delta_width:
            k0 = max(0, min(k0, k1 - c.delta_width))
            k1 = min(n_hops, max(k1, k0 + c.delta_width))
        n = k1 - k0

        half = c.n_fft // 2
        seg = _padded_slice(y, k0 * hop - half - y0, (k1 - 1) * hop - half + c.n_fft - y0)
        spec = lr.stft(
            seg,
            n_fft=c.n_fft,
            hop_length=hop,
            win_length=c.win_length,
            window="hann",
            center=False,
        )
        power_spec = spec.real**2 + spec.imag**2
        del spec
        power = self.power_weights @ power_spec
        mel = self.mel_basis @ power_spec
        del power_spec
        log_mel = lr.power_to_db(mel, ref=1.0, amin=10.0 ** (c.db_floor / 10), top_db=None)
        mfcc = lr.feature.mfcc(S=log_mel, n_mfcc=c.n_mfcc, dct_type=2, norm="ortho")
        if c.deltas:
            mode = "interp" if n >= c.delta_width else "nearest"
            delta = lr.feature.delta(mfcc, width=c.delta_width, order=1, axis=-1, mode=mode)
            cep = np.concatenate([mfcc, delta], axis=0)
        else:
            cep = mfcc
        keep = slice(h0 - k0, h1 - k0)

        # Pitch and voicing only where they are needed (no context hops).
        frame = c.f0_frame_length
        half = frame // 2
        seg = _padded_slice(y, h0 * hop - half - y0, (h1 - 1) * hop - half + frame - y0)
        f0 = lr.yin(
            seg,
            fmin=c.f0_fmin,
            fmax=c.f0_fmax,
            sr=c.sample_rate,
            frame_length=frame,
            hop_length=hop,
            trough_threshold=c.yin_threshold,
            center=False,
        )
        frames = lr.util.frame(seg, frame_length=frame, hop_length=hop).T  # (n, frame) view
        power = power[keep].astype(np.float64)
        # Hops under the absolute silence floor are never voiced: skip their autocorrelation.
        audible = np.flatnonzero(power >= 10.0 ** (c.silence_floor_db / 10))
        nacf = np.zeros(len(power), dtype=np.float64)
        nacf[audible] = self._nacf(frames[audible], f0[audible])
        return (
            cep[:, keep].astype(np.float32, copy=False),
            power,
            np.nan_to_num(f0.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0),
            nacf,
        )

    def _nacf(self, frames: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """Normalised autocorrelation of each frame at its YIN period (best of the two integer
        lags around it), over a fixed window of ``frame - max_period - 2`` samples."""
        n, length = frames.shape
        width = length - self.max_period - 2
        with np.errstate(divide="ignore", invalid="ignore"):
            period = np.where(f0 > 0, self.config.sample_rate / f0, 1.0)
        lag = np.clip(np.floor(np.nan_to_num(period, nan=1.0)), 1, self.max_period).astype(np.intp)
        offsets = np.arange(width, dtype=np.intp)
        out = np.zeros(n, dtype=np.float64)
        for s in range(0, n, _NACF_CHUNK):
            rows = frames[s : s + _NACF_CHUNK]
            a = rows[:, :width]
            energy_a = np.einsum("ij,ij->i", a, a, dtype=np.float64)
            best = np.full(len(rows), -1.0)
            for extra in (0, 1):
                idx = lag[s : s + _NACF_CHUNK, None] + extra + offsets[None, :]
                b = np.take_along_axis(rows, idx, axis=1)
                num = np.einsum("ij,ij->i", a, b, dtype=np.float64)
                den = np.sqrt(energy_a * np.einsum("ij,ij->i", b, b, dtype=np.float64))
                r = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-20)
                best = np.maximum(best, r)
            out[s : s + _NACF_CHUNK] = best
        return out


def _voiced_median(log_f0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per frame: median of the finite ``log_f0`` over hops ``[lo, hi)`` (0 when none) and the
    fraction of those hops that are voiced (finite)."""
    width = int((hi - lo).max())
    idx = lo[:, None] + np.arange(width)[None, :]
    inside = idx < hi[:, None]
    vals = np.where(inside, log_f0[np.minimum(idx, len(log_f0) - 1)], np.nan)
    count = np.sum(np.isfinite(vals), axis=1)
    vals.sort(axis=1)  # NaN sort last
    lower = np.take_along_axis(vals, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    upper = np.take_along_axis(vals, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
    median = np.where(count > 0, (lower + upper) / 2, 0.0)
    return median, count / (hi - lo)
