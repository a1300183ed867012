"""`mmaffect extract` end to end: real models over real and sample media, cache behaviour."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_video, nonempty
from typer.testing import CliRunner

import mmaffect
from mmaffect.cli import app
from mmaffect.media import probe
from mmaffect.media.frame_folder import probe_frame_folder

SAMPLES = REPO / "sample_media"


def entries(cache: Path, video_id: str) -> dict[str, dict]:
    """extractor name → meta of every entry of a video."""
    out = {}
    for meta in (cache / video_id).glob("*/meta.json"):
        m = json.loads(meta.read_text())
        out[m["extractor"]] = {**m, "dir": meta.parent}
    return out


def load(entry: dict, name: str) -> np.ndarray:
    return np.load(entry["dir"] / f"{name}.npy")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, shared_data, models_dir):
    """All four modalities over the sample media, one RAVDESS clip and one GRID clip."""
    cache = tmp_path_factory.mktemp("cache")
    ravdess = shared_data / "video/ravdess_av_actor05/01-01-03-01-01-02-05.mp4"
    grid = shared_data / "video/grid/bbaf2n.mpg"
    report = mmaffect.extract(
        [SAMPLES, ravdess, grid], cache=cache, models_dir=models_dir, progress=False
    )
    return cache, report


def expected_frames(video_id: str, shared_data: Path) -> int:
    if video_id == "0-25-480x480":
        return probe_frame_folder(SAMPLES / "frames" / video_id).video.frames
    if video_id == "speech_only":
        return round(probe(SAMPLES / "speech_only.wav").duration * 30)
    found = [p for p in SAMPLES.glob(f"{video_id}.*")] + list(
        shared_data.glob(f"video/*/{video_id}.*")
    )
    return probe(found[0]).video.frames


def test_every_entry_has_one_row_per_frame(extracted, shared_data):
    cache, report = extracted
    assert report.exit_code == 0 and len(report.batch.ok) == 7
    for video_id in report.videos:
        n = expected_frames(video_id, shared_data)
        found = entries(cache, video_id)
        wanted = (
            {"speech", "word"}
            if video_id == "speech_only"
            else {"faces", "frame", "clip", "speech", "word"}
        )
        assert set(found) == wanted, video_id
        for name, meta in found.items():
            assert meta["timing"]["n_frames"] == n, (video_id, name)
            for array, info in meta["arrays"].items():
                assert info["shape"][0] == n, (video_id, name, array)
                assert np.all(np.isfinite(load(meta, array).astype(np.float64))), (video_id, array)


def test_faces_and_vision_features(extracted):
    cache, _ = extracted
    talking = entries(cache, "astronaut_talking")
    assert load(talking["faces"], "found").mean() >= 0.95
    assert load(talking["frame"], "values").shape[1] == 1280
    # the default frame branch is the shipped face model: its expression outputs are kept
    assert talking["frame"]["config"]["model"] == "fer2013_face_expression"
    found = load(talking["frame"], "valid")
    np.testing.assert_allclose(load(talking["frame"], "out_expr")[found].sum(1), 1.0, atol=1e-3)
    assert talking["faces"]["config"]["detect_every"] == 4  # detection on key frames
    clip = talking["clip"]
    assert len(clip["columns"]) == 128 + 7 + 52 + 3 and clip["columns"][-3:] == [
        "yaw",
        "pitch",
        "roll",
    ]
    assert load(clip, "landmarker_found").mean() >= 0.9
    probs = load(clip, "values")[:, 128:135]
    np.testing.assert_allclose(probs[load(clip, "valid")].sum(1), 1.0, atol=1e-4)

    no_face = entries(cache, "no_face")
    assert not load(no_face["faces"], "found").any()
    assert not load(no_face["frame"], "values").any()  # zeros where there is no face

    # Organiser crops: used as they are; missing files 00020-00024 are frames without a face.
    crops = entries(cache, "0-25-480x480")
    assert crops["faces"]["config"]["source"] == "organiser_crops"
    found = load(crops["faces"], "found")
    assert found.sum() == 45 and not found[19:24].any()
    assert load(crops["frame"], "valid")[:19].all()


def test_speech_and_words(extracted):
    cache, report = extracted
    talking = entries(cache, "astronaut_talking")
    words = talking["word"]["words"]
    spoken_words = [w.lower().strip(".,!") for w in words]
    assert spoken_words[0] == "hello" and "happy" in spoken_words  # "Hello, I am very happy…"
    transcript = json.loads(Path(talking["word"]["transcript"]).read_text())
    # Speech runs from 0.5 s to 3.3 s of the 6 s clip (Whisper's word times are approximate).
    assert 0.0 <= transcript["words"][0]["start"] < 1.0
    assert 2.5 < transcript["words"][-1]["end"] < 4.0
    values = load(talking["word"], "values")
    assert values.shape[1] == 385
    spoken = values[:, -1] == 0
    assert 0.2 < spoken.mean() < 0.8  # speech from ~0.5 s to ~3.3 s of 6 s
    assert (load(talking["word"], "word_index")[spoken] >= 0).all()

    silent = entries(cache, "astronaut_silent_noaudio")
    assert silent["speech"]["columns"][-1] == "no_audio"
    speech = load(silent["speech"], "values")
    assert (speech[:, -1] == 1).all() and not speech[:, :-2].any()
    assert (load(silent["word"], "values")[:, -1] == 1).all()
    assert report.videos["astronaut_silent_noaudio"].notes

    # GRID: "bin blue at f two now" (tiny.en hears "Bimbloo F2 now": word-level accuracy is
    # the ASR tests' business; here the words must reach the cache).
    grid_words = [w.lower().strip(".,") for w in entries(cache, "bbaf2n")["word"]["words"]]
    assert len(grid_words) >= 3 and grid_words[-1] == "now"


def test_audio_entries_equal_the_whole_track_computed_in_memory(extracted, models_dir):
    """The audio side reads the soundtrack in pieces and writes its entries block by block
    into the cache; the rows equal the whole track's features and word rows made in memory."""
    from mmaffect.features.speech import speech_features
    from mmaffect.features.timing import FrameTiming
    from mmaffect.features.transcripts import Transcript
    from mmaffect.features.words import DEFAULT_ENCODER, WordEncoder, word_frames
    from mmaffect.media import load_audio

    cache, _ = extracted
    talking = entries(cache, "astronaut_talking")
    timing = FrameTiming(**talking["speech"]["timing"])
    whole = speech_features(load_audio(SAMPLES / "astronaut_talking.mp4"), timing)
    np.testing.assert_allclose(load(talking["speech"], "values"), whole.values, atol=1e-5)
    assert talking["speech"]["columns"] == list(whole.column_names)

    transcript = Transcript.from_json(talking["word"]["transcript"])
    encoder = WordEncoder(DEFAULT_ENCODER, "cpu", models_dir=models_dir)
    grid = word_frames(transcript, encoder.encode(transcript.texts), timing)
    np.testing.assert_array_equal(load(talking["word"], "word_index"), grid.word_index)
    np.testing.assert_allclose(load(talking["word"], "values"), grid.values, atol=1e-5)
    assert talking["word"]["columns"] == grid.column_names()


