"""Speech branch features: shapes on real clips, pitch, silence, alignment, blocks, config hash."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, nonempty

from mmaffect.features import speech
from mmaffect.features.speech import SpeechConfig, SpeechFeatures, speech_features
from mmaffect.features.timing import FrameTiming
from mmaffect.media import load_audio, probe
from mmaffect.media.audio import AudioTrack, NoAudio

SR = 16_000
CFG = SpeechConfig()
FLAGS = ("silent", "no_audio")


def track(samples: np.ndarray, start: float = 0.0, sr: int = SR) -> AudioTrack:
    return AudioTrack(np.asarray(samples, np.float32), sr, start, Path("synthetic.wav"))


def harmonic(f0_hz, seconds: float, amplitude: float = 0.2, sr: int = SR) -> np.ndarray:
    """A harmonic tone (8 partials, 1/k amplitudes) following ``f0_hz`` (scalar or per sample)."""
    n = int(round(seconds * sr))
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 9))
    return (amplitude * y / np.max(np.abs(y))).astype(np.float32)


def f0_hz(feats: SpeechFeatures) -> np.ndarray:
    return CFG.f0_ref_hz * 2.0 ** feats.column("f0")


def check_invariants(feats: SpeechFeatures, n_frames: int) -> None:
    """Shape, dtype, no NaN, binary flags, all-zero feature columns wherever a flag is set."""
    v = feats.values
    assert v.shape == (n_frames, CFG.dim) and v.dtype == np.float32
    assert np.isfinite(v).all()
    assert len(feats.column_names) == CFG.dim
    silent, no_audio = feats.column("silent"), feats.column("no_audio")
    assert set(np.unique(silent)) <= {0.0, 1.0} and set(np.unique(no_audio)) <= {0.0, 1.0}
    assert not np.any((silent == 1) & (no_audio == 1))
    flagged = (silent == 1) | (no_audio == 1)
    assert np.all(v[flagged, : CFG.dim - 2] == 0)
    assert np.all((feats.column("voiced") >= 0) & (feats.column("voiced") <= 1))
    assert np.all((feats.column("rms") >= 0) & (feats.column("rms") <= 1))


# -- real media -------------------------------------------------------------------------------


@functools.cache
def real_features(path: str) -> tuple[FrameTiming, SpeechFeatures, AudioTrack]:
    info = probe(path)
    v = info.require_video()
    timing = FrameTiming(fps=v.fps, n_frames=v.frames, start=v.start_time)  # exact Fraction fps
    audio = load_audio(path, info=info)
    assert isinstance(audio, AudioTrack)
    return timing, speech_features(audio, timing), audio


def ravdess(shared_data: Path) -> list[Path]:
    clips = sorted((shared_data / "video/ravdess_av_actor05").glob("*.mp4"))
    return nonempty(clips, "RAVDESS clips")


def test_real_clips_have_one_row_per_frame(shared_data):
    v = shared_data / "video"
    clips = ravdess(shared_data) + nonempty(sorted(v.glob("grid/*.mpg"))[:2], "GRID clips")
    clips.append(v / "hamilton/short_hamilton_clip.mp4")
    fps_seen = set()
    for clip in clips:
        timing, feats, _ = real_features(str(clip))
        check_invariants(feats, probe(clip).video.frames)
        fps_seen.add(timing.fps)
        assert feats.column("silent").mean() < 0.9, clip.name  # real speech is not all silence
    assert {Fraction(30000, 1001), Fraction(25)} <= fps_seen


def test_hamilton_video_starting_after_audio(shared_data):
    """The video starts 0.85 s into the audio: every frame is covered, rows follow the video."""
    path = shared_data / "video/hamilton/short_hamilton_clip.mp4"
    timing, feats, audio = real_features(str(path))
    assert timing.start > 0.8 and audio.start_time < 0.05
    check_invariants(feats, 275)
    assert feats.column("no_audio").sum() == 0
    # Row 0 is the audio around video time 0.852 s, not audio time 0.
    shifted = speech_features(dataclasses.replace(audio, start_time=timing.start), timing)
    assert not np.allclose(shifted.values[:10], feats.values[:10])


def test_ravdess_speech_is_voiced_and_leading_silence_is_silent(shared_data):
    for clip in ravdess(shared_data):
        timing, feats, _ = real_features(str(clip))
        t = timing.times().astype(np.float64)
        speaking, before = (t > 1.1) & (t < 2.2), t < 0.5
        assert feats.column("silent")[speaking].mean() <= 0.2, clip.name
        assert feats.column("voiced")[speaking].mean() >= 0.4, clip.name
        assert feats.column("silent")[before].mean() >= 0.8, clip.name


def test_quiet_ravdess_speech_is_not_silent(shared_data):
    """The quietest clip (speech peaks near -47 dBFS) keeps its speech frames."""
    levels = {}
    for clip in ravdess(shared_data):
        _, _, audio = real_features(str(clip))
        levels[clip] = 10 * np.log10(np.mean(audio.samples.astype(np.float64) ** 2))
    quietest = min(levels, key=levels.get)
    assert levels[quietest] < -45  # mean level of the whole clip, dBFS
    timing, feats, audio = real_features(str(quietest))
    t = timing.times().astype(np.float64)
    speaking = (t > 1.1) & (t < 2.2)
    assert feats.column("silent")[speaking].mean() <= 0.1
    # 12 dB quieter still: the relative rule alone would not save it, the floor still does.
    quieter = speech_features(dataclasses.replace(audio, samples=audio.samples / 4), timing)
    assert quieter.column("silent")[speaking].mean() <= 0.5


def test_emodb_angry_and_happy_speech_is_higher_pitched_than_sad_and_bored(shared_data):
    root = shared_data / "audio/emodb"
    import soundfile

    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for speaker in ("03", "14"):  # one male, one female speaker
        mean_f0 = {}
        for code in "WFTL":  # anger, happiness, sadness, boredom
            files = sorted(
                r["file"] for r in rows if r["speaker"] == speaker and r["emotion_code"] == code
            )[:3]
            per_file = []
            for name in nonempty(files, f"EmoDB {speaker}/{code}"):
                y, sr = soundfile.read(
                    root / "flac" / Path(name).with_suffix(".flac"), dtype="float32"
                )
                timing = FrameTiming(25.0, int(len(y) / sr * 25))
                feats = speech_features(track(y, sr=sr), timing)
                voiced = feats.column("voiced") >= 0.5
                assert voiced.sum() > 10, name
                per_file.append(np.median(f0_hz(feats)[voiced]))
            mean_f0[code] = np.mean(per_file)
        high = (mean_f0["W"] + mean_f0["F"]) / 2
        low = (mean_f0["T"] + mean_f0["L"]) / 2
        assert high > 1.15 * low, (speaker, mean_f0)


# -- pitch ------------------------------------------------------------------------------------


def test_200hz_sawtooth_gives_200hz():
    from scipy.signal import sawtooth

    # Sampled half a sample off the jumps: a sample exactly on a jump lands on either side by
    # rounding, which makes the naive sawtooth aperiodic there (YIN then halves the F0).
    t = (np.arange(2 * SR) + 0.5) / SR
    y = 0.3 * sawtooth(2 * np.pi * 200 * t)
    feats = speech_features(track(y), FrameTiming(25.0, 50))
    check_invariants(feats, 50)
    inner = slice(2, -2)
    assert np.all(feats.column("voiced")[inner] == 1)
    np.testing.assert_allclose(f0_hz(feats)[inner], 200.0, rtol=0.01)
    assert feats.column("silent").sum() == 0


def test_tone_sweep_gives_rising_f0():
    seconds = 3.0
    n = int(seconds * SR)
    sweep = 100.0 * 4.0 ** (np.arange(n) / n)  # 100 Hz → 400 Hz, exponential
    timing = FrameTiming(30.0, 90)
    feats = speech_features(track(harmonic(sweep, seconds)), timing)
    check_invariants(feats, 90)
    inner = slice(3, -3)
    f0 = f0_hz(feats)[inner]
    assert np.all(feats.column("voiced")[inner] == 1)
    assert np.all(np.diff(f0) > 0)
    expected = 100.0 * 4.0 ** (timing.times()[inner] / seconds)
    np.testing.assert_allclose(f0, expected, rtol=0.03)


def test_other_sample_rates_are_resampled():
    y = harmonic(200.0, 1.0, sr=44_100)
    feats = speech_features(track(y, sr=44_100), FrameTiming(25.0, 25))
    np.testing.assert_allclose(np.median(f0_hz(feats)), 200.0, rtol=0.01)


def test_white_noise_is_audible_but_unvoiced():
    y = 0.03 * np.random.default_rng(0).standard_normal(2 * SR)
    feats = speech_features(track(y), FrameTiming(25.0, 50))
    check_invariants(feats, 50)
    assert feats.column("silent").sum() == 0
    assert feats.column("voiced").mean() < 0.1


# -- frame grid and alignment -----------------------------------------------------------------


@pytest.mark.parametrize("fps", [25.0, Fraction(30000, 1001), 29.97, 30.0, 60.0, 240.0, 0.5])
def test_any_frame_rate_gives_one_row_per_frame(fps):
    seconds = 3.0
    n_frames = int(seconds * float(fps))
    timing = FrameTiming(fps=fps, n_frames=n_frames)
    feats = speech_features(track(harmonic(200.0, seconds)), timing)
    check_invariants(feats, n_frames)
    covered = np.asarray(timing.times(), dtype=np.float64) < seconds
    np.testing.assert_array_equal(feats.column("no_audio"), (~covered).astype(np.float32))
    f0 = f0_hz(feats)[covered]
    assert np.mean(np.abs(f0 / 200.0 - 1) < 0.01) >= 0.9
    assert feats.column("silent").sum() == 0


def test_zero_frames():
    for audio in (track(harmonic(200.0, 1.0)), NoAudio(Path("x.mp4"), "no audio stream")):
        feats = speech_features(audio, FrameTiming(25.0, 0))
        assert feats.values.shape == (0, CFG.dim) and feats.values.dtype == np.float32


def test_no_audio_gives_zeros_and_flag():
    feats = speech_features(NoAudio(Path("x.mp4"), "no audio stream"), FrameTiming(25.0, 40))
    check_invariants(feats, 40)
    assert np.all(feats.column("no_audio") == 1)
    assert np.all(feats.values[:, :-1] == 0)
    empty = speech_features(track(np.zeros(0)), FrameTiming(25.0, 40))
    np.testing.assert_array_equal(empty.values, feats.values)


def test_audio_shorter_than_video_flags_the_tail_only():
    feats = speech_features(track(harmonic(200.0, 1.0)), FrameTiming(25.0, 50))
    check_invariants(feats, 50)
    no_audio = feats.column("no_audio")
    assert np.all(no_audio[:25] == 0) and np.all(no_audio[25:] == 1)  # frame 25 is at t = 1.0 s
    assert np.all(feats.column("voiced")[:24] > 0.9)


def test_audio_starting_late_is_placed_on_the_video_timeline():
    """Audio starts 0.5 s into the video; a tone at audio time [1.0, 1.5) is at video [1.5, 2.0)."""
    y = np.zeros(3 * SR, np.float32)
    y[SR : SR * 3 // 2] = harmonic(200.0, 0.5)
    timing = FrameTiming(25.0, 100)
    feats = speech_features(track(y, start=0.5), timing)
    check_invariants(feats, 100)
    t = timing.times()
    outside = (t < 0.5) | (t >= 3.5)  # the 3 s of audio cover video time [0.5, 3.5)
    np.testing.assert_array_equal(feats.column("no_audio"), outside.astype(np.float32))
    sounding = feats.column("silent") == 0
    sounding &= feats.column("no_audio") == 0
    assert np.all(sounding[(t > 1.53) & (t < 1.97)])
    assert not np.any(sounding[(t < 1.45) | (t > 2.05)])


# -- silence and level ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y",
    [
        np.zeros(2 * SR, np.float32),
        3e-5 * np.random.default_rng(1).standard_normal(2 * SR),  # about -90 dBFS
    ],
    ids=["zeros", "low-noise"],
)
def test_silence_is_flagged_and_zero(y):
    feats = speech_features(track(y), FrameTiming(25.0, 50))
    check_invariants(feats, 50)
    assert np.all(feats.column("silent") == 1)
    assert np.all(feats.values[:, : CFG.dim - 2] == 0)


def test_quiet_tone_above_floor_is_speech_below_floor_is_silent():
    for rms_db, silent in ((-55.0, 0), (-80.0, 1)):
        y = harmonic(150.0, 1.0, amplitude=1.0)
        y *= 10 ** (rms_db / 20) / np.sqrt(np.mean(y.astype(np.float64) ** 2))
        feats = speech_features(track(y), FrameTiming(25.0, 25))
        assert np.all(feats.column("silent") == silent), rms_db
        if not silent:
            assert np.all(feats.column("voiced") > 0.9)
            np.testing.assert_allclose(feats.column("rms")[2:-2], (rms_db + 100) / 100, atol=0.01)


def test_pause_inside_loud_speech_is_silent_by_the_relative_rule():
    """A -60 dBFS hiss between -10 dBFS tones is above the absolute floor but 40 dB down."""
    rng = np.random.default_rng(2)
    y = 10 ** (-60 / 20) * rng.standard_normal(3 * SR)
    y[:SR] = harmonic(150.0, 1.0, amplitude=0.4)
    y[2 * SR :] = harmonic(150.0, 1.0, amplitude=0.4)
    feats = speech_features(track(y), FrameTiming(25.0, 75))
    silent = feats.column("silent")
    assert np.all(silent[28:47] == 1) and np.all(silent[:24] == 0) and np.all(silent[53:] == 0)


def test_rms_is_calibrated_dbfs():
    t = np.arange(SR) / SR
    feats = speech_features(track(0.5 * np.sin(2 * np.pi * 440 * t)), FrameTiming(25.0, 25))
    expected = (20 * np.log10(0.5 / np.sqrt(2)) + 100) / 100  # -9.03 dBFS → 0.9097
    np.testing.assert_allclose(feats.column("rms")[2:-2], expected, atol=1e-3)


# -- blocks -----------------------------------------------------------------------------------


def test_blockwise_equals_one_shot(shared_data):
    audio = load_audio(shared_data / "asr/whisper_jfk/jfk.flac")
    assert isinstance(audio, AudioTrack) and audio.duration > 10
    audio = dataclasses.replace(audio, start_time=0.21)  # audio starts after the video
    timing = FrameTiming(Fraction(30000, 1001), int(12.5 * 30000 / 1001))
    one_shot = speech_features(audio, timing, block_seconds=1e9)
    check_invariants(one_shot, timing.n_frames)
    assert one_shot.column("voiced").mean() > 0.3
    for block_seconds in (0.37, 2.0):
        blocks = speech_features(audio, timing, block_seconds=block_seconds)
        np.testing.assert_allclose(blocks.values, one_shot.values, rtol=1e-5, atol=1e-3)
        exact = [one_shot.column_names.index(c) for c in ("f0", "voiced", *FLAGS)]
        np.testing.assert_array_equal(blocks.values[:, exact], one_shot.values[:, exact])


def test_one_frame_blocks_equal_one_shot():
    """Blocks of a single frame, including the last frames, where the delta filter's edge
    rule needs more context than the frame."""
    rng = np.random.default_rng(3)
    y = harmonic(np.linspace(120, 240, 2 * SR), 2.0) + 0.01 * rng.standard_normal(2 * SR)
    y[SR // 2 : SR] = 0
    timing = FrameTiming(30.0, 60)
    one_shot = speech_features(track(y), timing, block_seconds=1e9)
    blocks = speech_features(track(y), timing, block_seconds=0.01)
    np.testing.assert_allclose(blocks.values, one_shot.values, rtol=1e-5, atol=1e-3)
    assert one_shot.column("silent").sum() >= 10 and one_shot.column("voiced").mean() > 0.5


def test_out_fills_a_memory_map_as_a_new_array_would(shared_data, tmp_path, monkeypatch):
    """``out=``: the extraction computes the features straight into the cache entry's
    memory-mapped rows, released block by block; the rows equal the in-memory result."""
    monkeypatch.setattr(speech, "BLOCK_ROWS", 37)  # several release blocks
    audio = load_audio(shared_data / "asr/whisper_jfk/jfk.flac")
    timing = FrameTiming(30.0, 330)
    in_memory = speech_features(audio, timing, block_seconds=2.0)
    out = np.lib.format.open_memmap(
        tmp_path / "values.npy", mode="w+", dtype=np.float32, shape=(330, CFG.dim)
    )
    mapped = speech_features(audio, timing, block_seconds=2.0, out=out)
    assert mapped.values is out
    np.testing.assert_array_equal(np.load(tmp_path / "values.npy"), in_memory.values)
    with pytest.raises(ValueError, match="out has shape"):
        speech_features(audio, timing, out=np.zeros((329, CFG.dim), np.float32))


# -- configuration ----------------------------------------------------------------------------


def test_columns():
    names = CFG.column_names
    assert CFG.dim == 85 == len(names) == len(set(names))
    assert names[:2] == ("mfcc_0", "mfcc_1") and names[40] == "d_mfcc_0"
    assert names[-5:] == ("f0", "voiced", "rms", "silent", "no_audio")
    small = SpeechConfig(deltas=False, n_mfcc=13)
    assert small.dim == 18 == len(small.column_names)
    feats = speech_features(track(harmonic(200.0, 1.0)), FrameTiming(25.0, 25), small)
    assert feats.values.shape == (25, 18)


# Another valid value for every field (a new field must be added here, or the test fails).
OTHER_VALUES = {
    "sample_rate": 16_001,  # the smallest change that keeps the other defaults valid
    "hop_ms": 20.0,
    "win_ms": 20.0,
    "n_fft": 1024,
    "n_mels": 80,
    "mel_fmin": 0.0,
    "mel_fmax": 7_600.0,
    "n_mfcc": 13,
    "deltas": False,
    "delta_width": 5,
    "f0_fmin": 70.0,
    "f0_fmax": 400.0,
    "f0_frame_ms": 64.0,
    "yin_threshold": 0.15,
    "voicing_threshold": 0.45,
    "f0_ref_hz": 55.0,
    "db_floor": -120.0,
    "silence_floor_db": -60.0,
    "silence_rel_db": 35.0,
    "silence_ref_percentile": 99.0,
}


def test_config_hash_is_stable_and_tracks_every_field(monkeypatch):
    h = CFG.config_hash()
    assert len(h) == 64 and h == SpeechConfig().config_hash()
    assert CFG.to_dict()["version"] == speech.SPEECH_FEATURES_VERSION
    assert SpeechConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
    code = "from mmaffect.features.speech import SpeechConfig; print(SpeechConfig().config_hash())"
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # another process, another str hash seed
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.stdout.strip() == h, out.stderr
    fields = {f.name for f in dataclasses.fields(SpeechConfig)}
    assert set(OTHER_VALUES) | {"features", "whisper_model"} == fields
    hashes = {dataclasses.replace(CFG, **{k: v}).config_hash() for k, v in OTHER_VALUES.items()}
    assert len(hashes) == len(OTHER_VALUES) and h not in hashes
    # the speech feature sets: the default keeps the keys of caches made before they existed;
    # the Whisper model counts only where its states are in the entry
    assert "features" not in CFG.to_dict() and "whisper_model" not in CFG.to_dict()
    both = dataclasses.replace(CFG, features=("whisper", "prosody"))
    assert both.features == ("prosody", "whisper") and both.config_hash() not in hashes | {h}
    base = dataclasses.replace(both, whisper_model="whisper-base")
    assert base.config_hash() != both.config_hash()
    assert dataclasses.replace(CFG, whisper_model="whisper-base").config_hash() == h
    assert SpeechConfig.from_dict(json.loads(json.dumps(both.to_dict()))) == both
    with pytest.raises(ValueError, match="unknown speech feature set"):
        SpeechConfig(features=("prosody", "wav2vec"))
    monkeypatch.setattr(speech, "SPEECH_FEATURES_VERSION", "speech-test")
    assert CFG.config_hash() != h and CFG.to_dict()["version"] == "speech-test"


@pytest.mark.parametrize(
    "bad",
    [
        {"f0_fmin": 600.0},
        {"delta_width": 8},
        {"n_mfcc": 80},
        {"f0_frame_ms": 20.0},
        {"mel_fmax": 9000.0},
        {"silence_floor_db": -120.0},
    ],
)
def test_invalid_config_is_rejected(bad):
    with pytest.raises(ValueError, match="invalid SpeechConfig"):
        SpeechConfig(**bad)


def test_bad_arguments():
    audio = track(harmonic(200.0, 1.0))
    with pytest.raises(ValueError):
        speech_features(audio, FrameTiming(0.0, 10))
    with pytest.raises(ValueError):
        speech_features(audio, FrameTiming(25.0, 10), block_seconds=0)
    with pytest.raises(ValueError, match="mono"):
        speech_features(track(np.zeros((2, SR))), FrameTiming(25.0, 10))
