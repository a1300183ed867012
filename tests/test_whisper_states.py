"""Whisper encoder states as speech features (``--speech-features whisper``), and
``--language auto``: on real clips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmaffect.features.timing import FrameTiming
from mmaffect.features.whisper_states import STATE_SECONDS, states_to_frames

MM = [sys.executable, "-m", "mmaffect"]


def _speech_entry(cache: Path, vid: str) -> tuple[np.ndarray, dict]:
    (folder,) = (cache / vid).glob("speech-*")
    return np.load(folder / "values.npy"), json.loads((folder / "meta.json").read_text())


def _extract(inputs, cache: Path, models_dir: Path, *args: str) -> None:
    subprocess.run([*MM, "extract", *map(str, inputs), "--cache", str(cache), "--models-dir",
                    str(models_dir), "--no-progress", *args], check=True,
                   capture_output=True)  # fmt: skip


def test_states_are_averaged_per_frame_or_the_nearest_taken():
    states = np.arange(50, dtype=np.float32)[:, None].repeat(2, axis=1)  # 1 s of states
    # 25 fps: frame i covers [i/25 - 0.02, i/25 + 0.02): the two states centred in it
    values = np.full((30, 2), -1.0, np.float32)
    states_to_frames(states, 0.0, FrameTiming(fps=25.0, n_frames=30), values)
    assert values[0, 0] == 0.0  # only state 0 (centre 0.01) lies in [-0.02, 0.02)
    assert values[1, 0] == pytest.approx(1.5)  # states 1 and 2 (0.03, 0.05) in [0.02, 0.06)
    assert values[24, 0] == pytest.approx(47.5)
    assert (values[25:] == -1.0).all()  # beyond the audio: left as they were
    # 100 fps: frames too short to hold a centre take the nearest state
    values = np.zeros((100, 2), np.float32)
    states_to_frames(states, 0.5, FrameTiming(fps=100.0, n_frames=100), values)
    assert (values[:50] == 0).all()  # before the audio starts
    expected = np.floor((np.arange(50, 100) / 100 - 0.5) / STATE_SECONDS)
    got = values[50:, 0]
    # a frame holding one centre takes it, one holding none the state it lies in
    assert np.all(np.abs(got - expected) <= 0.5), got


def test_whisper_features_on_real_clips(tmp_path, shared_data, models_dir):
    """One row per frame beside the prosody columns, which stay what they were; the same
    values whether ASR ran in the same extraction or not."""
    clip = sorted((shared_data / "video/grid").glob("*.mpg"))[0]
    with_word, alone, prosody = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _extract([clip], with_word, models_dir, "--modalities", "speech,word",
             "--speech-features", "prosody,whisper")  # fmt: skip
    _extract([clip], alone, models_dir, "--modalities", "speech",
             "--speech-features", "whisper,prosody")  # fmt: skip
    _extract([clip], prosody, models_dir, "--modalities", "speech")
    vid = clip.stem
    both, meta = _speech_entry(with_word, vid)
    only, _ = _speech_entry(alone, vid)
    base, base_meta = _speech_entry(prosody, vid)
    n = meta["timing"]["n_frames"]
    assert both.shape == (n, 85 + 384) and base.shape == (n, 85)
    assert meta["columns"][:85] == base_meta["columns"]
    assert meta["columns"][85:] == [f"whisper_{i}" for i in range(384)]
    assert meta["config"]["features"] == ["prosody", "whisper"]
    assert np.array_equal(both, only)  # ASR in the same pass changes nothing
    np.testing.assert_allclose(both[:, :85], base, atol=1e-6)
    states = both[:, 85:]
    assert np.isfinite(states).all() and (np.abs(states).sum(axis=1) > 0).all()
    # row i at 25 fps: the mean of the two 20 ms states centred in [i/25 - 0.02, i/25 + 0.02)
    from mmaffect.features.transcripts import whisper_model
    from mmaffect.features.whisper_states import encoder_states
    from mmaffect.media.audio import load_audio

    audio = load_audio(clip)
    assert meta["timing"]["fps"] == 25.0 and audio.start_time == 0.0
    direct = encoder_states(audio.samples, whisper_model("whisper-tiny.en", models_dir))
    i = np.arange(1, n - 1)
    np.testing.assert_allclose(states[1:-1], (direct[2 * i - 1] + direct[2 * i]) / 2, atol=1e-4)


def test_states_do_not_depend_on_where_the_soundtrack_is_cut(monkeypatch, shared_data, models_dir):
    """Windows run on across the pieces: 2 s windows (so a 3 s clip has two) over pieces of
    0.7 s give the whole track's rows."""
    import mmaffect.features.whisper_states as ws
    from mmaffect.media.audio import load_audio
    from mmaffect.media.soundtrack import Soundtrack

    monkeypatch.setattr(ws, "WINDOW_SECONDS", 2)
    clip = sorted((shared_data / "video/grid").glob("*.mpg"))[0]
    timing = FrameTiming(fps=25.0, n_frames=75)
    whole = ws.whisper_frames(load_audio(clip), timing, model="whisper-tiny.en",
                              models_dir=models_dir)  # fmt: skip
    track = Soundtrack(clip, piece_seconds=0.7)
    pieces = ws.whisper_frames(track, timing, model="whisper-tiny.en", models_dir=models_dir)
    assert len(track.cuts) >= 3
    np.testing.assert_allclose(pieces, whole, atol=1e-4)
    # the second window starts at 2 s: its frames differ from one long window's
    monkeypatch.setattr(ws, "WINDOW_SECONDS", 30)
    one = ws.whisper_frames(load_audio(clip), timing, model="whisper-tiny.en",
                            models_dir=models_dir)  # fmt: skip
    assert np.abs(one[55:] - whole[55:]).max() > 1e-2


