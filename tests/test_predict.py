"""`mmaffect predict` on real media: one line per frame, fill rule, baseline, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmaffect.annotations import EXPR_8, VideoLabels, read_video_labels, write_video_labels
from mmaffect.cli.app import app
from mmaffect.features.cache import FeatureCache
from mmaffect.media import probe
from mmaffect.media.probe import opencv_frame_count
from mmaffect.predict import load_prediction
from mmaffect.predict.run import PredictOptions, predict
from mmaffect.submission import validate_submission

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_media"
RAVDESS = ["01-01-01-01-02-01-05.mp4", "01-01-03-01-01-02-05.mp4"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, shared_data, models_dir):
    from mmaffect.extraction import ExtractOptions

    out = tmp_path_factory.mktemp("predict")
    clips = [shared_data / "video/ravdess_av_actor05" / c for c in RAVDESS]
    opts = PredictOptions(extract=ExtractOptions(models_dir=models_dir))
    report = predict([SAMPLES, *clips], out, opts, progress=False)
    return out, report, clips


def test_baseline_writes_one_line_per_frame(baseline_run, shared_data):
    out, report, clips = baseline_run
    # the audio-only wav is skipped (the baseline needs faces), nothing failed
    assert report.exit_code == 0, report.batch.failed
    assert [r.name for r in report.batch.skipped] == ["speech_only"]
    assert not report.batch.skipped[0].up_to_date  # named in the summary with its reason
    videos = {c.stem: probe(c).video.frames for c in clips}
    videos |= {"astronaut_talking": 150, "astronaut_silent_noaudio": 75, "no_face": 75}
    videos["0-25-480x480"] = 50  # frame folder: 50 frame numbers, 45 crops
    run = json.loads((out / "run.json").read_text())
    assert run["baseline"] is True and run["frame_count_rule"] == "decoded"
    assert run["skipped"] == {
        "speech_only": "audio only: the baseline needs faces (a speech/word checkpoint does not)"
    }
    assert run["warnings"] == []
    for vid, n in videos.items():
        for track in ("EXPR", "AU", "VA"):
            lines = (out / "abaw3" / track / f"{vid}.txt").read_text().splitlines()
            assert len(lines) == n + 1, (vid, track)  # header + one per frame
        assert run["videos"][vid]["frames"] == n
        assert run["videos"][vid]["frame_count"] == f"decoded frames ({n})"
        table = (out / "table" / f"{vid}.csv").read_text().splitlines()
        assert len(table) == n + 1 and table[1].endswith(",baseline")
    for track in ("EXPR", "AU", "VA"):
        assert validate_submission(out / "abaw3" / track, track, "abaw3") == []


def test_baseline_content(baseline_run):
    out, _, clips = baseline_run
    talking = load_prediction(out / "predictions" / "astronaut_talking.npz")
    assert talking.is_baseline and talking.face_found.all() and not talking.filled.any()
    happy = EXPR_8.names.index("Happiness")
    assert np.mean(talking.expr_labels == happy) > 0.8  # the astronaut smiles throughout
    assert talking.va[:, 0].mean() > 0.5
    assert {"happy", "today"} <= {w.strip(".,").lower() for w in talking.words}
    # no face at all: every frame filled with the neutral prior
    none = load_prediction(out / "predictions" / "no_face.npz")
    assert none.filled.all() and (none.expr_labels == 0).all() and not none.va.any()
    # the frame folder's 5 missing crops are interpolated, the others predicted
    folder = load_prediction(out / "predictions" / "0-25-480x480.npz")
    assert folder.filled.tolist() == [19 <= i <= 23 for i in range(50)]
    expr = read_video_labels(out / "abaw3" / "EXPR" / "0-25-480x480.txt")
    assert expr.mask.all() and len(expr.values) == 50
    # RAVDESS happy clip: majority Happiness; neutral clip: majority Neutral
    for clip, want in zip(clips, ("Neutral", "Happiness"), strict=True):
        pred = load_prediction(out / "predictions" / f"{clip.stem}.npz")
        votes = np.bincount(pred.expr_labels[pred.face_found], minlength=8)
        assert EXPR_8.names[int(votes.argmax())] == want, clip.name


def test_resume_and_opencv_rule(baseline_run, shared_data, models_dir, tmp_path):
    out, _, clips = baseline_run
    clip = clips[0]
    args = ["predict", str(clip), "--out", str(out), "--no-words", "--no-progress",
            "--models-dir", str(models_dir)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "1 skipped" in res.output  # same settings: predictions up to date
    res = CliRunner().invoke(app, [*args, "--frame-count", "opencv+1", "--edition", "abaw2"])
    assert res.exit_code == 0, res.output
    n = opencv_frame_count(clip) + 1
    lines = (out / "abaw2" / "EXPR" / f"{clip.stem}.txt").read_text().splitlines()
    assert (
        len(lines) == n + 1 and lines[0] == "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
    )
    pred = load_prediction(out / "predictions" / f"{clip.stem}.npz")
    assert pred.meta["frame_count"].startswith(f"OpenCV count + 1 ({n};")
    assert pred.filled[-1] and not pred.filled[: n - 1].any()


def _train_tiny(
    tmp_path: Path, models_dir: Path, modalities=("clip", "speech"), **extract_options
) -> Path:
    """A tiny EXPR checkpoint (clip+speech by default) trained on the sample media's real
    features."""
    import mmaffect
    from mmaffect.training.train import TrainConfig

    cache = tmp_path / "cache"
    vids = {"Train_Set": ["astronaut_talking"], "Validation_Set": ["no_face"]}
    report = mmaffect.extract(
        [SAMPLES / "astronaut_talking.mp4", SAMPLES / "no_face.mp4"], cache=cache,
        models_dir=models_dir, modalities=",".join(modalities), progress=False, **extract_options,
    )  # fmt: skip
    assert report.exit_code == 0
    rng = np.random.default_rng(0)
    for split, names in vids.items():
        for vid in names:
            n = 150 if vid == "astronaut_talking" else 75
            lab = VideoLabels.from_values(vid, EXPR_8, rng.integers(0, 8, size=n))
            write_video_labels(tmp_path / "EXPR" / split / f"{vid}.txt", lab)
    cfg = TrainConfig(
        task="expr", edition="abaw3", annotations=str(tmp_path / "EXPR"), cache=str(cache),
        model="fusion", modalities=list(modalities), window=8, batch_size=32, epochs=1,
        model_hparams={"d_model": 8, "gru_hidden": 4, "gru_layers": 1, "num_heads": 2,
                       "head_hidden": 8, "dropout": 0.0},
        out=str(tmp_path / "run"), scheduler={"name": "none"},
    )  # fmt: skip
    cfg.to_yaml(tmp_path / "tiny.yaml")
    # A separate process, as a user runs it. (In one process, an extraction after a Lightning
    # fit was killed by SIGPROF on this machine; see the closing note of issue 5.)
    cmd = [sys.executable, "-m", "mmaffect", "train", "--config", str(tmp_path / "tiny.yaml")]
    subprocess.run(cmd, check=True, capture_output=True)
    ckpt = tmp_path / "run" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def test_checkpoint_needs_audio_unless_branches_dropped(tmp_path, models_dir):
    ckpt = _train_tiny(tmp_path, models_dir)
    _window_batching_does_not_change_outputs(ckpt, FeatureCache(tmp_path / "cache"))
    silent = SAMPLES / "astronaut_silent_noaudio.mp4"
    base = ["predict", str(silent), "--checkpoint", str(ckpt), "--cache", str(tmp_path / "c2"),
            "--no-words", "--no-progress", "--models-dir", str(models_dir)]  # fmt: skip
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p1")])
    assert res.exit_code == 1
    assert "has no audio track but the checkpoint uses speech" in " ".join(res.output.split())
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p2"), "--modalities", "clip"])
    assert res.exit_code == 0, res.output
    dropped = (
        "the checkpoint was trained with clip,speech; --modalities leaves out speech, whose "
        "inputs are replaced by zeros"
    )
    assert f"warning: {dropped}" in " ".join(res.output.split())
    run = json.loads((tmp_path / "p2" / "run.json").read_text())
    assert len(run["warnings"]) == 1 and run["warnings"][0].startswith(dropped)
    lines = (tmp_path / "p2" / "abaw3" / "EXPR" / f"{silent.stem}.txt").read_text().splitlines()
    assert len(lines) == 75 + 1 and not (tmp_path / "p2" / "abaw3" / "VA").exists()
    pred = load_prediction(tmp_path / "p2" / "predictions" / f"{silent.stem}.npz")
    assert pred.predictor == str(ckpt) and pred.meta["dropped_modalities"] == ["speech"]
    np.testing.assert_allclose(pred.expr_probs.sum(1), 1.0, atol=1e-5)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p3"), "--modalities", "word"])
    assert res.exit_code == 2 and "it cannot use word" in " ".join(res.output.split())
    # An audio-only input has no faces entry: the speech branch alone predicts every frame.
    speech = SAMPLES / "speech_only.wav"
    res = CliRunner().invoke(
        app,
        [
            *base[:1],
            str(speech),
            *base[2:],
            "--out",
            str(tmp_path / "p4"),
            "--modalities",
            "speech",
        ],
    )
    assert res.exit_code == 0, res.output
    pred = load_prediction(tmp_path / "p4" / "predictions" / "speech_only.npz")
    assert not pred.face_found.any() and not pred.filled.any()  # the model's own outputs
    lines = (tmp_path / "p4" / "abaw3" / "EXPR" / "speech_only.txt").read_text().splitlines()
    assert len(lines) == len(pred) + 1 and len(pred) == 90  # 3.0 s at 30 frames/s
    assert pred.expr_probs.std(axis=0).max() > 0  # varies over frames: not a filled prior


def _window_batching_does_not_change_outputs(ckpt: Path, cache: FeatureCache) -> None:
    from mmaffect.predict.compute import CheckpointPredictor, window_batch

    for modalities in (None, ["clip"]):  # all branches, then speech dropped (zeros)
        default = CheckpointPredictor(ckpt, modalities)
        assert default.batch_size == window_batch("cpu") == 64
        whole = default.outputs(cache, "astronaut_talking")  # 150 frames: 64 + 64 + 22
        assert whole["expr"].shape == (150, 8)
        assert not default.cut_on_device  # windows cut on the device: CUDA only by default
        for batch_size, on_device in ((1, False), (7, False), (64, True), (7, True)):
            part = CheckpointPredictor(
                ckpt, modalities, batch_size=batch_size, cut_on_device=on_device
            )
            np.testing.assert_allclose(
                part.outputs(cache, "astronaut_talking")["expr"], whole["expr"], atol=1e-5
            )


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fill", "bogus"], "unknown --fill 'bogus' (choose auto, interpolate, hold, model)"),
        (["--device", "tpu"], "unknown device 'tpu' (choose auto, cpu, cuda or cuda:N)"),
        (["--frame-count", "opencv"], "unknown --frame-count 'opencv' (choose decoded, opencv+1)"),
    ],
)
def test_bad_options_are_usage_errors_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["predict", str(SAMPLES / "no_face.mp4"), "--out", str(out), *args]
    )
    assert res.exit_code == 2
    assert f"error: {message}" in _flat(res.output)
    assert not out.exists()  # nothing written, not even the folder


def test_unwritable_out_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    out = blocker / "out"
    res = CliRunner().invoke(app, ["predict", str(SAMPLES / "no_face.mp4"), "--out", str(out)])
    assert res.exit_code == 2
    assert _flat(res.output) == (
        f"error: cannot write to {out}: Not a directory (choose a writable folder with --out)"
    )


def test_skipped_inputs_and_missing_challenge_files_are_said(tmp_path, models_dir):
    # MTL without --image-list writes no challenge file; an audio-only input is skipped: both
    # are said on the console and in run.json.
    out = tmp_path / "out"
    args = ["predict", str(SAMPLES / "speech_only.wav"), "--out", str(out), "--task", "mtl"]
    res = CliRunner().invoke(app, [*args, "--no-words", "--models-dir", str(models_dir)])
    assert res.exit_code == 0, res.output
    text = _flat(res.output)
    note = (
        "MTL: ABAW3 submissions are built from the organisers' image list (--image-list); "
        "none given, so no challenge file (the table has every prediction)"
    )
    assert f"warning: {note}" in text
    assert (
        "skipped: speech_only: audio only: the baseline needs faces (a speech/word checkpoint "
        "does not)" in text
    )
    assert "1 input(s): 0 ok, 1 skipped, 0 failed" in text
    assert json.loads((out / "run.json").read_text())["warnings"] == [note]


def test_template_rows_past_the_video_and_unused_templates_are_said(tmp_path, models_dir):
    video = SAMPLES / "no_face.mp4"  # 75 frames
    expr = tmp_path / "expr_template.txt"
    rows = [f"no_face/{i:05d}.jpg" for i in range(1, 81)]  # 5 rows past the decoded frames
    expr.write_text("image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
                    + "\n".join(rows) + "\n")  # fmt: skip
    au = tmp_path / "au_template.txt"
    au.write_text("image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "predict", str(video), "--out", str(out), "--task", "expr", "--edition", "abaw6",
        "--template", str(expr), "--template", str(au), "--no-words", "--no-progress",
        "--models-dir", str(models_dir),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    unused = (
        f"--template {au} is for the AU track, which this run does not predict (tracks: EXPR); "
        "it is not used"
    )
    held = (
        "abaw6/EXPR.txt: 5 row(s) of 1 video(s) lie past the decoded frames and hold each "
        "video's last prediction: no_face (5)"
    )
    text = _flat(res.output)
    assert f"warning: {unused}" in text and f"warning: {held}" in text
    assert json.loads((out / "run.json").read_text())["warnings"] == [unused, held]
    assert len((out / "abaw6" / "EXPR.txt").read_text().splitlines()) == 81


def test_checkpoint_brings_its_extractor_settings_to_predict(tmp_path, models_dir):
    # Trained on --frame-crop 112 features: predict must extract new videos the same way
    # (it used the defaults, and every video failed with "no complete 'frame' features").
    from mmaffect.features.vision import FrameConfig

    frame = FrameConfig.choose("efficientnet_lite0", 112)
    ckpt = _train_tiny(tmp_path, models_dir, ("frame",), frame=frame)
    video = SAMPLES / "astronaut_silent_noaudio.mp4"
    out = tmp_path / "p"
    res = CliRunner().invoke(app, [
        "predict", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-words",
        "--no-progress", "--models-dir", str(models_dir),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = (out / "abaw3" / "EXPR" / f"{video.stem}.txt").read_text().splitlines()
    assert len(lines) == 75 + 1
    (frame_meta,) = (out / "cache" / video.stem).glob("frame-*/meta.json")
    config = json.loads(frame_meta.read_text())["config"]
    assert config["crop_size"] == 112 and config["model"] is None
