"""The soundtrack in pieces (mmaffect.media.soundtrack): the pieces are the whole track cut in
pauses, and the speech features and ASR over pieces match the whole-track results."""

from __future__ import annotations

import dataclasses
import difflib
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import make_video, nonempty, run_ffmpeg

from mmaffect.errors import MediaError
from mmaffect.features.speech import SpeechConfig, speech_features
from mmaffect.features.timing import FrameTiming
from mmaffect.media import load_audio, probe
from mmaffect.media import soundtrack as soundtrack_module
from mmaffect.media.audio import NoAudio
from mmaffect.media.soundtrack import Soundtrack, open_soundtrack, pause_cut

SR = 16_000
FLAGS = ("f0", "voiced", "silent", "no_audio")  # columns set by rules: must be equal


def pieces_of(track: Soundtrack, sample_rate: int | None = None) -> list:
    pieces = list(track.pieces(sample_rate))
    assert pieces and pieces[-1].last and not any(p.last for p in pieces[:-1])
    return pieces


def level_db(y: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-12)


# -- the pieces -------------------------------------------------------------------------------


def test_one_piece_holds_exactly_the_whole_track(shared_data):
    clip = shared_data / "asr/whisper_jfk/jfk.flac"
    whole = load_audio(clip)
    track = open_soundtrack(clip)  # 11 s: one piece at the default length
    (piece,) = pieces_of(track)
    np.testing.assert_array_equal(piece.samples, whole.samples)
    assert piece.offset == 0 and piece.start_time == whole.start_time and track.cuts == []


def test_pieces_are_the_track_cut_in_pauses(shared_data):
    clip = shared_data / "asr/whisper_jfk/jfk.flac"  # speech with pauses between phrases
    whole = load_audio(clip).samples
    track = open_soundtrack(clip, piece_seconds=3.0)
    pieces = pieces_of(track)
    assert len(pieces) >= 4 and len(track.cuts) == len(pieces) - 1
    np.testing.assert_array_equal(np.concatenate([p.samples for p in pieces]), whole)
    speech = np.percentile([level_db(whole[i : i + 1600]) for i in range(0, len(whole), 1600)], 95)
    for before, piece in zip(pieces, pieces[1:], strict=False):
        assert piece.offset == before.offset + len(before.samples)
        assert piece.start_time == pytest.approx(piece.offset / SR)
        assert 1.5 * SR <= len(before.samples) <= 3.0 * SR  # in the second half, at most 3 s
        # the cut is in a pause: the 100 ms around it are far below the speech level
        around = whole[piece.offset - 800 : piece.offset + 800]
        assert level_db(around) < speech - 20, piece.offset / SR


def test_later_passes_reuse_the_cuts_at_any_sample_rate(shared_data, monkeypatch):
    clip = shared_data / "video/hamilton/short_hamilton_clip.mp4"  # audio starts at 8 ms
    track = open_soundtrack(clip, piece_seconds=2.5)
    first = pieces_of(track)
    cuts = track.cuts

    def no_vad(*args):
        raise AssertionError("a later pass ran the VAD again")

    monkeypatch.setattr(soundtrack_module, "_pauses", no_vad)
    again = pieces_of(track)
    assert [p.offset for p in again] == [p.offset for p in first]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
    other = pieces_of(track, 22_050)
    assert [p.start_time for p in other] == pytest.approx([p.start_time for p in first], abs=1e-4)
    assert other[0].start_time == pytest.approx(0.008, abs=1e-3) and track.cuts == cuts


def test_without_a_pause_the_cut_is_at_the_quietest_100_ms(monkeypatch):
    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(4 * SR)).astype(np.float32)
    y[int(2.9 * SR) : int(3.0 * SR)] *= 0.01  # a dip in the second half
    monkeypatch.setattr(soundtrack_module, "_pauses", lambda y, sr: [])
    assert abs(pause_cut(y, SR) - int(2.95 * SR)) <= SR // 20
    monkeypatch.setattr(soundtrack_module, "_pauses", lambda y, sr: [(100, 900), (4000, 8000)])
    assert pause_cut(y, SR) == 2 * SR + 6000  # the middle of the longest pause