@pytest.mark.slow
def test_a_checkpoint_on_whisper_features_predicts_with_them(tmp_path, shared_data, models_dir):
    from mmaffect.annotations import EXPR_8, VideoLabels, write_video_labels

    clips = sorted((shared_data / "video/grid").glob("*.mpg"))[:3]
    cache = tmp_path / "cache"
    _extract(clips[:2], cache, models_dir, "--modalities", "speech",
             "--speech-features", "prosody,whisper")  # fmt: skip
    rng = np.random.default_rng(0)
    for split, clip in zip(("Train_Set", "Validation_Set"), clips[:2], strict=True):
        n = _speech_entry(cache, clip.stem)[1]["timing"]["n_frames"]
        labels = VideoLabels.from_values(clip.stem, EXPR_8, rng.integers(0, 8, size=n))
        write_video_labels(tmp_path / "EXPR" / split / f"{clip.stem}.txt", labels)
    run = tmp_path / "run"
    subprocess.run([*MM, "train", "--config", "pipelines/speech_utterance_expr.yaml",
                    "--annotations", str(tmp_path / "EXPR"), "--cache", str(cache), "--out",
                    str(run), "--epochs", "1", "--stride", "10", "--device", "cpu"],
                   check=True, capture_output=True, cwd=Path(__file__).parents[1])  # fmt: skip
    import torch

    hp = torch.load(run / "last.ckpt", weights_only=False)["hyper_parameters"]
    assert hp["feature_settings"]["speech"]["features"] == ["prosody", "whisper"]
    assert hp["model_hparams"]["dims"]["speech"] == 469
    assert hp["model_hparams"]["pooling"] == "mean_std"
    out, new_cache = tmp_path / "out", tmp_path / "cache2"
    subprocess.run([*MM, "predict", str(clips[2]), "--checkpoint", str(run / "last.ckpt"),
                    "--cache", str(new_cache), "--out", str(out), "--models-dir",
                    str(models_dir), "--no-progress", "--device", "cpu"],
                   check=True, capture_output=True)  # fmt: skip
    values, meta = _speech_entry(new_cache, clips[2].stem)
    assert values.shape[1] == 469 and meta["config"]["features"] == ["prosody", "whisper"]
    lines = (out / "abaw3" / "EXPR" / f"{clips[2].stem}.txt").read_text().splitlines()
    assert len(lines) == 1 + meta["timing"]["n_frames"]


def test_language_auto_picks_a_multilingual_model_or_says_why_not(monkeypatch):
    import mmaffect.store.lookup as lookup
    from mmaffect.features.transcripts import choose_asr_model

    assert choose_asr_model("whisper-tiny.en", None) == ("whisper-tiny.en", None, None)
    assert choose_asr_model("whisper-tiny.en", "EN") == ("whisper-tiny.en", "en", None)
    assert choose_asr_model("whisper-base", "auto") == ("whisper-base", "auto", None)
    monkeypatch.setattr(lookup, "installed", lambda name, models_dir=None: name == "whisper-base")
    model, lang, note = choose_asr_model("whisper-tiny.en", "auto")
    assert (model, lang) == ("whisper-base", "auto") and "English-only" in note
    monkeypatch.setattr(lookup, "installed", lambda name, models_dir=None: False)
    model, lang, note = choose_asr_model("whisper-tiny.en", "auto")
    assert (model, lang) == ("whisper-tiny.en", "en")
    assert "mmaffect[weights-base]" in note and "as if it were English" in note


def test_language_auto_transcribes_german(tmp_path, shared_data, models_dir):
    """EmoDB's sentence a01 ("Der Lappen liegt auf dem Eisschrank"), read by actor 03."""
    from mmaffect.store.lookup import installed

    utterance = shared_data / "audio/emodb/flac/03a01Fa.flac"
    res = subprocess.run([*MM, "extract", str(utterance), "--cache", str(tmp_path / "c"),
                          "--modalities", "word", "--language", "auto", "--models-dir",
                          str(models_dir), "--no-progress"], check=True, capture_output=True,
                         text=True)  # fmt: skip
    (path,) = (tmp_path / "c" / utterance.stem).glob("transcript-*.json")
    transcript = json.loads(path.read_text())
    if installed("whisper-base", models_dir):
        assert transcript["source"] == "asr:whisper-base" and transcript["language"] == "de"
        words = {w["text"].strip(".,").lower() for w in transcript["words"]}
        assert {"der", "lappen", "liegt"} <= words, transcript["text"]
    else:
        assert transcript["source"] == "asr:whisper-tiny.en" and transcript["language"] == "en"
        assert "as if it were English" in " ".join(res.stderr.split())
