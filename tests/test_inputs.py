"""Input discovery: files, folders, organiser frame folders and their audio."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import make_video
from PIL import Image
from typer.testing import CliRunner

from mmaffect.cli import app
from mmaffect.errors import InputError
from mmaffect.media import discover, open_source
from mmaffect.media.frame_folder import fps_from_video_id, split_subject


def write_frames(folder, numbers, size=(32, 32)):
    folder.mkdir(parents=True)
    for n in numbers:
        Image.new("RGB", size, (n, 0, 0)).save(folder / f"{n:05d}.jpg")


def test_video_ids():
    assert fps_from_video_id("2-30-640x360") == 30
    assert fps_from_video_id("5-60-1920x1080-3") == 60
    assert fps_from_video_id("10-60-1280x720_left") == 60
    assert fps_from_video_id("video39") is None
    assert split_subject("10-60-1280x720_right") == ("10-60-1280x720", "right")
    assert split_subject("video39") == ("video39", None)


def test_folders_are_searched_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    make_video(tmp_path / "a" / "one.mp4")
    make_video(tmp_path / "a" / "b" / "two.mkv", audio=False)
    (tmp_path / "a" / "b" / "speech.wav").write_bytes(b"RIFF")  # kind only; not probed here
    (tmp_path / "a" / "readme.txt").write_text("ignored")
    sources = discover([tmp_path])
    assert [(s.id, s.kind) for s in sources] == [
        ("one", "video"),
        ("speech", "audio"),
        ("two", "video"),
    ]


def test_frame_folder_is_a_video_with_audio_from_its_base(tmp_path):
    crops = tmp_path / "cropped_aligned"
    write_frames(crops / "7-25-160x120_left", [1, 2, 3, 6])  # frames 4-5: no face
    write_frames(crops / "7-25-160x120_right", [1, 2])
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "7-25-160x120.mp4")
    sources = discover([crops], audio_dirs=[videos])
    assert [s.id for s in sources] == ["7-25-160x120_left", "7-25-160x120_right"]
    left = sources[0]
    assert left.kind == "frames" and left.base_id == "7-25-160x120" and left.subject == "left"
    assert left.audio_path == videos / "7-25-160x120.mp4"

    opened = open_source(left)
    assert opened.info.video.fps == Fraction(25) and opened.frame_count == 6
    chunks = list(opened.frames(chunk_size=3))
    indices = np.concatenate([c.indices for c in chunks]).tolist()
    assert indices == [0, 1, 2, 5]  # file NNNNN is frame NNNNN-1; missing files skipped
    np.testing.assert_allclose(np.concatenate([c.times for c in chunks]), [0, 0.04, 0.08, 0.2])
    assert abs(opened.audio().duration - 1.0) < 0.05


def test_base_video_among_inputs_is_only_an_audio_source(tmp_path):
    write_frames(tmp_path / "crops" / "3-25-160x120_left", [1])
    (tmp_path / "vids").mkdir()
    make_video(tmp_path / "vids" / "3-25-160x120.mp4")
    sources = discover([tmp_path / "crops", tmp_path / "vids"])
    assert [s.id for s in sources] == ["3-25-160x120_left"]
    assert sources[0].audio_path.name == "3-25-160x120.mp4"


def test_frame_folder_without_audio_says_why(tmp_path):
    write_frames(tmp_path / "9-30-64x64", [1, 2])
    (source,) = discover([tmp_path / "9-30-64x64"])
    audio = open_source(source).audio()
    assert not audio.has_audio
    assert "no video or audio file named 9-30-64x64" in audio.reason


def test_frame_folder_needs_a_frame_rate(tmp_path):
    write_frames(tmp_path / "video39", [1])
    (source,) = discover([tmp_path / "video39"])
    with pytest.raises(InputError, match="cannot tell the frame rate.*pass --fps"):
        open_source(source)
    (given,) = discover([tmp_path / "video39"], fps=30)
    assert open_source(given).info.video.fps == 30


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover([tmp_path / "missing.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no media found in .*empty \(looked for .avi"):
        discover([tmp_path / "empty"])
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    make_video(tmp_path / "x" / "clip.mp4", audio=False)
    make_video(tmp_path / "y" / "clip.mp4", audio=False)
    with pytest.raises(InputError, match="two inputs share the id 'clip'"):
        discover([tmp_path / "x", tmp_path / "y"])


def in_thread(fn, timeout: float = 60):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it does not end."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"did not finish within {timeout} s (a loop followed forever?)")
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def looped(tmp_path):
    """A folder holding a video, two links back to itself and a second link to the video."""
    folder = tmp_path / "looped"
    (folder / "sub").mkdir(parents=True)
    make_video(folder / "clip.mp4", audio=False)
    (folder / "a").symlink_to(".")
    (folder / "b").symlink_to(".")
    (folder / "sub" / "clip.mp4").symlink_to(folder / "clip.mp4")  # same file, same id
    return folder


def test_symlink_loops_are_followed_once_with_a_warning(looped):
    warnings: list[str] = []
    sources = in_thread(lambda: discover([looped], on_warning=warnings.append))
    assert [(s.id, s.path) for s in sources] == [("clip", looped / "clip.mp4")]
    assert warnings == [
        f"{looped / name} leads back to {looped.resolve()}, a folder already searched (a symlink "
        "loop): not followed"
        for name in ("a", "b")
    ]


def test_probe_cli_warns_about_loops_and_succeeds(looped):
    result = in_thread(
        lambda: CliRunner().invoke(app, ["probe", "--json", str(looped)], env={"COLUMNS": "80"})
    )
    assert result.exit_code == 0, result.stderr
    assert [Path(p["path"]).name for p in json.loads(result.stdout)] == ["clip.mp4"]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert lines == [
        f"warning: {looped / name} leads back to {looped.resolve()}, a folder already searched "
        "(a symlink loop): not followed"
        for name in ("a", "b")
    ]


# ------------------------------------------------------------------------------ image sets


def write_images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.new("RGB", (40 + k, 30), (k * 40, 90, 200)).save(folder / name)
    return [folder / n for n in names]


def test_images_in_a_folder_are_one_set_never_one_source_each(tmp_path):
    names = [f"IMG_{k:04d}.jpg" for k in range(30)] + ["b.png", "a.webp", "c.TIFF", "d.bmp"]
    write_images(tmp_path / "holiday", names)
    write_images(tmp_path / "holiday" / "day2", ["x.jpeg", "y.tif"])
    make_video(tmp_path / "holiday" / "clip.mp4", audio=False)
    write_frames(tmp_path / "crops" / "4-25-64x64", [1, 2])  # a frame folder stays one
    (tmp_path / "holiday" / "notes.txt").write_text("not media")
    sources = discover([tmp_path / "holiday", tmp_path / "crops"])
    assert [(s.id, s.kind) for s in sources] == [
        ("4-25-64x64", "frames"),
        ("clip", "video"),
        ("day2", "images"),
        ("holiday", "images"),
    ]
    holiday = sources[3]
    assert holiday.path == tmp_path / "holiday" and holiday.has_video
    assert holiday.audio_path is None and holiday.subject is None
    assert [p.name for p in holiday.images] == sorted(names)  # frame i = image i, by name
    assert [p.name for p in sources[2].images] == ["x.jpeg", "y.tif"]


def test_image_files_given_make_one_set_per_folder_of_those_files(tmp_path, monkeypatch):
    a = write_images(tmp_path / "a", ["1.jpg", "2.jpg", "3.jpg"])
    b = write_images(tmp_path / "b", ["9.png"])
    sources = discover([a[2], b[0], a[0]])
    assert [(s.id, [p.name for p in s.images]) for s in sources] == [
        ("a", ["1.jpg", "3.jpg"]),  # the files given, not the whole folder
        ("b", ["9.png"]),
    ]
    # The same folder reached as a folder and through a file (or twice): one set, each image once.
    (same,) = discover([tmp_path / "a", a[1], tmp_path / "a" / "." / "2.jpg"])
    assert [p.name for p in same.images] == ["1.jpg", "2.jpg", "3.jpg"]
    # A file in the current folder: the set is named after the folder, not "".
    monkeypatch.chdir(tmp_path / "a")
    (here,) = discover(["1.jpg"])
    assert here.id == "a" and here.images == (Path("1.jpg"),)


def test_image_sets_share_the_id_rule_and_are_never_audio_sources(tmp_path):
    write_images(tmp_path / "x" / "faces", ["1.jpg"])
    write_images(tmp_path / "y" / "faces", ["1.jpg"])
    with pytest.raises(InputError, match="two inputs share the id 'faces'"):
        discover([tmp_path / "x", tmp_path / "y"])
    # An image named like a frame folder's video is not its audio source.
    write_frames(tmp_path / "z" / "video39", [1])
    write_images(tmp_path / "z" / "stills", ["video39.jpg"])
    by_id = {s.id: s for s in discover([tmp_path / "z"], fps=25)}
    assert by_id["video39"].audio_path is None and by_id["stills"].kind == "images"


def test_a_folder_of_images_only_is_not_empty_and_the_hint_names_images(tmp_path):
    write_images(tmp_path / "only", ["p.png"])
    assert [s.kind for s in discover([tmp_path / "only"])] == ["images"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as e:
        discover([tmp_path / "empty"])
    assert ".jpg" in e.value.one_line() and ".webp" in e.value.one_line()


def test_image_extensions_have_one_home():
    from mmaffect.media import IMAGE_EXTENSIONS
    from mmaffect.training import crops

    assert crops.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert sorted(IMAGE_EXTENSIONS) == [".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"]