def test_without_overlap_the_features_are_the_same(extracted, shared_data, models_dir, tmp_path):
    """``overlap=False`` (benchmarks/speed.py) runs the steps one after the other, same output."""
    cache, _ = extracted
    grid = shared_data / "video/grid/bbaf2n.mpg"
    report = mmaffect.extract(
        [grid], cache=tmp_path / "serial", models_dir=models_dir, progress=False, overlap=False
    )
    assert report.exit_code == 0
    serial, overlapped = entries(tmp_path / "serial", grid.stem), entries(cache, grid.stem)
    assert sorted(serial) == sorted(overlapped) == ["clip", "faces", "frame", "speech", "word"]
    for name, entry in serial.items():
        for array in sorted(entry["dir"].glob("*.npy")):
            np.testing.assert_allclose(
                load(entry, array.stem), load(overlapped[name], array.stem), atol=1e-5,
                err_msg=f"{name}/{array.name}",
            )  # fmt: skip


def test_second_run_reuses_everything_and_stale_entries_are_redone(extracted, models_dir, tmp_path):
    cache, _ = extracted
    start = time.perf_counter()
    again = mmaffect.extract([SAMPLES], cache=cache, models_dir=models_dir, progress=False)
    assert time.perf_counter() - start < 15  # nothing is computed, no model is loaded
    assert again.exit_code == 0 and len(again.batch.skipped) == 5
    assert all(not v.computed for v in again.videos.values())

    # A changed input is stale: only it is recomputed.
    copy = tmp_path / "in"
    copy.mkdir()
    shutil.copy(SAMPLES / "no_face.mp4", copy)
    first = mmaffect.extract(
        [copy], cache=cache, models_dir=models_dir, progress=False, modalities="faces,speech"
    )
    assert first.videos["no_face"].computed == ["faces", "speech"]
    os.utime(copy / "no_face.mp4", (1, 1))
    redo = mmaffect.extract(
        [copy], cache=cache, models_dir=models_dir, progress=False, modalities="faces,speech"
    )
    assert sorted(redo.videos["no_face"].computed) == ["faces", "speech"]
    forced = mmaffect.extract(
        [copy], cache=cache, models_dir=models_dir, progress=False, modalities="speech", force=True
    )
    assert forced.videos["no_face"].computed == ["speech"]


