"""The benchmark scripts' code paths run on a tiny input (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, make_video


def test_decode_benchmark_runs(tmp_path):
    video = make_video(tmp_path / "v.mp4", seconds=1)
    out = tmp_path / "decode.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "decode.py"),
            str(video),
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    figures = json.loads(out.read_text())
    assert figures["frames"] == 25
    for key in ("decode_null_fps", "rgb_full_fps", "rgb_224_fps", "audio_x_realtime"):
        assert figures[key] > 0


def run_benchmark(name: str, *args, env: dict | None = None) -> dict:
    """Run ``benchmarks/NAME.py ARGS --json F`` and return the figures it wrote."""
    import os
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        proc = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *map(str, args)]
            + ["--json", str(out)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads(out.read_text())


@pytest.fixture
def shared_env(shared_data, models_dir):
    return {"MMAFFECT_TEST_DATA": str(shared_data), "MMAFFECT_MODELS": str(models_dir)}


@pytest.mark.slow
def test_speed_benchmark_runs(tmp_path, shared_env):
    video = make_video(tmp_path / "v.mp4", seconds=1)
    figures = run_benchmark("speed", video, env=shared_env)
    (f,) = figures["videos"]
    assert f["frames"] == 25
    stages = f["stages"]
    for stage in ("face detection", "ASR (Whisper)", "speech features", "predict: model"):
        assert stage in stages, sorted(stages)
    assert stages["predict: model"]["items"] == 25  # every frame predicted
    assert stages["fusion network (4 branches)"]["items"] == 25
    assert f["end_to_end_seconds"] == pytest.approx(
        f["extract_seconds"] + f["predict_seconds"], abs=0.11
    )
    assert 0 < f["end_to_end_vs_decode"] < 1  # nothing beats decoding alone
    assert f["extract_serial_seconds"] > 0  # the overlap check ran on the first video
    assert f["peak_rss_mb"] > 100


def test_gpu_benchmark_says_why_it_cannot_run_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: test_gpu_benchmark_runs measures it")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert "no CUDA device here" in proc.stderr and "benchmarks/speed.py" in proc.stderr


@pytest.mark.cuda
@pytest.mark.slow
def test_gpu_benchmark_runs(shared_env, shared_data):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    video = sorted((shared_data / "video" / "ravdess_av_actor05").glob("*.mp4"))[0]
    figures = run_benchmark("gpu", video, env=shared_env)
    (run,) = figures["videos"]
    assert run["frames"] > 90 and run["end_to_end_fps"] > 0
    assert run["samples"] > 0 and run["gpu_mem_peak_mib"] > 0  # nvidia-smi saw the run


@pytest.mark.slow
def test_growth_benchmark_runs(shared_env):
    figures = run_benchmark(
        "growth", "--minutes", "0.05", "--detect-size", "320", "--detect-every", "8",
        env=shared_env,
    )  # fmt: skip
    (run,) = figures["runs"]
    assert run["frames"] == 97  # one RAVDESS clip: 3.2 s at 29.97 fps
    total = run["extract_s"] + run["predict_s"] + run["fusion_s"]
    assert run["total_s"] == pytest.approx(total, abs=0.2)
    minutes = run["frames"] / 29.97 / 60
    assert run["s_per_video_minute"] == pytest.approx(run["total_s"] / minutes, rel=0.02)
    assert run["peak_rss_mb"] > 100


@pytest.mark.slow
def test_speech_emotion_benchmark_runs(tmp_path, shared_env):
    pytest.importorskip("opensmile")
    figures = run_benchmark(
        "speech_emotion", "--limit", "3", "--folds", "03+08,10+09", "--epochs", "1",
        "--stride", "30", "--work", tmp_path, env=shared_env,
    )  # fmt: skip
    assert figures["utterances"] == 30  # 3 per speaker, 10 speakers
    folds = figures["per_fold"]
    assert [f["held_out"] for f in folds] == ["03+08", "09+10"]
    # the epoch is chosen on the next fold's speakers, never on the test speakers
    assert [f["validation"] for f in folds] == ["09+10", "03+08"]
    assert all(f["test_utterances"] == 6 for f in folds)
    assert figures["speech_features"] == "prosody,whisper"
    cost = figures["whisper_encoder"]
    assert cost["audio_minutes"] > 0.5  # 30 utterances one after another
    assert cost["whisper_seconds_per_audio_minute"] > 0 < cost["prosody_seconds_per_audio_minute"]
    runs = sorted((tmp_path / "fold0" / "run").glob("best-*.ckpt"))
    assert len(runs) == 1
    labelled = {p.stem[:2] for p in (tmp_path / "fold0" / "annotations").rglob("*.txt")}
    assert not labelled & {"03", "08"}  # test speakers have no label file
    for system in ("mmaffect", "reference"):
        uars = [f[system]["uar"] for f in folds]
        assert all(0 <= u <= 1 for u in uars)
        mean, _ = figures["summary_mean_std"][f"{system}_uar"]
        assert mean == pytest.approx(sum(uars) / len(uars), abs=1e-3)


@pytest.mark.slow
def test_va_speech_benchmark_runs(tmp_path, shared_env):
    pytest.importorskip("opensmile")
    figures = run_benchmark(
        "va_speech",
        "--limit",
        "8",
        "--folds",
        "2",
        "--epochs",
        "1",
        "--work",
        tmp_path,
        env=shared_env,
    )
    assert figures["utterances"] == 8
    assert sum(f["test_utterances"] for f in figures["per_fold"]) == 8
    for system in ("mmaffect", "reference"):
        for dim in ("ccc_valence", "ccc_arousal"):
            assert -1 <= figures["pooled_ccc"][system][dim] <= 1


@pytest.mark.slow
def test_expression_accuracy_benchmark_runs(shared_env):
    figures = run_benchmark(
        "expression_accuracy", "--fer-limit", "40", "--skip-ravdess", env=shared_env
    )
    fer = figures["fer2013"]
    assert fer["faces"] == 41  # every 89th of the 3,589 faces
    assert fer["accuracy"] > 0.3  # the real model, loaded and preprocessed right (0.58 on all)
    assert "ravdess" not in figures


def test_run_all_runs_the_named_benchmarks(tmp_path):
    script = str(REPO / "benchmarks" / "run_all.py")
    bad = subprocess.run([sys.executable, script, "--only", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown benchmark(s) ['nope']" in bad.stderr
    res = subprocess.run(
        [sys.executable, script, "--only", "decode", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "decode.json").read_text())["decode_null_fps"] > 0
    assert "decode" in res.stdout.split("=== run times ===")[1]


@pytest.mark.slow
def test_face_expression_benchmark_runs(tmp_path, shared_env):
    # fmt: off
    figures = run_benchmark(
        "face_expression", "--work", tmp_path, "--train-per-class", "20", "--test-per-class",
        "20", "--backbone", "resnet18", "--input-size", "48", "--epochs", "1",
        "--speed-batches", "2", env=shared_env,
    )
    # fmt: on
    run, test, rows = figures["run"], figures["privatetest"], figures["rows"]
    assert run["checkpoint"] == str(tmp_path / "run" / "best-000.ckpt")
    assert (run["epochs"], run["best_epoch"]) == (1, 0)
    assert 0 <= run["val_score"] <= 1
    assert run["training_time_source"] == "wall time of the mmaffect train process"
    assert run["training_seconds"] > run["file_time_seconds"] > 0  # the process outlasts its files
    # the first 20 faces of each of the 7 classes, 14 of them with a twin in Training
    assert (test["faces"], test["twins_in_training"], test["faces_without_twins"]) == (140, 14, 126)
    assert [(r["model"], r["flip"]) for r in rows] == [
        ("face_cnn resnet18 48px", False),
        ("face_cnn resnet18 48px", True),
        ("mini-Xception (FER2013 weights)", False),
        ("mini-Xception (FER2013 weights)", True),
    ]
    for r in rows:
        for key in ("accuracy", "macro_f1", "accuracy_without_twins", "macro_f1_without_twins"):
            assert 0 <= r[key] <= 1, (r["model"], key)
        assert r["faces_per_s"] > 0
    assert rows[2]["accuracy"] > 0.4  # mini-Xception's real weights (0.58 on all 3,589 faces)
    # the same run folder again, evaluated as a finished run: the same checkpoint, same scores
    again = run_benchmark(
        "face_expression", "--run", tmp_path / "run", "--work", tmp_path / "again",
        "--test-per-class", "20", "--speed-batches", "1", env=shared_env,
    )  # fmt: skip
    assert again["run"]["training_time_source"] == "file times: config.yaml to last.ckpt"
    assert again["run"]["training_seconds"] == run["file_time_seconds"]
    score = ("accuracy", "macro_f1", "accuracy_without_twins", "macro_f1_without_twins")
    assert [[r[k] for k in score] for r in again["rows"]] == [[r[k] for k in score] for r in rows]


def test_face_expression_benchmark_scores_the_shipped_model(tmp_path, shared_env):
    figures = run_benchmark(
        "face_expression", "--shipped", "--work", tmp_path, "--test-per-class", "20",
        "--speed-batches", "1", env=shared_env,
    )  # fmt: skip
    shipped = "fer2013_face_expression (shipped, efficientnet_lite0 96px)"
    assert figures["shipped"] == shipped
    assert "run" not in figures  # nothing trained
    assert figures["privatetest"]["faces"] == 140
    rows = figures["rows"]
    assert [(r["model"], r["flip"]) for r in rows] == [
        (shipped, False),
        (shipped, True),
        ("mini-Xception (FER2013 weights)", False),
        ("mini-Xception (FER2013 weights)", True),
    ]
    # the shipped fp16 weights read faces (0.619 with flip on all 3,589; chance is 1/7)
    assert rows[1]["accuracy"] > 0.45
    assert all(r["faces_per_s"] > 0 for r in rows)


def test_face_crop_benchmark_measures_the_corpus_framing(shared_env):
    figures = run_benchmark("face_crop", "--every", "150", env=shared_env)
    assert figures["images"] == 24  # every 150th of the 3,589 PublicTest faces
    assert figures["no_face"] <= 2
    # FER2013 frames faces about as the detector boxes them (0.98 on every 12th face)
    assert 0.8 < figures["ratio_median"] < 1.2
    assert figures["ratio_iqr"][0] <= figures["ratio_median"] <= figures["ratio_iqr"][1]
