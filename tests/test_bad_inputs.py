"""Broken inputs: each gets a one-line reason, and the rest of the batch still produces output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_video, run_ffmpeg
from typer.testing import CliRunner

from mmaffect.cli import app
from mmaffect.errors import MediaError
from mmaffect.media import iter_frames, probe

runner = CliRunner()


def make_bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.mp4"
    files["text"].write_text("this is a text file, not a video\n")
    # moov atom first, then half of the data: opens fine, decodes only part of the frames.
    whole = make_video(
        folder / "whole.tmpvid", seconds=2, extra=["-movflags", "+faststart", "-f", "mp4"]
    )
    data = whole.read_bytes()
    whole.unlink()
    files["truncated"] = folder / "truncated.mp4"
    files["truncated"].write_bytes(data[: len(data) // 2])
    raw = folder / "raw.avi"
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=10:duration=1",
        "-c:v",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        str(raw),
    )
    files["codec"] = folder / "unknown_codec.avi"
    files["codec"].write_bytes(raw.read_bytes().replace(b"I420", b"XQZW"))
    raw.unlink()
    return files


EXPECTED = {
    "empty": "empty.mp4 is an empty file (0 bytes) (copy or download it again)",
    "text": "notes.mp4 is not a readable media file (ffmpeg: Invalid data found when "
    "processing input)",
    "truncated": "truncated.mp4 is truncated or damaged: only ",
    "codec": "unknown_codec.avi uses a video codec this ffmpeg cannot decode (codec tag XQZW)",
}


@pytest.fixture
def batch(tmp_path):
    folder = tmp_path / "in"
    bad = make_bad_files(folder)
    good = make_video(folder / "good.mp4")
    return folder, good, bad


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_probe_message(batch, kind):
    _, _, bad = batch
    with pytest.raises(MediaError) as e:
        probe(bad[kind])
    assert EXPECTED[kind] in str(e.value)


def test_truncated_detected_while_streaming(batch):
    _, _, bad = batch
    info = probe(bad["truncated"], count="header")  # trusts the container: 50 frames
    with pytest.raises(
        MediaError, match=r"truncated.mp4 is truncated or damaged: decoded \d+ of 50"
    ):
        for _ in iter_frames(bad["truncated"], info=info):
            pass


def test_probe_batch_goes_on_and_exits_nonzero(batch):
    folder, good, bad = batch
    result = runner.invoke(app, ["probe", "--json", str(folder)], env={"COLUMNS": "400"})
    assert result.exit_code == 1
    probed = json.loads(result.stdout)
    assert [Path(p["path"]).name for p in probed] == ["good.mp4"]
    assert probed[0]["video"]["frames"] == 25
    for kind, text in EXPECTED.items():
        assert f"✗ {bad[kind]}: {text}" in result.stderr
    assert "probe: 5 input(s): 1 ok, 0 skipped, 4 failed" in result.stderr


def test_demux_batch_writes_the_good_file(batch, tmp_path):
    folder, good, _ = batch
    out = tmp_path / "out"
    result = runner.invoke(app, ["demux", str(folder), "--out", str(out)])
    assert result.exit_code == 1
    assert len(list((out / "good" / "frames").glob("*.jpg"))) == 25
    assert (out / "good" / "audio.wav").stat().st_size > 0
    assert json.loads((out / "good" / "manifest.json").read_text())["frames"]["written"] == 25
    # Nothing half-written for the failures.
    for name in ("empty", "notes", "truncated", "unknown_codec"):
        assert not (out / name / "manifest.json").exists()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