def test_street_clip_tracks_one_subject_among_several(shared_data, models_dir, tmp_path):
    street = shared_data / "video/street_multiface/video.mp4"
    report = mmaffect.extract(
        [street], cache=tmp_path, models_dir=models_dir, progress=False, modalities="faces"
    )
    assert report.exit_code == 0
    faces = entries(tmp_path, "video")["faces"]
    n_faces, found, boxes = load(faces, "n_faces"), load(faces, "found"), load(faces, "box")
    assert n_faces.max() >= 3  # several faces in the scene
    assert found.mean() > 0.5
    # One subject: consecutive tracked boxes overlap (no jump to another person).
    rows = np.flatnonzero(found)
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        if b == a + 1:
            x1 = np.maximum(boxes[a, :2], boxes[b, :2])
            x2 = np.minimum(boxes[a, 2:], boxes[b, 2:])
            inter = np.prod(np.clip(x2 - x1, 0, None))
            union = np.prod(boxes[a, 2:] - boxes[a, :2]) + np.prod(boxes[b, 2:] - boxes[b, :2])
            assert inter / (union - inter) > 0.3


@pytest.mark.slow
def test_face_found_in_95_percent_of_every_ravdess_clip(shared_data, models_dir, tmp_path):
    clips = nonempty(sorted((shared_data / "video/ravdess_av_actor05").glob("*.mp4")), "RAVDESS")
    report = mmaffect.extract(
        clips, cache=tmp_path, models_dir=models_dir, progress=False, modalities="faces"
    )
    assert report.exit_code == 0
    for clip in clips:
        found = load(entries(tmp_path, clip.stem)["faces"], "found")
        assert found.mean() >= 0.95, clip.name


def test_bad_files_fail_alone(tmp_path, models_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.mp4").write_bytes(b"\x00" * 1000)
    make_video(inputs / "ok.mp4", seconds=1)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "extract",
            str(inputs),
            "--cache",
            str(tmp_path / "c"),
            "--modalities",
            "speech",
            "--models-dir",
            str(models_dir),
            "--no-progress",
        ],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 1
    assert "✗ broken: broken.mp4 is not a readable media file" in result.stderr
    assert "extract: 2 input(s): 1 ok, 0 skipped, 1 failed" in result.stderr
    assert entries(tmp_path / "c", "ok")["speech"]["timing"]["n_frames"] == 25


def test_unknown_modality_is_refused(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(SAMPLES / "no_face.mp4"),
            "--cache",
            str(tmp_path),
            "--modalities",
            "frame,smell",
        ],
    )
    assert result.exit_code == 2
    assert "unknown modalities smell (choose among faces,frame,clip,speech,word)" in result.stderr


def test_killed_extract_resumes(tmp_path, models_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        make_video(inputs / f"clip{i}.mp4", seconds=3, size="320x240")
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "mmaffect",
        "extract",
        str(inputs),
        "--cache",
        str(cache),
        "--modalities",
        "faces,speech",
        "--models-dir",
        str(models_dir),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not list(cache.glob("clip0/faces-*/meta.json")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/meta.json")}
    assert done and len(done) < 8

    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for meta, mtime in done.items():  # finished entries were kept, not recomputed
        assert meta.stat().st_mtime_ns == mtime
    assert len(list(cache.glob("*/*/meta.json"))) == 8
    assert list(cache.rglob("*.tmp")) == []
