"""Images as inputs: folders of photos are image sets, one row per image, one cache entry per set.

Real media: frames of real clips from ../shared/data/video saved as photos of different sizes
and formats (one stored sideways with an EXIF orientation tag), a test pattern without a face,
a truncated JPEG and a file that is not an image; and real FER2013 faces (48x48 grey).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import nonempty, run_ffmpeg
from PIL import Image
from typer.testing import CliRunner

from mmaffect.cli.app import app
from mmaffect.errors import MediaError
from mmaffect.media import discover, open_source
from mmaffect.media.image_set import MAX_SIDE, MIN_SIDE, read_image
from mmaffect.plots import _CELL, _SHEET_HEAD, BOX_COLOR, SHEET_COLUMNS
from mmaffect.predict import load_prediction
from mmaffect.submission import read_table

HAPPY = "ravdess_av_actor05/01-01-03-01-01-02-05.mp4"
SURPRISED = "ravdess_av_actor05/01-01-08-01-02-01-05.mp4"
STREET = "street_multiface/video.mp4"
FACES = ["actor_happy", "actor_portrait", "actor_surprised", "street_big", "street_small"]
FER_CLASSES = ["angry", "happy", "neutral", "sad", "surprise", "fear"]


def _frame(video: Path, out: Path, at: float, scale: str | None = None) -> Path:
    vf = ["-vf", f"scale={scale}"] if scale else []
    run_ffmpeg("-ss", str(at), "-i", str(video), "-frames:v", "1", *vf, "-q:v", "2", str(out))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory, shared_data) -> Path:
    """A folder of photos: real faces at several sizes and formats, a face stored sideways
    with EXIF orientation 6, a test pattern (no face), a truncated JPEG and a text file."""
    folder = tmp_path_factory.mktemp("album") / "photos"
    folder.mkdir()
    video = shared_data / "video"
    _frame(video / HAPPY, folder / "actor_happy.jpg", 1.5)  # 1280x720
    _frame(video / SURPRISED, folder / "actor_surprised.png", 1.0, "640:360")
    _frame(video / STREET, folder / "street_big.jpg", 1.0, "2400:1350")  # > MAX_SIDE
    _frame(video / STREET, folder / "street_small.jpg", 1.0, "1200:675")
    upright = Image.open(folder / "actor_happy.jpg").crop((400, 0, 880, 720))  # 480x720
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise: the stored pixels lie on their side
    upright.transpose(Image.Transpose.ROTATE_90).save(
        folder / "actor_portrait.jpg", exif=exif, quality=95
    )
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=400x300", "-frames:v", "1",
               str(folder / "pattern.png"))  # fmt: skip
    data = (folder / "actor_happy.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (folder / "notes.webp").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def fer(tmp_path_factory, shared_data) -> Path:
    """Six real FER2013 faces (48x48 grey JPEG), one per class, as a second set."""
    folder = tmp_path_factory.mktemp("fer") / "fer"
    folder.mkdir()
    root = shared_data / "images" / "fer2013" / "publictest"
    for cls in FER_CLASSES:
        first = nonempty(sorted((root / cls).glob("*.jpg")), f"FER2013 {cls}")[0]
        shutil.copy(first, folder / f"{cls}_{first.name}")
    return folder


READABLE = [
    "actor_happy.jpg",
    "actor_portrait.jpg",
    "actor_surprised.png",
    "pattern.png",
    "street_big.jpg",
    "street_small.jpg",
]


def test_probe_is_one_line_and_names_the_unreadable_images(photos):
    res = CliRunner().invoke(app, ["probe", str(photos)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[1].split("\t") == [
        "photos", "images", "image set", "jpeg,png", "2400x1350", "1.000", "6 images", "6.000",
        "none",
    ]  # fmt: skip
    assert len(lines) == 2  # header + one line for the whole set
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2
    assert re.fullmatch(
        r"warning: photos: broken\.jpg is not a readable image \(image file is truncated "
        r"\(\d+ bytes not processed\)\): left out",
        warnings[0],
    )
    assert warnings[1] == (
        "warning: photos: notes.webp is not a readable image (not an image Pillow can read): "
        "left out"
    )
    res = CliRunner().invoke(app, ["probe", "--json", str(photos)])
    (info,) = json.loads(res.stdout)
    assert info["kind"] == "images" and info["video"]["frames"] == 6
    assert info["video"]["frames_header"] == 8 and info["video"]["frame_count_method"] == "images"
    assert [Path(e["path"]).name for e in info["images"]] == READABLE
    assert [u[0] for u in info["unreadable"]] == ["broken.jpg", "notes.webp"]


def test_frames_are_upright_in_size_groups_with_every_image_once(photos, fer):
    sets = {s.id: s for s in discover([photos, fer])}
    photo_set, fer_set = sets["photos"], sets["fer"]
    opened = open_source(photo_set)
    assert opened.frame_count == 6 and opened.info.video.fps == 1
    sizes = {e.path.name: (e.width, e.height) for e in opened.info.images}
    assert sizes["actor_portrait.jpg"] == (480, 720)  # EXIF orientation applied
    assert sizes["street_big.jpg"] == (2400, 1350)
    seen: dict[int, tuple[int, int]] = {}
    for chunk in opened.frames(chunk_size=2):
        for row, image, t in zip(chunk.indices, chunk.images, chunk.times, strict=True):
            assert row not in seen and t == row  # image i at i seconds
            seen[int(row)] = image.shape[1::-1]
    assert sorted(seen) == list(range(6))
    assert seen[READABLE.index("street_big.jpg")] == (MAX_SIDE, 1080)  # downscaled
    assert seen[READABLE.index("actor_portrait.jpg")] == (480, 720)  # as is, upright
    # The upright portrait has the subject's head at the top, as in the frame it was cut from.
    portrait = read_image(photos / "actor_portrait.jpg")
    original = np.asarray(Image.open(photos / "actor_happy.jpg").convert("RGB"))[:, 400:880]
    assert np.abs(portrait.astype(int) - original.astype(int)).mean() < 3
    fer_chunks = list(open_source(fer_set).frames(chunk_size=4))
    assert [c.images.shape[:3] for c in fer_chunks] == [(4, MIN_SIDE, MIN_SIDE), (2, 320, 320)]


def test_header_count_finds_a_truncated_image_only_when_it_is_decoded(photos):
    (source,) = discover([photos])
    opened = open_source(source, count="header")
    assert opened.frame_count == 7 and [u[0] for u in opened.info.unreadable] == ["notes.webp"]
    with pytest.raises(MediaError) as e:
        list(opened.frames())
    assert e.value.one_line().startswith(
        f"{photos / 'broken.jpg'} is not a readable image any more: image file is truncated"
    )
    assert "remove or replace it and run again" in e.value.one_line()


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, photos, fer, models_dir):
    """``mmaffect predict`` (baseline) on the two sets and a folder of unreadable files only."""
    root = tmp_path_factory.mktemp("predict")
    junk = root / "junk"
    junk.mkdir()
    (junk / "empty.png").write_bytes(b"")
    (junk / "cut.jpg").write_bytes((photos / "actor_happy.jpg").read_bytes()[:500])
    out = root / "out"
    args = ["predict", str(photos), str(fer), str(junk), "--out", str(out), "--plots",
            "--overlay", "--no-progress", "--models-dir", str(models_dir)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    return out, res


def _table(out: Path, name: str) -> dict[str, list[str]]:
    rows = (out / "table" / f"{name}.csv").read_text().splitlines()
    header, body = rows[0].split(","), [r.split(",") for r in rows[1:]]
    return {h: [r[j] for r in body] for j, h in enumerate(header)}


def test_predict_one_row_per_image_and_an_unreadable_set_fails_alone(predicted):
    out, res = predicted
    text = " ".join(res.output.split())
    assert res.exit_code == 1, res.output  # the junk set failed; the others are done
    assert "junk: none of its 2 image(s) can be read (cut.jpg: image file is truncated" in text
    assert "empty.png: an empty file (0 bytes))" in text
    photos = _table(out, "photos")
    assert photos["video_id"] == [Path(n).stem for n in READABLE]
    assert photos["image"] == READABLE and set(photos["image_set"]) == {"photos"}
    assert photos["frame"] == [str(i) for i in range(6)]
    found = dict(zip(photos["video_id"], photos["face_found"], strict=True))
    assert found == {**{f: "1" for f in FACES}, "pattern": "0"}
    fer_table = _table(out, "fer")
    assert len(fer_table["video_id"]) == len(FER_CLASSES)
    assert [v.split("_")[0] for v in fer_table["video_id"]] == sorted(FER_CLASSES)
    assert set(fer_table["face_found"]) == {"1"}  # 48x48 faces, found at 320 px
    # A photo without a face gets the prior of no evidence, not its neighbours' predictions.
    k = READABLE.index("pattern.png")
    assert photos["filled"][k] == "1" and float(photos["p_Neutral"][k]) == 1.0
    assert float(photos["valence"][k]) == 0.0 and float(photos["arousal"][k]) == 0.0
    assert [photos["filled"][i] for i in range(6) if i != k] == ["0"] * 5
    run = json.loads((out / "run.json").read_text())
    assert run["videos"]["photos"]["frames"] == 6 and run["videos"]["fer"]["frames"] == 6
    assert run["videos"]["photos"]["frame_count"] == "images (6)"
    assert list(run["failed"]) == ["junk"]


def test_boxes_are_in_pixels_of_the_original_upright_images(predicted):
    out, _ = predicted
    photos = _table(out, "photos")
    box = {
        v: np.array([float(photos[c][i]) for c in ("face_x1", "face_y1", "face_x2", "face_y2")])
        for i, v in enumerate(photos["video_id"])
        if photos["face_found"][i] == "1"
    }
    # The same frame at 2400 px (analysed at 1920) and at 1200 px: the box scales with it.
    np.testing.assert_allclose(box["street_big"], 2 * box["street_small"], atol=6)
    assert box["street_big"][2] > 1200  # in the 2400-px original, not the analysed image
    # The sideways-stored portrait: the face is in the upright 480x720 image, at the place
    # where the 1280x720 frame it was cut from (at x = 400) has it.
    portrait, happy = box["actor_portrait"], box["actor_happy"]
    assert portrait[2] <= 480 and portrait[3] <= 720
    np.testing.assert_allclose(portrait + [400, 0, 400, 0], happy, atol=12)


def test_cache_holds_one_entry_per_set_and_no_challenge_files(predicted):
    out, _ = predicted
    cache = out / "cache"
    assert sorted(p.name for p in cache.iterdir()) == ["fer", "photos"]
    for name in ("fer", "photos"):
        entries = sorted(p.name.split("-")[0] for p in (cache / name).iterdir())
        # one folder per extractor (the baseline's face model is the frame branch), none per image
        assert entries == ["clip", "faces", "frame"]
    (faces,) = (cache / "photos").glob("faces-*")
    meta = json.loads((faces / "meta.json").read_text())
    assert meta["timing"]["n_frames"] == 6 and meta["image_set"]["files"] == READABLE
    assert [u[0] for u in meta["image_set"]["unreadable"]] == ["broken.jpg", "notes.webp"]
    assert not (out / "abaw3").exists()  # ABAW challenge files are per video, not for photos
    warnings = json.loads((out / "run.json").read_text())["warnings"]
    assert warnings[0].startswith(
        "image set(s) fer, junk, photos: one table row per image and the .npz, no ABAW challenge "
        "files"
    )
    assert [w.split(" is not")[0] for w in warnings[1:]] == [
        "photos: broken.jpg",
        "photos: notes.webp",
    ]


def test_table_and_npz_read_back_as_the_set(predicted):
    out, _ = predicted
    table = read_table(out / "table" / "photos.csv")
    pred = load_prediction(out / "predictions" / "photos.npz")
    assert table.video_id == pred.video_id == "photos"
    assert table.meta["images"] == pred.meta["images"] == READABLE
    np.testing.assert_allclose(table.face_box, pred.face_box, rtol=1e-6)
    np.testing.assert_array_equal(table.face_found, pred.face_found)


def _cell(k: int, size: tuple[int, int], cols: int) -> tuple[int, int, float]:
    """Top-left corner of image ``k``'s thumbnail on a contact sheet, and its scale."""
    from mmaffect.plots import _CAPTION

    side = _CELL - 8
    scale = side / max(size)
    tw, th = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    x0, y0 = (k % cols) * _CELL, _SHEET_HEAD + (k // cols) * (_CELL + _CAPTION)
    return x0 + 4 + (side - tw) // 2, y0 + 4 + (side - th) // 2, scale


def test_plots_are_contact_sheets_with_boxes_and_annotated_copies(predicted, photos):
    out, _ = predicted
    plots = out / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["fer", "fer.png", "photos", "photos.png"]
    sheet = np.asarray(Image.open(plots / "photos.png").convert("RGB"))
    pred = load_prediction(out / "predictions" / "photos.npz")
    cols = min(SHEET_COLUMNS, len(pred))
    for k, name in enumerate(READABLE):
        with Image.open(photos / name) as im:
            size = im.size if name != "actor_portrait.jpg" else im.size[::-1]
        ox, oy, scale = _cell(k, size, cols)
        if pred.face_found[k]:  # the face box is drawn where the face is, in green
            x1, y1, x2, _ = (round(float(v) * scale) for v in pred.face_box[k])
            top = sheet[oy + y1 - 1 : oy + y1 + 2, ox + (x1 + x2) // 2]
            assert (top == BOX_COLOR).all(axis=1).any(), name
        else:  # nothing drawn on the image without a face: the thumbnail as it is
            tw, th = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
            thumb = read_image(photos / name, (tw, th))
            np.testing.assert_array_equal(sheet[oy : oy + th, ox : ox + tw], thumb)
    copies = sorted(p.name for p in (plots / "photos").iterdir())
    assert copies == sorted(f"{Path(n).stem}.jpg" for n in READABLE)
    with Image.open(plots / "photos" / "actor_portrait.jpg") as im:
        assert im.size == (480, 720)  # upright, full size


def test_plot_finds_moved_images_with_videos_option(predicted, photos, tmp_path):
    out, _ = predicted
    npz = out / "predictions" / "photos.npz"
    moved = tmp_path / "moved"
    pred = load_prediction(npz)
    pred.meta["source"] = str(tmp_path / "gone")
    from mmaffect.predict import save_prediction

    save_prediction(pred, tmp_path / "photos.npz")
    res = CliRunner().invoke(app, ["plot", str(tmp_path / "photos.npz"), "--out", str(moved)])
    assert res.exit_code == 1
    assert "photos: the images of this set are not found" in " ".join(res.output.split())
    assert "pass --videos DIR, the folder holding the images" in " ".join(res.output.split())
    res = CliRunner().invoke(
        app, ["plot", str(tmp_path / "photos.npz"), "--out", str(moved), "--videos", str(photos)]
    )
    assert res.exit_code == 0, res.output
    assert (moved / "photos.png").is_file()


def test_rerun_is_up_to_date_and_exits_0(predicted, photos, models_dir):
    out, _ = predicted
    before = (out / "table" / "photos.csv").read_text()
    args = ["predict", str(photos), "--out", str(out), "--no-progress",
            "--models-dir", str(models_dir)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "predict summary: 1 input(s): 0 ok, 1 skipped, 0 failed" in res.output
    assert (out / "table" / "photos.csv").read_text() == before


@pytest.mark.slow
def test_a_checkpoint_sees_each_image_alone(fer, models_dir, tmp_path):
    """A checkpoint over windows of 8 frames: an image's prediction in a set of six is its
    prediction on its own (its window holds itself only, never its neighbours)."""
    from test_predict import _train_tiny

    ckpt = _train_tiny(tmp_path, models_dir, modalities=("clip",))
    solo = tmp_path / "solo"
    solo.mkdir()
    name = sorted(p.name for p in fer.iterdir())[2]
    shutil.copy(fer / name, solo / name)
    for inputs, out in (([fer], "all"), ([solo], "one")):
        args = ["predict", *map(str, inputs), "--out", str(tmp_path / out), "--checkpoint",
                str(ckpt), "--no-progress", "--models-dir", str(models_dir)]  # fmt: skip
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    together = load_prediction(tmp_path / "all" / "predictions" / "fer.npz")
    alone = load_prediction(tmp_path / "one" / "predictions" / "solo.npz")
    assert together.meta["window"] == 8 and together.meta["images"][2] == name
    np.testing.assert_allclose(together.expr_probs[2], alone.expr_probs[0], atol=1e-4)
    assert np.abs(np.diff(together.expr_probs, axis=0)).max() > 1e-3  # the images differ


def test_images_of_one_size_share_a_chunk_and_stand_alone(photos, models_dir, tmp_path):
    """Sizes a, b, a: one chunk holds images 0 and 2, the next image 1 (times go back), and
    each image's features are those it gets on its own (MediaPipe in IMAGE mode)."""
    import mmaffect

    mixed, solo = tmp_path / "mixed", tmp_path / "solo"
    mixed.mkdir()
    solo.mkdir()
    shutil.copy(photos / "actor_happy.jpg", mixed / "a.jpg")  # 1280x720
    shutil.copy(photos / "actor_surprised.png", mixed / "b.png")  # 640x360
    with Image.open(photos / "actor_happy.jpg") as im:  # 1280x720: the mirror image
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mixed / "c.jpg", quality=95)
    shutil.copy(mixed / "c.jpg", solo / "c.jpg")
    chunks = list(open_source(discover([mixed])[0]).frames(chunk_size=8))
    assert [c.indices.tolist() for c in chunks] == [[0, 2], [1]]
    cache = tmp_path / "cache"
    report = mmaffect.extract([mixed, solo], cache=cache, modalities="clip",
                              models_dir=models_dir, progress=False)  # fmt: skip
    assert report.exit_code == 0
    values = {
        name: np.load(next((cache / name).glob("clip-*")) / "values.npy")
        for name in ("mixed", "solo")
    }
    assert np.isfinite(values["mixed"]).all() and values["mixed"].shape[0] == 3
    np.testing.assert_allclose(values["mixed"][2], values["solo"][0], atol=2e-3)