def test_no_audio_stream_and_bad_settings(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", audio=False)
    assert isinstance(open_soundtrack(silent), NoAudio)
    with_audio = make_video(tmp_path / "tone.mp4")
    with pytest.raises(ValueError, match="piece_seconds must be at least 0.2"):
        Soundtrack(with_audio, piece_seconds=0.1)
    with pytest.raises(MediaError, match="has 1 audio stream"):
        Soundtrack(with_audio, stream_index=1)


# -- speech features over pieces --------------------------------------------------------------


def assert_same_features(pieces, whole) -> None:
    """Equal up to float rounding; the rule-made columns exactly (on this machine the pieces
    gave bit-identical values)."""
    np.testing.assert_allclose(pieces.values, whole.values, rtol=1e-5, atol=1e-3)
    exact = [whole.column_names.index(c) for c in FLAGS]
    np.testing.assert_array_equal(pieces.values[:, exact], whole.values[:, exact])


@pytest.mark.parametrize("piece_seconds", [0.5, 2.3])
def test_speech_features_over_pieces_equal_the_whole_track(shared_data, piece_seconds):
    for clip in (
        shared_data / "video/hamilton/short_hamilton_clip.mp4",  # video starts 0.85 s in
        shared_data / "asr/whisper_jfk/jfk.flac",
    ):
        info = probe(clip)
        v = info.video
        timing = (
            FrameTiming(fps=v.fps, n_frames=v.frames, start=v.start_time)
            if v
            else FrameTiming(30.0, round(info.duration * 30))
        )
        whole = speech_features(load_audio(clip, info=info), timing)
        track = open_soundtrack(clip, piece_seconds=piece_seconds)
        assert_same_features(speech_features(track, timing), whole)
        assert len(track.cuts) >= 3, clip.name


def test_speech_features_over_pieces_at_the_edges(tmp_path):
    """Audio shorter and longer than the video, starting late, frame rates above 100 fps (the
    nearest-hop rule) and another analysis rate than the soundtrack's."""
    wav = tmp_path / "speechlike.wav"
    run_ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=180:sample_rate=16000:duration=1.2",
        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono:d=0.4",
        "-f", "lavfi", "-i", "anoisesrc=r=16000:a=0.05:d=1.4",
        "-filter_complex", "[0][1][2]concat=n=3:v=0:a=1", str(wav),
    )  # fmt: skip
    whole_audio = load_audio(wav)
    for fps, n_frames, late in ((Fraction(30000, 1001), 60, 0.0), (25.0, 90, 0.3), (240.0, 500, 0)):
        timing = FrameTiming(fps, n_frames)
        audio = dataclasses.replace(whole_audio, start_time=late)
        track = open_soundtrack(wav, piece_seconds=0.7)
        track.start_time = late  # as a file whose audio starts after its video
        assert_same_features(speech_features(track, timing), speech_features(audio, timing))
    config = SpeechConfig(sample_rate=22_050, n_fft=1024)
    timing = FrameTiming(25.0, 75)
    at_22k = load_audio(wav, sample_rate=22_050)
    assert_same_features(
        speech_features(open_soundtrack(wav, piece_seconds=0.7), timing, config),
        speech_features(at_22k, timing, config),
    )


# -- ASR over pieces --------------------------------------------------------------------------


def words_of(transcript) -> list[str]:
    return [re.sub(r"[^\w']", "", w.text.lower()) for w in transcript.words]


@pytest.fixture(scope="module")
def natural_speech(tmp_path_factory, shared_data) -> Path:
    """55 s of real speech: six recordings of five corpora, one after the other."""
    clips = nonempty(
        [
            shared_data / "asr/whisper_jfk/jfk.flac",
            shared_data / "asr/lhotse/2412-153948-0000.flac",
            shared_data / "video/talking_heads/SadTalker__WDA_KatieHill_000.mp4",
            shared_data / "asr/lhotse/LJ002-0020.wav",
            shared_data / "video/talking_heads/SadTalker__WDA_AlexandriaOcasioCortez_000.mp4",
            shared_data / "asr/lhotse/ES2011a.Headset-0-40s-46s.wav",
        ],
        "speech recordings",
    )
    out = tmp_path_factory.mktemp("speech") / "six_speakers.flac"
    inputs = [a for c in clips for a in ("-i", str(c))]
    chain = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(6))
    chain += "".join(f"[a{i}]" for i in range(6)) + "concat=n=6:v=0:a=1[out]"
    run_ffmpeg(*inputs, "-filter_complex", chain, "-map", "[out]", str(out))
    return out


@pytest.mark.slow
def test_asr_over_pieces_gives_the_whole_track_words(natural_speech, models_dir):
    from mmaffect.features.transcripts import transcribe

    whole = transcribe(load_audio(natural_speech), models_dir=models_dir)
    one = transcribe(open_soundtrack(natural_speech), models_dir=models_dir)  # one piece
    assert [dataclasses.astuple(w) for w in one.words] == [
        dataclasses.astuple(w) for w in whole.words
    ]
    assert one.asr["pieces"] == 1 and one.text == whole.text
    track = open_soundtrack(natural_speech, piece_seconds=15.0)
    pieces = transcribe(track, models_dir=models_dir)
    minutes = probe(natural_speech).duration / 60
    assert pieces.asr["pieces"] == len(track.cuts) + 1 >= 4
    assert len(whole.words) >= 100
    assert abs(len(pieces.words) - len(whole.words)) <= max(1, round(minutes))  # ±1 a minute
    a, b = words_of(whole), words_of(pieces)
    match = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    assert match.ratio() >= 0.95, (a, b)
    starts = [
        abs(whole.words[i + k].start - pieces.words[j + k].start)
        for i, j, n in match.get_matching_blocks()
        for k in range(n)
    ]
    assert np.median(starts) < 0.02 and np.percentile(starts, 90) < 0.1
    assert all(w.start >= 0 and w.end <= probe(natural_speech).duration for w in pieces.words)


@pytest.mark.slow
def test_extract_reads_the_soundtrack_in_pieces(shared_data, models_dir, tmp_path, monkeypatch):
    import json

    import mmaffect
    from mmaffect.features.audio_side import AUDIO_ONLY_FPS

    clip = shared_data / "asr/whisper_jfk/jfk.flac"
    monkeypatch.setattr(soundtrack_module, "PIECE_SECONDS", 5.0)
    report = mmaffect.extract(
        [clip], cache=tmp_path, models_dir=models_dir, progress=False, modalities="speech,word"
    )
    assert report.exit_code == 0 and sorted(report.videos["jfk"].computed) == ["speech", "word"]
    (transcript,) = (tmp_path / "jfk").glob("transcript-*.json")
    made = json.loads(transcript.read_text())
    assert made["asr"]["pieces"] >= 3
    text = " ".join(w["text"] for w in made["words"]).lower()
    assert all(p in text for p in ("my fellow americans", "your country", "do for you"))
    (speech,) = (tmp_path / "jfk").glob("speech-*/values.npy")
    timing = FrameTiming(AUDIO_ONLY_FPS, round(probe(clip).duration * AUDIO_ONLY_FPS))
    whole = speech_features(load_audio(clip), timing).values
    np.testing.assert_allclose(np.load(speech), whole, rtol=1e-5, atol=1e-3)
