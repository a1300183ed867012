"""ABAW annotation readers and writers on hand-written fixtures, and the corpus label mappings.

No Aff-Wild2 file exists here (the database is under EULA), so every layout of
``ABAW_FORMATS.md`` is written by hand into ``tmp_path``. The corpus mappings are checked on the
real EmoDB and RAVDESS label tables in ``../shared/data``.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmaffect.annotations import (
    AU_8,
    AU_12,
    EXPR_7,
    EXPR_8,
    VA,
    AnnotationError,
    VideoLabels,
    emodb_label,
    find_mtl_files,
    find_split_folders,
    format_video_labels,
    label_space_for,
    match_header,
    ravdess_label,
    read_label_folder,
    read_mtl_file,
    read_split_folders,
    read_video_labels,
    write_video_labels,
)
from mmaffect.errors import InputError

EXPR7_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
EXPR8_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU8_HEADER = "AU1,AU2,AU4,AU6,AU12,AU15,AU20,AU25"
AU12_HEADER = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
ALL_HEADERS = f"valence,arousal | {EXPR7_HEADER} | {EXPR8_HEADER} | {AU8_HEADER} | {AU12_HEADER}"
MTL_HEADER = "image,valence,arousal,expression,aus"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# --- label spaces and headers ----------------------------------------------------------------


def test_label_spaces_are_the_documented_ones():
    assert EXPR_7.names == tuple(EXPR7_HEADER.split(","))
    assert EXPR_8.names == (*EXPR_7.names, "Other")
    assert EXPR_8.names.index("Other") == 7
    assert AU_8.header == AU8_HEADER and AU_8.edition_family == "ABAW1"
    assert AU_12.header == AU12_HEADER and AU_12.size == 12
    assert VA.header == "valence,arousal"
    assert (EXPR_7.edition_family, EXPR_8.edition_family) == ("ABAW1-2", "ABAW3+")
    assert [label_space_for("expr", e) for e in (1, 2, 3, 5, 8)] == [EXPR_7, EXPR_7] + [EXPR_8] * 3
    assert [label_space_for("AU", e) for e in (1, 2, 6)] == [AU_8, AU_12, AU_12]
    assert label_space_for("va", 1) is VA
    with pytest.raises(InputError) as e:
        label_space_for("MTL", 3)
    assert message(e) == "unknown track 'MTL' (expected one of: VA, EXPR, AU)"


@pytest.mark.parametrize(
    ("line", "space"),
    [
        ("valence,arousal", VA),
        (EXPR7_HEADER, EXPR_7),
        (EXPR8_HEADER, EXPR_8),
        (AU8_HEADER, AU_8),
        (AU12_HEADER, AU_12),
        ("\ufeffvalence,arousal\r", VA),
        (" Neutral, Anger ,Disgust,Fear,Happiness,Sadness,Surprise,Other  ", EXPR_8),
        ("valence,arousal,", None),
        ("Valence,Arousal", None),
        ("arousal,valence", None),
        (MTL_HEADER, None),
        ("", None),
    ],
)
def test_match_header(line: str, space):
    assert match_header(line) == space


# --- every per-video layout ------------------------------------------------------------------


def test_abaw1_expr_7_classes(tmp_path: Path):
    path = write(
        tmp_path / "EXPR_Set/Train_Set/1-30-1280x720.txt", f"{EXPR7_HEADER}\n0\n6\n-1\n3\n"
    )
    labels = read_video_labels(path)
    assert labels.space == EXPR_7 and labels.track == "EXPR"
    assert labels.video_id == labels.base_id == "1-30-1280x720" and labels.subject is None
    assert labels.values.dtype == np.int64 and labels.values.tolist() == [0, 6, -1, 3]
    assert labels.mask.tolist() == [True, True, False, True]
    assert len(labels) == labels.num_frames == 4
    assert labels.path == path


def test_abaw3_expr_8_classes_with_left_subject(tmp_path: Path):
    path = write(tmp_path / "10-60-1280x720_left.txt", f"{EXPR8_HEADER}\n7\n-1\n0\n")
    labels = read_video_labels(path)
    assert labels.space == EXPR_8
    assert (labels.video_id, labels.base_id, labels.subject) == (
        "10-60-1280x720_left",
        "10-60-1280x720",
        "left",
    )
    assert labels.values.tolist() == [7, -1, 0]
    assert labels.mask.tolist() == [True, False, True]


def test_abaw1_au_8(tmp_path: Path):
    path = write(
        tmp_path / "video39.txt",
        f"{AU8_HEADER}\n1,0,0,1,1,0,0,1\n-1,-1,-1,-1,-1,-1,-1,-1\n0,0,0,0,0,0,0,0\n",
    )
    labels = read_video_labels(path)
    assert labels.space == AU_8
    assert labels.values.dtype == np.int8 and labels.values.shape == (3, 8)
    assert labels.values[0].tolist() == [1, 0, 0, 1, 1, 0, 0, 1]
    assert labels.mask.shape == (3, 8)
    assert labels.mask.all(axis=1).tolist() == [True, False, True]
    assert not labels.mask[1].any()


def test_abaw2_au_12_with_right_subject(tmp_path: Path):
    path = write(
        tmp_path / "AU_Set/Validation_Set/5-60-1920x1080-3_right.txt",
        f"{AU12_HEADER}\n1,0,1,1,1,0,0,1,0,0,0,1\n0,0,0,0,0,0,0,0,0,0,-1,0\n",
    )
    labels = read_video_labels(path)
    assert labels.space == AU_12
    assert (labels.base_id, labels.subject) == ("5-60-1920x1080-3", "right")
    assert labels.values.shape == (2, 12)
    assert labels.values[0].tolist() == [1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1]
    # The mask is per unit: one unannotated AU does not hide the others.
    assert labels.mask[1].tolist() == [True] * 10 + [False, True]


def test_va_and_its_sentinel(tmp_path: Path):
    path = write(tmp_path / "2-30-640x360.txt", "valence,arousal\n0.5,-0.5\n-5,-5\n-5,0.3\n1,-1\n")
    labels = read_video_labels(path)
    assert labels.space == VA
    assert labels.values.dtype == np.float32 and labels.values.shape == (4, 2)
    assert labels.values[0].tolist() == [0.5, -0.5]
    # -5 in one field only: the whole frame is unannotated, the other value is kept as read.
    assert labels.mask.tolist() == [True, False, False, True]
    assert labels.values[2].tolist() == [-5.0, pytest.approx(0.3)]


def test_bom_crlf_spaces_and_trailing_blank_lines(tmp_path: Path):
    text = f"\ufeff{EXPR8_HEADER}\r\n 1\r\n2 \r\n-1\r\n\r\n\n"
    labels = read_video_labels(write(tmp_path / "166.txt", text.encode("utf-8")))
    assert labels.space == EXPR_8 and labels.values.tolist() == [1, 2, -1]
    va = read_video_labels(write(tmp_path / "v.txt", "valence,arousal\r\n 0.25 , -1 \r\n"))
    assert va.values.tolist() == [[0.25, -1.0]]


def test_header_only_file_is_an_error_unless_allowed(tmp_path: Path):
    path = write(tmp_path / "x.txt", "valence,arousal\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f"{path}, line 1: header only, no frame lines (each line after the header is one "
        "frame; pass allow_empty=True to accept this)"
    )
    labels = read_video_labels(path, allow_empty=True)
    assert labels.values.shape == (0, 2) and labels.mask.shape == (0,)


# --- malformed per-video files: exact messages -----------------------------------------------


def test_out_of_range_expr(tmp_path: Path):
    path = write(tmp_path / "EXPR_Set/Train/12-24-1920x1080.txt", f"{EXPR8_HEADER}\n0\n9\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f'{path}, line 3: expected one integer in 0..7 or -1, got "9"'
    assert (e.value.path, e.value.line) == (str(path), 3)


def test_seven_class_file_rejects_other(tmp_path: Path):
    path = write(tmp_path / "a.txt", f"{EXPR7_HEADER}\n7\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f'{path}, line 2: expected one integer in 0..6 or -1, got "7"'


def test_expr_line_with_two_fields_or_a_float(tmp_path: Path):
    path = write(tmp_path / "a.txt", f"{EXPR8_HEADER}\n1\n1,2\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f'{path}, line 3: expected one integer in 0..7 or -1, got "1,2"'
    path = write(tmp_path / "b.txt", f"{EXPR8_HEADER}\n3.0\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f'{path}, line 2: expected one integer in 0..7 or -1, got "3.0"'


def test_bad_header(tmp_path: Path):
    path = write(tmp_path / "a.txt", "foo,bar\n1\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 1: header "foo,bar" matches no ABAW layout (expected one of: {ALL_HEADERS})'
    )


def test_header_in_wrong_letter_case(tmp_path: Path):
    path = write(tmp_path / "a.txt", "Valence,Arousal\n0,0\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 1: header "Valence,Arousal" differs from VA (ABAW1+) in letter case '
        '(write it exactly as the organisers do: "valence,arousal")'
    )


def test_mtl_file_given_to_the_per_video_reader(tmp_path: Path):
    path = write(tmp_path / "train_set.txt", f"{MTL_HEADER}\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 1: header "{MTL_HEADER}" is the MTL header, not a per-video one '
        "(this is an MTL split file: read it with read_mtl_file)"
    )


def test_wrong_field_counts(tmp_path: Path):
    path = write(tmp_path / "au.txt", f"{AU12_HEADER}\n1,0,1,1,1,0,0,1,0,0,0\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f"{path}, line 2: expected 12 comma-separated values (AU1,…,AU26), "
        'got 11: "1,0,1,1,1,0,0,1,0,0,0"'
    )
    path = write(tmp_path / "va.txt", "valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 3: expected 2 comma-separated values (valence,arousal), got 3: "0.1,0.2,0.3"'
    )


def test_out_of_range_and_non_numbers(tmp_path: Path):
    path = write(tmp_path / "au.txt", f"{AU8_HEADER}\n1,0,1,0,1,0,1,0\n1,0,1,0,2,0,1,0\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f'{path}, line 3: expected 0, 1 or -1 for AU12 (value 5 of 8), got "2"'
    path = write(tmp_path / "va1.txt", "valence,arousal\n0.1,1.5\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert (
        message(e) == f'{path}, line 2: expected a number in [-1, 1] or -5 for arousal, got "1.5"'
    )
    path = write(tmp_path / "va2.txt", "valence,arousal\n0.1,0.2\nabc,0.2\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 3: expected a number in [-1, 1] or -5 for valence, got "abc"'
    )
    path = write(tmp_path / "va3.txt", "valence,arousal\nnan,0.2\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f'{path}, line 2: expected a number in [-1, 1] or -5 for valence, got "nan"'
    )


def test_empty_and_blank_lines(tmp_path: Path):
    path = write(tmp_path / "empty.txt", "")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == (
        f"{path}: file is empty (an ABAW label file starts with a header line, one of: "
        f"{ALL_HEADERS})"
    )
    path = write(tmp_path / "blank.txt", "\n \n")
    with pytest.raises(AnnotationError, match="file is empty"):
        read_video_labels(path)
    path = write(tmp_path / "gap.txt", f"{EXPR8_HEADER}\n1\n\n2\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f"{path}, line 3: empty line (each line after the header is one frame)"


def test_encoding_problems(tmp_path: Path):
    path = write(tmp_path / "u16.txt", "valence,arousal\n0,0\n".encode("utf-16"))
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f"{path}: file is UTF-16 text (save it as UTF-8 or ASCII)"
    path = write(tmp_path / "latin.txt", b"valence,arousal\n0,0\n0,\xe9\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert message(e) == f"{path}, line 3: not UTF-8 text (byte 0xe9)"


def test_missing_file(tmp_path: Path):
    with pytest.raises(InputError) as e:
        read_video_labels(tmp_path / "nope.txt")
    assert message(e) == f"{tmp_path / 'nope.txt'}: no such file"


def test_long_file_fast_path_and_late_error(tmp_path: Path):
    rng = np.random.default_rng(0)
    au = rng.integers(-1, 2, size=(3000, 12))
    lines = [",".join(map(str, row)) for row in au]
    path = write(tmp_path / "long.txt", AU12_HEADER + "\n" + "\n".join(lines) + "\n")
    labels = read_video_labels(path)
    assert np.array_equal(labels.values, au) and np.array_equal(labels.mask, au != -1)
    lines[2500] = lines[2500][:-1] + "x"
    path = write(tmp_path / "late.txt", AU12_HEADER + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_video_labels(path)
    assert e.value.line == 2502 and message(e).endswith('for AU26 (value 12 of 12), got "x"')


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "values"),
    [
        (EXPR_7, [0, 6, -1, 3]),
        (EXPR_8, [7, -1, 0, 4]),
        (AU_8, [[1, 0, 0, 1, 1, 0, 0, 1], [-1] * 8]),
        (AU_12, [[1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1], [0] * 10 + [-1, 1]]),
        (VA, [[0.1, -0.25], [-5, -5], [-5, 0.3], [1 / 3, -1.0], [0.0, 2e-7]]),
    ],
)
def test_round_trip(tmp_path: Path, space, values):
    labels = VideoLabels.from_values("3-25-1920x1080_left", space, np.array(values))
    path = write_video_labels(tmp_path / "out" / "3-25-1920x1080_left.txt", labels)
    back = read_video_labels(path)
    assert back.space == space and back.video_id == labels.video_id
    assert back.values.dtype == labels.values.dtype
    assert np.array_equal(back.values, labels.values)
    assert np.array_equal(back.mask, labels.mask)
    assert path.read_text(encoding="utf-8").splitlines()[0] == space.header
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_written_text_is_organiser_formatted(tmp_path: Path):
    va = VideoLabels.from_values("v", VA, [[0.1, -0.25], [-5, -5], [1, 0]])
    assert format_video_labels(va) == "valence,arousal\n0.1,-0.25\n-5,-5\n1,0\n"
    expr = VideoLabels.from_values("e", EXPR_8, [4, 4, 2], mask=[True, False, True])
    assert format_video_labels(expr) == f"{EXPR8_HEADER}\n4\n-1\n2\n"  # masked → sentinel
    au = VideoLabels.from_values("a", AU_8, [[1, 0, 1, 0, 1, 0, 1, 0]])
    assert format_video_labels(au) == f"{AU8_HEADER}\n1,0,1,0,1,0,1,0\n"
    va_masked = VideoLabels.from_values("v", VA, [[0.5, 0.5]], mask=[False])
    assert format_video_labels(va_masked) == "valence,arousal\n-5,-5\n"


def test_writer_refusals(tmp_path: Path):
    labels = VideoLabels.from_values("1-30-1280x720", EXPR_8, [1, 2])
    with pytest.raises(AnnotationError) as e:
        write_video_labels(tmp_path / "other.txt", labels)
    assert message(e) == (
        f"cannot write labels of video 1-30-1280x720 to {tmp_path / 'other.txt'}: "
        "the file name is the video id (use 1-30-1280x720.txt)"
    )
    with pytest.raises(AnnotationError) as e:
        VideoLabels.from_values("x", EXPR_7, [1, 7])
    assert message(e) == "x: frame 1 is annotated with EXPR value 7, outside 0..6"
    bad = VideoLabels("x", VA, np.array([[0.0, 1.5]], np.float32), np.array([True]))
    with pytest.raises(AnnotationError) as e:
        write_video_labels(tmp_path / "x.txt", bad)
    assert message(e) == (
        f"cannot write {tmp_path / 'x.txt'}: frame 0 is annotated with VA value 0,1.5, "
        "outside [-1, 1]"
    )
    assert not (tmp_path / "x.txt").exists()
    with pytest.raises(AnnotationError) as e:
        VideoLabels.from_values("x", AU_12, np.zeros((3, 8)))
    assert message(e) == "x: AU, 12 units (ABAW2+) values need shape (n, 12), got (3, 8)"


# --- folders ---------------------------------------------------------------------------------


def test_read_label_folder_any_name_and_sorted(tmp_path: Path):
    folder = tmp_path / "EXPR_Recognition_Challenge" / "Validation_Set"
    write(folder / "b.txt", f"{EXPR8_HEADER}\n1\n")
    write(folder / "a_right.txt", f"{EXPR8_HEADER}\n2\n3\n")
    write(folder / "._a.txt", "\x00\x05 resource fork")  # macOS junk is skipped
    write(folder / "notes.md", "not a label file")
    videos = read_label_folder(folder)
    assert list(videos) == ["a_right", "b"]
    assert videos["a_right"].base_id == "a" and videos["a_right"].values.tolist() == [2, 3]


def test_folder_mixing_tracks_and_the_track_filter(tmp_path: Path):
    folder = tmp_path / "mixed"
    write(folder / "a.txt", f"{EXPR8_HEADER}\n1\n")
    write(folder / "b.txt", "valence,arousal\n0,0\n")
    write(folder / "c.txt", f"{EXPR7_HEADER}\n1\n")
    with pytest.raises(AnnotationError) as e:
        read_label_folder(folder)
    assert message(e) == (
        f"{folder}: mixes label layouts: {folder / 'a.txt'} is EXPR, 8 classes (ABAW3+) but "
        f"{folder / 'b.txt'} is VA (ABAW1+) (keep one layout per folder, or pass track= to "
        "read one track)"
    )
    assert list(read_label_folder(folder, track="va")) == ["b"]
    with pytest.raises(AnnotationError, match="c.txt is EXPR, 7 classes"):
        read_label_folder(folder, track="EXPR")
    with pytest.raises(AnnotationError) as e:
        read_label_folder(
            write(tmp_path / "only_va" / "v.txt", "valence,arousal\n0,0\n").parent, track="AU"
        )
    assert message(e) == f"{tmp_path / 'only_va'}: no AU label files among 1 *.txt files"


def test_recursive_folder_and_duplicate_ids(tmp_path: Path):
    root = tmp_path / "VA_Set"
    write(root / "Train_Set" / "a.txt", "valence,arousal\n0,0\n")
    write(root / "Validation_Set" / "b.txt", "valence,arousal\n0,0\n")
    with pytest.raises(InputError) as e:
        read_label_folder(root)
    assert (
        message(e) == f"{root}: no *.txt label files (pass recursive=True to look in sub-folders)"
    )
    assert list(read_label_folder(root, recursive=True)) == ["a", "b"]
    write(root / "Validation_Set" / "a.txt", "valence,arousal\n0,0\n")
    with pytest.raises(AnnotationError) as e:
        read_label_folder(root, recursive=True)
    assert message(e) == (
        f"{root}: video a has two label files: {root / 'Train_Set' / 'a.txt'} and "
        f"{root / 'Validation_Set' / 'a.txt'}"
    )


def test_split_folders(tmp_path: Path):
    parent = tmp_path / "AU_Detection_Challenge"
    write(parent / "Train_Set" / "t.txt", f"{AU12_HEADER}\n" + ",".join(["0"] * 12) + "\n")
    write(parent / "Validation_Set" / "v.txt", f"{AU12_HEADER}\n" + ",".join(["1"] * 12) + "\n")
    (parent / "Test_Set").mkdir()
    assert find_split_folders(parent) == {
        "train": parent / "Train_Set",
        "validation": parent / "Validation_Set",
    }
    splits = read_split_folders(parent)
    assert list(splits["train"]) == ["t"] and list(splits["validation"]) == ["v"]

    lower = tmp_path / "lower"
    write(lower / "train" / "t.txt", "valence,arousal\n0,0\n")
    write(lower / "val" / "v.txt", "valence,arousal\n0,0\n")
    assert set(find_split_folders(lower)) == {"train", "validation"}

    with pytest.raises(InputError) as e:
        find_split_folders(tmp_path / "lower" / "train")
    assert message(e) == (
        f"{lower / 'train'}: no Train_Set or Validation_Set folder (sub-folders: none) "
        "(also recognised: train, training, val, valid, validation)"
    )


def test_split_folders_disagreeing(tmp_path: Path):
    parent = tmp_path / "EXPR_Set"
    write(parent / "Train_Set" / "a.txt", f"{EXPR8_HEADER}\n1\n")
    write(parent / "Validation_Set" / "b.txt", f"{EXPR7_HEADER}\n1\n")
    with pytest.raises(AnnotationError) as e:
        read_split_folders(parent)
    assert message(e) == (
        f"{parent}: the train split is EXPR, 8 classes (ABAW3+) but the validation split is "
        "EXPR, 7 classes (ABAW1-2)"
    )
    write(parent / "Validation_Set" / "b.txt", f"{EXPR8_HEADER}\n1\n")
    write(parent / "Validation_Set" / "a.txt", f"{EXPR8_HEADER}\n1\n")
    with pytest.raises(AnnotationError) as e:
        read_split_folders(parent)
    assert message(e) == f"{parent}: video a is in both the train and the validation split"


# --- MTL -------------------------------------------------------------------------------------

MTL_ROWS = [
    "1-30-1280x720/00001.jpg,0.5,-0.25,4,1,0,0,1,0,0,1,0,0,0,1,0",
    "1-30-1280x720/00003.jpg,-5,-5,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1",
    "10-60-1280x720_right/00002.jpg,-5,0.1,7,0,0,0,0,0,0,0,0,0,0,0,0",
    "1-30-1280x720/00002.jpg,0,1,0,0,1,0,0,0,0,0,0,0,0,0,1",
]


def check_mtl(labels):
    assert len(labels) == 4
    assert labels.video_ids.tolist() == [
        "1-30-1280x720",
        "1-30-1280x720",
        "10-60-1280x720_right",
        "1-30-1280x720",
    ]
    assert labels.frames.tolist() == [0, 2, 1, 1]
    assert labels.frame_numbers.tolist() == [1, 3, 2, 2]
    assert labels.va.dtype == np.float32 and labels.va[0].tolist() == [0.5, -0.25]
    assert labels.va_mask.tolist() == [True, False, False, True]
    assert labels.expr.tolist() == [4, -1, 7, 0] and labels.expr_mask.tolist() == [
        True,
        False,
        True,
        True,
    ]
    assert labels.au.dtype == np.int8 and labels.au.shape == (4, 12)
    assert labels.au[0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert labels.au_mask.all(axis=1).tolist() == [True, False, True, True]
    assert labels.base_ids.tolist()[2] == "10-60-1280x720"
    assert labels.image_names()[2] == "10-60-1280x720_right/00002.jpg"
    groups = labels.by_video()
    assert list(groups) == ["1-30-1280x720", "10-60-1280x720_right"]
    assert groups["1-30-1280x720"].frames.tolist() == [0, 2, 1]
    assert groups["1-30-1280x720"].expr.tolist() == [4, -1, 0]
    assert groups["10-60-1280x720_right"].va.tolist() == [[-5.0, pytest.approx(0.1)]]


def test_mtl_abaw3_names(tmp_path: Path):
    train = write(tmp_path / "train_set.txt", MTL_HEADER + "\n" + "\n".join(MTL_ROWS) + "\n")
    write(tmp_path / "validation_set.txt", MTL_HEADER + "\n" + MTL_ROWS[0] + "\n")
    assert find_mtl_files(tmp_path) == {
        "train": train,
        "validation": tmp_path / "validation_set.txt",
    }
    check_mtl(read_mtl_file(train))


@pytest.mark.parametrize("name", ["training_set_annotations.txt", "validation_set_annotations.txt"])
def test_mtl_abaw4_abaw7_names_with_trailing_commas(tmp_path: Path, name: str):
    text = MTL_HEADER + ",\r\n" + "\r\n".join(row + "," for row in MTL_ROWS) + "\r\n"
    path = write(tmp_path / name, text)
    assert list(find_mtl_files(tmp_path).values()) == [path]
    check_mtl(read_mtl_file(path))


def test_mtl_row_with_15_fields(tmp_path: Path):
    short = "1-30-1280x720/00004.jpg,0.5,-0.25,4,1,0,0,1,0,0,1,0,0,0,1"
    path = write(tmp_path / "train_set.txt", "\n".join([MTL_HEADER, *MTL_ROWS, short]) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_mtl_file(path)
    assert message(e) == (
        f"{path}, line 6: expected 16 comma-separated fields "
        "(image,valence,arousal,expression,AU1,…,AU26), got 15"
    )
    # A trailing comma does not make a 15-field row acceptable.
    path = write(tmp_path / "b.txt", f"{MTL_HEADER}\n{short},\n")
    with pytest.raises(AnnotationError, match="line 2: expected 16 .* got 15$"):
        read_mtl_file(path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "a/00001.jpg,0.5,-0.25,8,1,0,0,1,0,0,1,0,0,0,1,0",
            'expected an integer in 0..7 or -1 for expression, got "8"',
        ),
        (
            "a/00001.jpg,0.5,-7,1,1,0,0,1,0,0,1,0,0,0,1,0",
            'expected a number in [-1, 1] or -5 for arousal, got "-7"',
        ),
        (
            "a/00001.jpg,0.5,-0.25,1,1,0,0,1,0,0,1,0,0,0,1,2",
            'expected 0, 1 or -1 for AU26, got "2"',
        ),
        (
            "a/1.png.jpg,0.5,-0.25,1,1,0,0,1,0,0,1,0,0,0,1,0",
            'expected <video>/<NNNNN>.jpg, got "a/1.png.jpg"',
        ),
        (
            "a/00000.jpg,0.5,-0.25,1,1,0,0,1,0,0,1,0,0,0,1,0",
            'image "a/00000.jpg": frame numbers start at 00001',
        ),
    ],
)
def test_mtl_bad_values(tmp_path: Path, row: str, expected: str):
    path = write(tmp_path / "train_set.txt", "\n".join([MTL_HEADER, MTL_ROWS[0], row]) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_mtl_file(path)
    assert message(e) == f"{path}, line 3: {expected}"


def test_mtl_header_and_duplicates(tmp_path: Path):
    path = write(tmp_path / "a.txt", f"{EXPR8_HEADER}\n1\n")
    with pytest.raises(AnnotationError) as e:
        read_mtl_file(path)
    assert message(e) == (
        f'{path}, line 1: header "{EXPR8_HEADER}" is a per-video EXPR, 8 classes (ABAW3+) '
        "header, not the MTL header (read it with read_video_labels)"
    )
    path = write(tmp_path / "b.txt", "image,va\n")
    with pytest.raises(AnnotationError) as e:
        read_mtl_file(path)
    assert message(e) == f'{path}, line 1: header "image,va" is not the MTL header "{MTL_HEADER}"'
    path = write(tmp_path / "c.txt", "\n".join([MTL_HEADER, *MTL_ROWS, MTL_ROWS[1]]) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_mtl_file(path)
    assert message(e) == f"{path}, line 6: image 1-30-1280x720/00003.jpg repeats line 3"
    path = write(tmp_path / "d.txt", MTL_HEADER + "\n")
    with pytest.raises(AnnotationError, match="line 1: header only, no rows"):
        read_mtl_file(path)
    assert len(read_mtl_file(path, allow_empty=True).by_video()) == 0


# --- speech-emotion corpora ------------------------------------------------------------------

EXPR_OF_WORD = {
    "anger": "Anger",
    "angry": "Anger",
    "boredom": "Other",
    "disgust": "Disgust",
    "fear": "Fear",
    "fearful": "Fear",
    "happiness": "Happiness",
    "happy": "Happiness",
    "sadness": "Sadness",
    "sad": "Sadness",
    "neutral": "Neutral",
    "calm": "Neutral",
    "surprised": "Surprise",
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"no rows in {path}"
    return rows


def test_emodb_mapping_on_the_real_label_table(shared_data: Path):
    rows = read_csv(shared_data / "audio" / "emodb" / "labels.csv")
    assert len(rows) == 535
    counts = Counter()
    for row in rows:
        assert row["file"][5] == row["emotion_code"]  # the letter in the name is the table's
        label = emodb_label(row["file"])
        assert EXPR_8.names[label] == EXPR_OF_WORD[row["emotion"]], row["file"]
        assert emodb_label(Path("flac") / row["file"].replace(".wav", ".flac")) == label
        counts[EXPR_8.names[label]] += 1
    assert counts == {
        "Anger": 127,
        "Other": 81,
        "Neutral": 79,
        "Happiness": 71,
        "Fear": 69,
        "Sadness": 62,
        "Disgust": 46,
    }
    # The letters that copies elsewhere get wrong.
    assert [emodb_label(n) for n in ("03a01Fa.wav", "03a01Aa.wav", "03a01Ea.wav")] == [4, 3, 2]


def test_ravdess_mapping_on_the_real_label_tables(shared_data: Path):
    av = read_csv(shared_data / "video" / "ravdess_av_actor05" / "labels_from_filename.csv")
    speech = read_csv(shared_data / "audio" / "ravdess_speech" / "labels_from_filename.csv")
    assert len(av) == 14 and len(speech) == 120
    for row in [*av, *speech]:
        assert EXPR_8.names[ravdess_label(row["file"])] == EXPR_OF_WORD[row["emotion"]], row
    assert Counter(EXPR_8.names[ravdess_label(r["file"])] for r in speech)["Neutral"] == 24
    assert ravdess_label("01-01-02-01-01-01-05.mp4") == 0  # calm → Neutral


def test_corpus_names_that_do_not_parse():
    with pytest.raises(AnnotationError) as e:
        emodb_label("03a01Xa.wav")
    assert message(e) == (
        "03a01Xa.wav: not an EmoDB file name (expected e.g. 03a01Fa.wav: speaker, text a01-b10, "
        "emotion letter W L E A F T or N, version letter)"
    )
    with pytest.raises(AnnotationError) as e:
        ravdess_label(os.path.join("Actor_01", "03-01-09-01-01-01-01.wav"))
    assert message(e) == (
        "03-01-09-01-01-01-01.wav: not a RAVDESS file name (expected seven 2-digit fields like "
        "03-01-05-02-01-01-12.wav, the third an emotion code 01-08)"
    )
