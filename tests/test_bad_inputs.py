"""Broken inputs: each gets a one-line reason, and the rest of the batch still produces output.

Valid files that look broken (an edit list) are not refused.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ffmpeg_exe, make_video, run_ffmpeg
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


def test_truncated_counted_by_decoding_is_still_truncated(batch):
    _, _, bad = batch
    with pytest.raises(MediaError) as e:
        probe(bad["truncated"], count="decode")
    assert str(e.value) == (
        "truncated.mp4 is truncated or damaged: only 25 of the 50 frames its container lists "
        "can be decoded (copy or download it again)"
    )


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


# A valid file that looks broken: an edit list. `ffmpeg -ss 0.1 -c copy` from a non-keyframe
# start keeps the whole first GOP (100 packets, the container lists 100 frames) and writes an
# edit list that discards the 3 frames before 0.1 s: 97 frames decode, with no decoder error.


@pytest.fixture(scope="module")
def edit_list(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("edit_list")
    whole = make_video(
        folder / "whole.mp4", seconds=4, size="320x240", extra=["-g", "50", "-bf", "2"]
    )
    cut = folder / "in" / "cut.mp4"
    cut.parent.mkdir()
    run_ffmpeg("-ss", "0.1", "-i", str(whole), "-c", "copy", str(cut))
    # The file is what the defect is about: 100 listed frames and packets, 3 of them discarded.
    with av.open(str(cut)) as c:
        stream = c.streams.video[0]
        packets = [p for p in c.demux(stream) if p.size]
        assert stream.frames == len(packets) == 100
        assert sum(p.is_discard for p in packets) == 3
    return whole, cut


def ffmpeg_frame_times(path: Path) -> list[float]:
    """pts (seconds) of every frame ffmpeg decodes, on the file's own timeline (-copyts)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-copyts", "-i", str(path), "-map", "0:v:0"]
        + ["-vf", "showinfo", "-fps_mode", "passthrough", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(t) for t in re.findall(r"pts_time:(\S+)", proc.stderr)]


@pytest.mark.parametrize("count", ["auto", "decode"])
def test_edit_list_probe_counts_what_decodes(edit_list, count):
    _, cut = edit_list
    v = probe(cut, count=count).video
    assert (v.frames, v.frames_header, v.frame_count_method) == (97, 100, "decoded")


def test_edit_list_frames_times_and_pixels(edit_list):
    whole, cut = edit_list
    info = probe(cut)
    assert info.video.start_time == 0 and info.video.fps == 25
    chunks = list(iter_frames(cut, info=info))
    times = np.concatenate([c.times for c in chunks])
    assert np.concatenate([c.indices for c in chunks]).tolist() == list(range(97))
    # frame i at start_time + i / fps is where ffmpeg puts the decoded frame.
    np.testing.assert_allclose(times, ffmpeg_frame_times(cut), atol=1e-6)
    # Stream copy: frame i of the cut is, bit for bit, frame i + 3 of the whole clip (0.1 s in).
    images = np.concatenate([c.images for c in chunks])
    source = np.concatenate([c.images for c in iter_frames(whole)])
    assert np.array_equal(images, source[3:])


def test_header_count_that_does_not_decode_names_the_probe_rule(edit_list):
    _, cut = edit_list
    info = probe(cut, count="header")
    assert info.video.frames == 100
    with pytest.raises(MediaError) as e:
        for _ in iter_frames(cut, info=info):
            pass
    assert str(e.value) == (
        "cut.mp4 decodes to 97 frames, not the 100 its probe result gave (count 'header' "
        "trusts the container, which lists frames that an edit list discards; probe it with "
        "count 'auto' or 'decode', which count the frames that decode)"
    )


def test_edit_list_probe_and_demux_cli(edit_list, tmp_path):
    _, cut = edit_list
    result = runner.invoke(app, ["probe", "--json", "--count", "decode", str(cut)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["video"]["frames"] == 97
    out = tmp_path / "out"
    result = runner.invoke(app, ["demux", str(cut.parent), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "demux: 1 input(s): 1 ok, 0 skipped, 0 failed" in result.stderr
    assert len(list((out / "cut" / "frames").glob("*.jpg"))) == 97
    assert json.loads((out / "cut" / "manifest.json").read_text())["frames"]["written"] == 97


def test_edit_list_extract_faces(edit_list, tmp_path, models_dir):
    _, cut = edit_list
    cache = tmp_path / "cache"
    result = runner.invoke(
        app,
        ["extract", str(cut), "--cache", str(cache), "--modalities", "faces"]
        + ["--models-dir", str(models_dir), "--no-progress"],
    )
    assert result.exit_code == 0, result.stderr
    (meta_file,) = (cache / "cut").glob("faces-*/meta.json")
    meta = json.loads(meta_file.read_text())
    assert meta["timing"]["n_frames"] == 97
    assert {info["shape"][0] for info in meta["arrays"].values()} == {97}
