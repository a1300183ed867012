"""The command line: entry points, light imports, probe/demux output, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, make_video
from typer.testing import CliRunner

from mmaffect.cli import app

runner = CliRunner()
HEAVY = ("torch", "transformers", "faster_whisper", "mediapipe", "ctranslate2", "librosa", "cv2")


def test_import_and_help_stay_light():
    code = (
        "import sys, mmaffect, mmaffect.cli, mmaffect.media, mmaffect.store\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(mmaffect.cli.app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "mmaffect", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith("mmaffect 0.")


def test_probe_json_fields(tiny_video):
    result = runner.invoke(app, ["probe", "--json", str(tiny_video)])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout)
    assert info["video"]["fps"] == {"num": 25, "den": 1, "value": 25.0}
    assert info["video"]["frames"] == 25 and info["has_audio"] is True
    assert info["audio"][0]["codec"] == "aac"


def test_probe_table(tiny_video):
    result = runner.invoke(app, ["probe", str(tiny_video)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    row = next(ln for ln in result.stdout.splitlines() if "tiny.mp4" in ln)
    assert "160x120" in row and "25.000" in row and "25 packets" in row


def test_probe_sample_media():
    result = runner.invoke(app, ["probe", "--json", str(REPO / "sample_media")])
    assert result.exit_code == 0, result.output
    by_name = {Path(i["path"]).name: i for i in json.loads(result.stdout)}
    assert by_name["astronaut_talking.mp4"]["has_audio"] is True
    assert by_name["astronaut_silent_noaudio.mp4"]["has_audio"] is False
    assert by_name["0-25-480x480"]["kind"] == "frames"
    assert by_name["0-25-480x480"]["video"]["frames"] == 50
    assert by_name["speech_only.wav"]["kind"] == "audio"


def test_demux_resumes_and_force_redoes(tmp_path, tiny_video):
    out = tmp_path / "out"
    first = runner.invoke(
        app, ["demux", str(tiny_video), "--out", str(out), "--every", "5", "--resize", "64"]
    )
    assert first.exit_code == 0, first.output
    frames = sorted(p.name for p in (out / "tiny" / "frames").iterdir())
    assert frames == ["00001.jpg", "00006.jpg", "00011.jpg", "00016.jpg", "00021.jpg"]
    manifest = json.loads((out / "tiny" / "manifest.json").read_text())
    assert manifest["audio"]["sample_rate"] == 16000 and manifest["frames"]["video_frames"] == 25
    second = runner.invoke(app, ["demux", str(tiny_video), "--out", str(out)])
    assert second.exit_code == 0 and "1 skipped" in second.stderr
    third = runner.invoke(app, ["demux", str(tiny_video), "--out", str(out), "--force"])
    assert third.exit_code == 0 and "1 ok" in third.stderr
    assert len(list((out / "tiny" / "frames").iterdir())) == 25


def test_demux_without_audio_track(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", audio=False)
    result = runner.invoke(app, ["demux", str(silent), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0
    manifest = json.loads((tmp_path / "out" / "silent" / "manifest.json").read_text())
    assert manifest["audio"] is None and manifest["no_audio_reason"] == "no audio stream"
    assert not (tmp_path / "out" / "silent" / "audio.wav").exists()


def test_killed_demux_resumes_without_redoing_finished_inputs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(4):
        make_video(inputs / f"clip{i}.mp4", seconds=4, size="640x360")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmaffect", "demux", str(inputs), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while not (out / "clip0" / "manifest.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/manifest.json")}
    assert "clip0" in done and len(done) < 4

    result = runner.invoke(app, ["demux", str(inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{len(done)} skipped" in result.stderr
    for name, mtime in done.items():  # finished inputs were not redone
        assert (out / name / "manifest.json").stat().st_mtime_ns == mtime
    for i in range(4):
        assert len(list((out / f"clip{i}" / "frames").glob("*.jpg"))) == 100
    assert [p for p in out.rglob("*.tmp")] == []


def test_probe_without_a_terminal_prints_whole_lines(tmp_path):
    """CliRunner's output is not a terminal (like a log or a pipe): one tab-separated line per
    input under a header, the long name whole, whatever the width."""
    name = "a_rather_long_file_name_that_a_squeezed_table_would_break_up.mp4"
    video = make_video(tmp_path / name)
    result = runner.invoke(app, ["probe", str(video), str(REPO / "sample_media")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == [
        "input", "kind", "container", "codec", "size", "fps", "frames", "seconds", "audio",
    ]  # fmt: skip
    rows = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
    assert len(lines) == 7 and all(len(r) == 9 for r in rows.values())
    assert rows[name][1:6] == ["video", "mov", "h264", "160x120", "25.000"]
    assert rows[name][6].startswith("25 ") and rows[name][7] == "1.000"
    assert rows["speech_only.wav"][1] == "audio" and rows["speech_only.wav"][4] == "-"
