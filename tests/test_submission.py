"""Submission writers, readers, validation, evaluation and their CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from mmaffect.annotations import AU_8, AU_12, EXPR_7, EXPR_8, VA
from mmaffect.annotations.mtl import read_mtl_file
from mmaffect.annotations.video_labels import VideoLabels, read_video_labels, write_video_labels
from mmaffect.cli.app import app
from mmaffect.errors import InputError
from mmaffect.predict.result import VideoPrediction
from mmaffect.submission import (
    MtlWriter,
    PerVideoWriter,
    TableWriter,
    TemplateWriter,
    evaluate,
    get_writer,
    read_table,
    read_template_submission,
    template_track,
    validate_submission,
    writer_for,
)

SPACES = {
    (1, "EXPR"): EXPR_7,
    (2, "EXPR"): EXPR_7,
    (3, "EXPR"): EXPR_8,
    (1, "AU"): AU_8,
    (2, "AU"): AU_12,
    (3, "AU"): AU_12,
}
AU_ALL = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU20", "AU23", "AU24")
AU_ALL = (*AU_ALL, "AU25", "AU26")  # every AU of ABAW1 and ABAW2+ together


def make_pred(
    vid: str, n: int, seed: int = 0, *, expr_names=EXPR_8.names, au_names=AU_ALL
) -> VideoPrediction:
    rng = np.random.default_rng(seed)
    return VideoPrediction(
        video_id=vid,
        fps=30.0,
        times=np.arange(n) / 30.0,
        expr_probs=rng.dirichlet(np.ones(len(expr_names)), n).astype(np.float32),
        expr_names=tuple(expr_names),
        va=rng.uniform(-1.3, 1.3, (n, 2)).astype(np.float32),
        au_probs=rng.uniform(0, 1, (n, len(au_names))).astype(np.float32),
        au_names=tuple(au_names),
        face_found=rng.uniform(size=n) > 0.2,
        face_score=rng.uniform(size=n).astype(np.float32),
        head_pose=rng.normal(0, 20, (n, 3)).astype(np.float32),
        words=[('hello, "world"' if i % 7 == 0 else "") for i in range(n)],
        filled=rng.uniform(size=n) > 0.9,
    )


def expected_values(pred: VideoPrediction, space) -> np.ndarray:
    """The labels a writer must produce, computed independently of the writers."""
    if space.track == "EXPR":
        cols = [pred.expr_names.index(c) for c in space.names if c in pred.expr_names]
        return np.asarray(cols)[pred.expr_probs[:, cols].argmax(axis=1)]
    if space.track == "AU":
        cols = [pred.au_names.index(a) for a in space.names]
        return (pred.au_probs[:, cols] >= 0.5).astype(np.int64)
    return np.clip(pred.va, -1, 1).astype(np.float32)


VIDEOS = ("2-30-640x360", "10-60-1280x720_left", "video39")


def preds_for(n: int = 40) -> dict[str, VideoPrediction]:
    return {v: make_pred(v, n + 3 * i, seed=i) for i, v in enumerate(VIDEOS)}


def write_template(
    path: Path, track_header: str, preds, *, extra: int = 0, style: str = ""
) -> Path:
    lines = [f"image_location,{track_header}"]
    for vid, pred in preds.items():
        for i in range(len(pred) + extra):
            lines.append(f"{vid}/{i + 1:05d}.jpg{style}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------ per-video files


@pytest.mark.parametrize("edition", [1, 2, 3])
@pytest.mark.parametrize("track", ["EXPR", "AU", "VA"])
def test_per_video_round_trip_and_valid(tmp_path, edition, track):
    space = SPACES.get((edition, track), VA)
    writer = writer_for(track, f"abaw{edition}")
    assert isinstance(writer, PerVideoWriter) and writer.per_video
    preds = preds_for()
    for pred in preds.values():
        path = writer.write_video(pred, tmp_path / "sub")
        assert path == tmp_path / "sub" / f"{pred.video_id}.txt"
        labels = read_video_labels(path)
        assert labels.space == space
        assert labels.num_frames == len(pred)
        want = expected_values(pred, space)
        if track == "VA":
            np.testing.assert_array_equal(labels.values, want)
            assert labels.values.min() >= -1 and labels.values.max() <= 1
        else:
            np.testing.assert_array_equal(labels.values, want)
    assert path.read_text().splitlines()[0] == space.header
    assert validate_submission(tmp_path / "sub", track, edition) == []


def test_eight_class_prediction_for_seven_class_edition_ignores_other(tmp_path):
    probs = np.array([[0.1, 0, 0, 0, 0.2, 0, 0, 0.7], [0, 0, 0.6, 0, 0, 0, 0, 0.4]], np.float32)
    pred = VideoPrediction("v", 30.0, np.arange(2) / 30, expr_probs=probs)
    path = writer_for("EXPR", 2).write_video(pred, tmp_path)
    assert path.read_text().splitlines()[1:] == ["4", "2"]


def test_missing_au_is_named(tmp_path):
    pred = make_pred("v", 5, au_names=AU_12.names)
    with pytest.raises(InputError, match="lacks AU20"):
        writer_for("AU", "abaw1").write_video(pred, tmp_path)


def test_writer_registry_names_and_errors(tmp_path):
    assert isinstance(get_writer("table", format="csv"), TableWriter)
    with pytest.raises(InputError, match="choose among per-video, template, mtl, table"):
        get_writer("srt")
    with pytest.raises(InputError, match="ABAW7 has no EXPR track"):
        writer_for("EXPR", "abaw7")
    assert writer_for("EXPR", "abaw8") is None  # needs a template
    assert writer_for("MTL", "abaw3") is None  # needs an image list


# ------------------------------------------------------------------------------ template files


@pytest.mark.parametrize("edition", [5, 6, 8])
@pytest.mark.parametrize("track", ["EXPR", "AU", "VA"])
@pytest.mark.parametrize("style", ["", ",", ",0", ",0,0"])
def test_template_round_trip_and_valid(tmp_path, edition, track, style):
    space = {"EXPR": EXPR_8, "AU": AU_12, "VA": VA}[track]
    preds = preds_for()
    tmpl = write_template(tmp_path / f"{track}_template.txt", space.header, preds, style=style)
    assert template_track(tmpl) == track
    writer = writer_for(track, edition, template=tmpl)
    assert isinstance(writer, TemplateWriter)
    out = writer.write_all(preds, tmp_path / "out.txt")
    lines = out.read_text().splitlines()
    assert lines[0] == f"image_location,{space.header}"
    assert lines[1].startswith("2-30-640x360/00001.jpg,")
    assert len(lines) == 1 + sum(len(p) for p in preds.values())
    sub = read_template_submission(out)
    for vid, (frames, values) in sub.by_video().items():
        np.testing.assert_array_equal(frames, np.arange(len(preds[vid])))
        np.testing.assert_array_equal(values, expected_values(preds[vid], space))
    assert writer.held_rows == {}
    assert validate_submission(out, track, edition, template=tmpl) == []


def test_template_rows_past_the_end_hold_the_last_prediction(tmp_path):
    preds = preds_for()
    tmpl = write_template(tmp_path / "t.txt", EXPR_8.header, preds, extra=2)
    writer = TemplateWriter(tmpl, "EXPR", 8)
    writer.write_all(preds, tmp_path / "out.txt")
    assert writer.held_rows == {v: 2 for v in VIDEOS}
    sub = read_template_submission(tmp_path / "out.txt")
    frames, values = sub.by_video()["video39"]
    last = expected_values(preds["video39"], EXPR_8)[-1]
    assert values[-1] == values[-2] == values[-3] == last


def test_template_video_without_prediction_is_an_error(tmp_path):
    preds = preds_for()
    tmpl = write_template(tmp_path / "t.txt", VA.header, preds)
    del preds["video39"], preds["2-30-640x360"]
    with pytest.raises(
        InputError, match=r"2 of the 3 videos the template lists have no prediction"
    ):
        TemplateWriter(tmpl, edition=5).write_all(preds, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


# ------------------------------------------------------------------------------ MTL files


@pytest.mark.parametrize("edition", [3, 4, 7])
@pytest.mark.parametrize("listing", ["plain", "header", "comma"])
def test_mtl_round_trip_and_valid(tmp_path, edition, listing):
    preds = preds_for()
    images = [f"{v}/{i:05d}.jpg" for v in VIDEOS for i in (1, 5, 9, 30)]
    lines = [f"{i}," if listing == "comma" else i for i in images]
    if listing != "plain":
        lines = ["image,", *lines] if listing == "comma" else ["image", *lines]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    writer = writer_for("MTL", edition, image_list=tmp_path / "list.txt")
    assert isinstance(writer, MtlWriter)
    out = writer.write_all(preds, tmp_path / "mtl.txt")
    text = out.read_text().splitlines()
    assert text[0] == "image,valence,arousal,expression,aus"
    assert all(len(row.split(",")) == 16 for row in text[1:])
    got = read_mtl_file(out)
    assert got.image_names() == images
    for vid, part in got.by_video().items():
        pred = preds[vid]
        np.testing.assert_array_equal(part.va, expected_values(pred, VA)[part.frames])
        np.testing.assert_array_equal(part.expr, expected_values(pred, EXPR_8)[part.frames])
        np.testing.assert_array_equal(part.au, expected_values(pred, AU_12)[part.frames])
    assert validate_submission(out, "MTL", edition, template=tmp_path / "list.txt") == []


# ------------------------------------------------------------------------------ the table


def test_table_csv_round_trip(tmp_path):
    pred = make_pred("2-30-640x360", 25)
    pred.face_box[3] = [1.5, 2.25, 100.0, 120.125]
    path = TableWriter("csv").write_video(pred, tmp_path)
    assert path.name == "2-30-640x360.csv"
    header = path.read_text().splitlines()[0].split(",")
    assert header[:13] == [
        "video_id", "frame", "image", "time_s", "filled", "face_found", "face_score",
        "face_x1", "face_y1", "face_x2", "face_y2", "expression", "expression_index",
    ]  # fmt: skip
    assert header[13] == "p_Neutral" and header[-5:] == [
        "yaw",
        "pitch",
        "roll",
        "word",
        "predictor",
    ]
    assert header.index("AU1") < header.index("p_AU1")
    back = read_table(path)
    for name in ("expr_probs", "va", "au_probs", "face_score", "face_box", "head_pose"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pred, name), err_msg=name)
    np.testing.assert_array_equal(back.times, pred.times)
    np.testing.assert_array_equal(back.filled, pred.filled)
    np.testing.assert_array_equal(back.face_found, pred.face_found)
    assert back.words == pred.words and back.expr_names == pred.expr_names
    assert back.au_names == pred.au_names and back.fps == pytest.approx(30.0)


def test_table_omits_missing_heads_and_leaves_nan_empty(tmp_path):
    pred = VideoPrediction("v", 25.0, np.arange(3) / 25, va=np.zeros((3, 2), np.float32))
    path = TableWriter().write_video(pred, tmp_path)
    lines = path.read_text().splitlines()
    assert "expression" not in lines[0] and "p_AU1" not in lines[0] and "yaw" not in lines[0]
    assert lines[1].split(",")[7:11] == ["", "", "", ""]  # face box NaN without a face
    assert read_table(path).expr_probs is None


def test_table_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    pred = make_pred("v", 10)
    back = read_table(TableWriter("parquet").write_video(pred, tmp_path))
    np.testing.assert_array_equal(back.va, pred.va)


def test_parquet_without_pyarrow_says_so():
    try:
        import pyarrow  # noqa: F401

        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="needs pyarrow"):
        TableWriter("parquet")


# ------------------------------------------------------------------------------ validation


@pytest.fixture
def expr_folder(tmp_path) -> Path:
    writer = PerVideoWriter("EXPR", 3)
    for pred in preds_for().values():
        writer.write_video(pred, tmp_path / "sub")
    return tmp_path / "sub"


def _messages(problems) -> str:
    return "\n".join(str(p) for p in problems)


def test_validate_per_video_problems(expr_folder):
    f = expr_folder / "video39.txt"
    lines = f.read_text().splitlines()
    lines[0] = ",".join(EXPR_7.names)
    lines[3] = "-1"
    lines[4] = "8"
    lines[5] = "1,2"
    lines[6] = "nan"
    f.write_text("\n".join(lines) + "\n")
    text = _messages(validate_submission(expr_folder, "EXPR", "abaw3"))
    assert "video39.txt, line 1: header" in text and "EXPR, 7 classes" in text
    assert "line 4: expression is -1, the unannotated marker" in text
    assert 'line 5: expected an integer class 0..7 for expression, got "8"' in text
    assert 'line 6: expected 1 value (expression), got 2: "1,2"' in text
    assert 'line 7: expected an integer class 0..7 for expression, got "nan"' in text


def test_validate_caps_repeated_problems(expr_folder):
    f = expr_folder / "video39.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], *(["9"] * 12), *lines[13:]]) + "\n")
    problems = validate_submission(expr_folder, "EXPR", 3)
    assert len(problems) == 6
    assert str(problems[-1]).endswith("… and 7 more lines with a bad value")


def test_validate_against_template_counts(expr_folder, tmp_path):
    preds = preds_for()
    preds["new-video"] = make_pred("new-video", 10)
    tmpl = write_template(tmp_path / "t.txt", EXPR_8.header, preds)
    lines = (expr_folder / "video39.txt").read_text().splitlines()
    (expr_folder / "video39.txt").write_text("\n".join(lines[:-1]) + "\n")  # a missing line
    (expr_folder / "extra.txt").write_text("\n".join(lines) + "\n")
    text = _messages(validate_submission(expr_folder, "EXPR", 3, template=tmpl))
    assert f"video39.txt: {len(lines) - 2} frame lines, expected {len(lines) - 1}" in text
    assert "extra video extra: not a test video" in text
    assert "1 test videos have no file: new-video" in text


def test_validate_against_videos_folder(tmp_path):
    from conftest import make_video

    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos" / "clip.mp4", seconds=1.0, fps="25", audio=False)
    pred = make_pred("clip", 25)
    writer = PerVideoWriter("VA", 3)
    writer.write_video(pred, tmp_path / "sub")
    vids = tmp_path / "videos"
    assert validate_submission(tmp_path / "sub", "VA", 3, videos=vids, frame_count="decoded") == []
    problems = validate_submission(tmp_path / "sub", "VA", 3, videos=vids, frame_count="opencv+1")
    assert _messages(problems).endswith("25 frame lines, expected 26 (OpenCV count + 1)")
    writer.write_video(pred.with_length(26), tmp_path / "sub")
    assert validate_submission(tmp_path / "sub", "VA", 3, videos=vids) == []  # either


@pytest.fixture
def template_case(tmp_path):
    preds = preds_for()
    tmpl = write_template(tmp_path / "t.txt", AU_12.header, preds, style=",")
    out = TemplateWriter(tmpl, edition=6).write_all(preds, tmp_path / "AU.txt")
    return out, tmpl, out.read_text().splitlines()


def test_validate_template_file_problems(template_case):
    out, tmpl, lines = template_case
    lines[0] = "image,AU1"
    lines[2] = lines[2].rsplit(",", 1)[0] + ",2"
    lines[3] = lines[3].rsplit(",", 1)[0] + ",-1"
    lines[4] = lines[4].rsplit(",", 1)[0]
    lines[5] = lines[1]
    out.write_text("\n".join(lines) + "\n")
    text = _messages(validate_submission(out, "AU", "abaw6", template=tmpl))
    assert 'line 1: header "image,AU1" is not "image_location,AU1,AU2' in text
    assert 'line 3: expected 0 or 1 for AU26, got "2"' in text
    assert "line 4: AU26 is -1, the unannotated marker" in text
    assert "line 5: expected 12 values after the image name (AU1,…,AU26), got 11" in text
    assert "line 6: image 2-30-640x360/00001.jpg repeats line 2" in text
    assert (
        "2-30-640x360: 1 rows of the template are missing (first: 2-30-640x360/00005.jpg)" in text
    )


def test_validate_template_missing_and_extra_videos(template_case, tmp_path):
    out, tmpl, lines = template_case
    kept = [ln for ln in lines if not ln.startswith("video39/")]
    kept.append("other-video/00001.jpg,0,0,0,0,0,0,0,0,0,0,0,0")
    out.write_text("\n".join(kept) + "\n")
    text = _messages(validate_submission(out, "AU", 6, template=tmpl))
    assert "1 videos of the template are missing: video39" in text
    assert "1 extra videos not in the template: other-video" in text


def test_validate_va_nan_and_range(tmp_path):
    preds = preds_for()
    tmpl = write_template(tmp_path / "t.txt", VA.header, preds)
    out = TemplateWriter(tmpl, edition=8).write_all(preds, tmp_path / "VA.txt")
    lines = out.read_text().splitlines()
    lines[1] = "2-30-640x360/00001.jpg,nan,0.5"
    lines[2] = "2-30-640x360/00002.jpg,0.5,1.5"
    lines[3] = "2-30-640x360/00003.jpg,-5,0"
    out.write_text("\n".join(lines) + "\n")
    text = _messages(validate_submission(out, "VA", 8, template=tmpl))
    assert "line 2: valence is NaN; a submission needs a number in [-1, 1]" in text
    assert "line 3: arousal 1.5 is outside [-1, 1]" in text
    assert "line 4: valence is -5, the unannotated marker" in text


def test_validate_rejects_unknown_rule_and_wrong_edition(expr_folder):
    with pytest.raises(InputError, match="unknown frame-count rule"):
        validate_submission(expr_folder, "EXPR", 3, frame_count="ffmpeg")
    with pytest.raises(InputError, match="ABAW4 has no EXPR track"):
        validate_submission(expr_folder, "EXPR", 4)


# ------------------------------------------------------------------------------ evaluation


def ccc_np(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def random_gt(space, n, rng) -> np.ndarray:
    if space.track == "EXPR":
        values = rng.integers(0, space.size, n)
        values[rng.uniform(size=n) < 0.1] = -1
    elif space.track == "AU":
        values = rng.integers(0, 2, (n, space.size))
        values[rng.uniform(size=(n, space.size)) < 0.05] = -1
    else:
        values = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        values[rng.uniform(size=n) < 0.1] = -5
    return values


def write_gt(folder: Path, space, preds, rng, shorter: int = 3) -> dict[str, np.ndarray]:
    truth = {}
    for vid, pred in preds.items():
        values = random_gt(space, len(pred) - shorter, rng)  # predictions run past the labels
        write_video_labels(folder / f"{vid}.txt", VideoLabels.from_values(vid, space, values))
        truth[vid] = values
    return truth


def reference_score(space, edition, pred_values, truth):
    p = np.concatenate([pred_values[v][: len(t)] for v, t in truth.items()])
    t = np.concatenate(list(truth.values()))
    if space.track == "EXPR":
        keep = t != -1
        f1 = f1_score(t[keep], p[keep], average="macro", labels=range(space.size), zero_division=0)
        acc = accuracy_score(t[keep], p[keep])
        return 0.67 * f1 + 0.33 * acc if edition <= 2 else f1
    if space.track == "AU":
        f1s, correct, total = [], 0, 0
        for j in range(space.size):
            keep = t[:, j] != -1
            f1s.append(f1_score(t[keep, j], p[keep, j], zero_division=0))
            correct += int((t[keep, j] == p[keep, j]).sum())
            total += int(keep.sum())
        return 0.5 * np.mean(f1s) + 0.5 * correct / total if edition <= 2 else np.mean(f1s)
    keep = ~(t == -5).any(axis=1)
    return (ccc_np(p[keep, 0], t[keep, 0]) + ccc_np(p[keep, 1], t[keep, 1])) / 2


@pytest.mark.parametrize("edition", [1, 2, 3, 5])
@pytest.mark.parametrize("track", ["EXPR", "AU", "VA"])
def test_evaluate_matches_sklearn(tmp_path, edition, track):
    space = SPACES.get((min(edition, 3), track), VA)
    preds = {v: make_pred(v, 300, seed=i) for i, v in enumerate(VIDEOS)}
    truth = write_gt(tmp_path / "gt", space, preds, np.random.default_rng(edition))
    if edition <= 3:
        writer = writer_for(track, edition)
        for pred in preds.values():
            writer.write_video(pred, tmp_path / "pred")
        pred_path = tmp_path / "pred"
    else:
        tmpl = write_template(tmp_path / "t.txt", space.header, preds)
        pred_path = TemplateWriter(tmpl, edition=edition).write_all(preds, tmp_path / "p.txt")
    report = evaluate(pred_path, tmp_path / "gt", track, f"abaw{edition}")
    want = reference_score(
        space, edition, {v: expected_values(p, space) for v, p in preds.items()}, truth
    )
    assert report.score == pytest.approx(want, abs=1e-9)
    assert report.n_ignored_pred_frames == 3 * len(VIDEOS)
    assert report.n_gt_frames == sum(len(t) for t in truth.values())
    if track == "EXPR":
        assert len(report.per_class_f1) == space.size
        assert report.formula == ("0.67*f1_macro + 0.33*accuracy" if edition <= 2 else "f1_macro")
    if track == "AU":
        assert list(report.per_au_f1) == list(space.names)
    if track == "VA":
        assert report.ccc_valence is not None and -1 <= report.ccc_arousal <= 1
    assert json.loads(json.dumps(report.to_dict()))["score"] == pytest.approx(report.score)


def test_evaluate_mtl_sum(tmp_path):
    preds = preds_for(60)
    rng = np.random.default_rng(4)
    images, rows = [], []
    for vid in VIDEOS:
        for f in range(0, 50, 2):
            images.append(f"{vid}/{f + 1:05d}.jpg")
            va = rng.uniform(-1, 1, 2) if f % 10 else [-5, -5]
            expr = rng.integers(0, 8) if f % 6 else -1
            aus = rng.integers(0, 2, 12)
            rows.append(",".join(map(str, [*np.round(va, 3), expr, *aus])))
    gt = tmp_path / "validation_set_annotations.txt"
    gt.write_text(
        "image,valence,arousal,expression,aus\n"
        + "\n".join(f"{i},{r}" for i, r in zip(images, rows, strict=True))
        + "\n"
    )
    (tmp_path / "list.txt").write_text("\n".join(images) + "\n")
    out = MtlWriter(tmp_path / "list.txt", 7).write_all(preds, tmp_path / "mtl.txt")
    report = evaluate(out, gt, "MTL", "abaw7")
    labels = read_mtl_file(gt)
    p = read_mtl_file(out)
    keep = labels.expr_mask
    expr = f1_score(labels.expr[keep], p.expr[keep], average="macro", labels=range(8))
    au = np.mean([f1_score(labels.au[:, j], p.au[:, j]) for j in range(12)])
    k = labels.va_mask
    va = (ccc_np(p.va[k, 0], labels.va[k, 0]) + ccc_np(p.va[k, 1], labels.va[k, 1])) / 2
    assert report.parts["EXPR"] == pytest.approx(expr)
    assert report.parts["AU"] == pytest.approx(au)
    assert report.parts["VA"] == pytest.approx(va)
    assert report.score == pytest.approx(expr + au + va)


def test_evaluate_missing_prediction_frames_is_an_error(tmp_path):
    preds = {v: make_pred(v, 50, seed=i) for i, v in enumerate(VIDEOS)}
    write_gt(tmp_path / "gt", EXPR_8, preds, np.random.default_rng(0), shorter=0)
    writer = PerVideoWriter("EXPR", 3)
    for pred in preds.values():
        writer.write_video(pred.with_length(40), tmp_path / "pred")
    with pytest.raises(InputError, match=r"annotated ground-truth frames in 3 videos have no"):
        evaluate(tmp_path / "pred", tmp_path / "gt", "EXPR", 3)


# ------------------------------------------------------------------------------ CLI


def test_cli_validate_ok_and_problems(expr_folder):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(expr_folder), "--track", "EXPR", "--edition", "abaw3"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().splitlines()[-1].startswith("ok: ")
    bad = runner.invoke(app, ["validate", str(expr_folder), "--track", "EXPR", "--edition", "2"])
    assert bad.exit_code == 1
    assert "is the EXPR, 8 classes (ABAW3+) header; ABAW2 EXPR needs" in bad.output
    wrong = runner.invoke(app, ["validate", str(expr_folder), "--track", "EXPR", "--edition", "9"])
    assert wrong.exit_code == 2 and "unknown ABAW edition" in wrong.output


def test_cli_evaluate_table_and_json(tmp_path):
    preds = {v: make_pred(v, 80, seed=i) for i, v in enumerate(VIDEOS)}
    write_gt(tmp_path / "gt", VA, preds, np.random.default_rng(1))
    for pred in preds.values():
        PerVideoWriter("VA", 3).write_video(pred, tmp_path / "pred")
    result = CliRunner().invoke(
        app,
        ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
         "--track", "va", "--edition", "abaw3", "--json", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "official score" in result.output and "CCC valence" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["track"] == "VA" and data["score"] == pytest.approx(
        (data["ccc_valence"] + data["ccc_arousal"]) / 2
    )


def test_evaluate_refuses_a_prediction_validate_rejects(tmp_path):
    # A -5 ("unannotated" in labels) inside a VA prediction used to be scored (CCC 1.0 -> 0.6,
    # exit 0) while validate rejected the file.
    preds = {v: make_pred(v, 80, seed=i) for i, v in enumerate(VIDEOS)}
    write_gt(tmp_path / "gt", VA, preds, np.random.default_rng(1))
    for pred in preds.values():
        PerVideoWriter("VA", 3).write_video(pred, tmp_path / "pred")
    bad = tmp_path / "pred" / f"{VIDEOS[0]}.txt"
    lines = bad.read_text().splitlines()
    lines[5] = "-5,-5"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"not a valid ABAW3 VA submission \(1 problem line"):
        evaluate(tmp_path / "pred", tmp_path / "gt", "VA", 3)
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--track", "va"]
    result = CliRunner().invoke(app, ["evaluate", *args, "--edition", "abaw3"])
    assert result.exit_code == 1
    assert f"{bad}, line 6: " in result.output and "official score" not in result.output
    assert "it was not scored" in " ".join(result.output.split())


def test_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from mmaffect.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert 'validate' in r.output; "
        "print(sorted(m for m in ('torch', 'cv2', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
