"""Image-level training on labelled frames: Aff-Wild2-style frame folders and video face crops.

There is no Aff-Wild2 here, so the corpus is made the way the organisers made theirs, from real
RAVDESS clips (actor 05, one face): 1 s of each clip (30 frames) with ~5 frames blacked out by
ffmpeg (real frames without a face), ``extract --modalities faces`` on them (RetinaFace, real
weights), then the 5-point template crop at 112 px of every frame with a face written as
``cropped_aligned/<video>/00001.jpg`` (no file where no face was found, as in Aff-Wild2).

EXPR labels are real: the clip's emotion from its RAVDESS file name, mapped to the ABAW classes
(:func:`~mmaffect.annotations.ravdess_label`). AU and VA labels are synthetic (made up per frame
from a seeded generator): they test the plumbing of those heads (sentinels, shapes), not
what a model learns from them.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import nonempty, run_ffmpeg

from mmaffect.annotations import (
    AU_12,
    EXPR_8,
    VA,
    VideoLabels,
    ravdess_label,
    read_mtl_file,
    read_split_folders,
    write_video_labels,
)
from mmaffect.errors import InputError
from mmaffect.faces.crops import FaceCrop
from mmaffect.training.crops import ImageDataset, frame_folder_crops, video_crops
from mmaffect.training.train import TrainConfig, train

#: RAVDESS actor 05: neutral, happy, surprised (train) and sad (validation).
TRAIN = ("01-01-01-01-02-01-05", "01-01-03-01-01-02-05", "01-01-08-01-02-01-05")
VAL = ("01-01-04-01-01-01-05",)
LABELLED = 28  # label lines per video: the last 2 frames have none
UNKNOWN = 2  # the first 2 label lines are all sentinels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cut_clip(src: Path, dest: Path) -> Path:
    """1 s of a real clip at 640 px wide, frames 0.30-0.45 s blacked out (no face there)."""
    black = "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,0.3,0.45)'"
    run_ffmpeg(
        "-ss", "1.0", "-t", "1.0", "-i", str(src), "-an", "-vf", f"scale=640:-2,{black}",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(dest),
    )  # fmt: skip
    return dest


def _faces_entry(cache: Path, vid: str) -> Path:
    return nonempty(sorted((cache / vid).glob("faces-*")), f"faces entry of {vid}")[0]


def _write_organiser_crops(clip: Path, entry: Path, folder: Path) -> None:
    """Template crops at 112 px of the frames with a face: ``<folder>/00001.jpg`` …"""
    from PIL import Image

    from mmaffect.media.frames import iter_frames

    found = np.load(entry / "found.npy")
    boxes, lms = np.load(entry / "box.npy"), np.load(entry / "landmarks.npy")
    folder.mkdir(parents=True)
    for chunk in iter_frames(clip, chunk_size=16):
        local = np.flatnonzero(found[chunk.indices])
        f = chunk.indices[local]
        crops = FaceCrop("template", 1.0).cut(chunk.images, boxes[f], lms[f], local, 112)
        for frame, crop in zip(f.tolist(), crops, strict=True):
            Image.fromarray(crop).save(folder / f"{frame + 1:05d}.jpg", quality=95)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data, models_dir) -> dict[str, Path]:
    """Clips, their faces in a feature cache, the organiser-style frame folders, EXPR labels."""
    import mmaffect

    root = tmp_path_factory.mktemp("image_corpus")
    ravdess = shared_data / "video" / "ravdess_av_actor05"
    (root / "clips").mkdir()
    for vid in TRAIN + VAL:
        _cut_clip(
            nonempty([ravdess / f"{vid}.mp4"], "RAVDESS clip")[0], root / "clips" / f"{vid}.mp4"
        )
    report = mmaffect.extract(
        [root / "clips"], cache=root / "features", modalities="faces", models_dir=models_dir,
        progress=False,
    )  # fmt: skip
    assert report.exit_code == 0 and len(report.batch.ok) == len(TRAIN + VAL), report.batch.failed
    for vid in TRAIN + VAL:
        entry = _faces_entry(root / "features", vid)
        _write_organiser_crops(root / "clips" / f"{vid}.mp4", entry, root / "cropped_aligned" / vid)
    for split, vids in (("Train_Set", TRAIN), ("Validation_Set", VAL)):
        for vid in vids:
            expr = np.full(LABELLED, ravdess_label(f"{vid}.mp4"))
            expr[:UNKNOWN] = -1
            lab = VideoLabels.from_values(vid, EXPR_8, expr)
            write_video_labels(root / "EXPR" / split / f"{vid}.txt", lab)
    return root


def _labelled_with_image(corpus: Path, vids: tuple[str, ...], stride: int = 1) -> int:
    """Label lines UNKNOWN+1 … LABELLED whose frame has a file, every ``stride``-th."""
    total = 0
    for vid in vids:
        have = [
            f
            for f in range(UNKNOWN, LABELLED)
            if (corpus / "cropped_aligned" / vid / f"{f + 1:05d}.jpg").is_file()
        ]
        total += len(have[::stride])
    return total


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _epoch_losses(run: Path) -> dict[int, float]:
    return {int(r["epoch"]): float(r["train/loss"]) for r in _metrics(run) if r.get("train/loss")}


def _cli(args: list):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _recipe(tmp_path: Path) -> Path:
    """mini-Xception from its FER2013 weights at 48 px, no augmentation: a tiny set is fit."""
    recipe = {
        "model": "face_cnn", "modalities": ["image"], "task": "expr", "batch_size": 16,
        "lr": 0.003, "optimizer": {"name": "adamw", "weight_decay": 0.0},
        "scheduler": {"name": "none"},
        "model_hparams": {"backbone": "mini_xception", "input_size": 48, "augment": {"off": True}},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_frame_folders_train_resume_and_reuse_the_cache(corpus, models_dir, tmp_path):
    run = tmp_path / "run"
    common = [
        "train", "--config", _recipe(tmp_path), "--annotations", corpus / "EXPR",
        "--frames", corpus / "cropped_aligned", "--out", run, "--models-dir", models_dir,
    ]  # fmt: skip
    res = _cli([*common, "--epochs", "3"])
    assert res.exit_code == 0, res.output
    crops = nonempty(sorted((run / "crops").glob("train-frames-*")), "train crop cache")[0]
    n_train = _labelled_with_image(corpus, TRAIN)
    assert f"train: {n_train} face crops of 3 video(s)" in res.output
    assert f"{3 * UNKNOWN} all labels unknown" in res.output
    images = np.load(crops / "images.npy", mmap_mode="r")
    assert images.shape == (n_train, 48, 48, 3)  # stored at the model's side (< 112)
    hp = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["model_hparams"]["crop"] == {"kind": "template", "scale": 1.0}
    losses = _epoch_losses(run)
    assert sorted(losses) == [0, 1, 2] and losses[2] < losses[0], losses  # it learns
    before = (crops / "images.npy").stat()
    res = _cli([*common, "--epochs", "4"])
    assert res.exit_code == 0, res.output
    assert "resuming from" in res.output and "epoch 4/4" in res.output
    assert "epoch 1/4" not in res.output and "reading" not in res.output  # no re-decode
    after = (crops / "images.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(_epoch_losses(run)) == [0, 1, 2, 3]


def test_frame_folder_cache_follows_its_labels_and_files(corpus, tmp_path):
    frames = tmp_path / "cropped_aligned"
    shutil.copytree(corpus / "cropped_aligned", frames)
    shutil.copytree(corpus / "EXPR", tmp_path / "EXPR")

    def build(**kw):
        labels = read_split_folders(tmp_path / "EXPR", track="EXPR")["train"]
        return frame_folder_crops(frames, labels, tmp_path / "crops", 64, **kw)

    crops = build()
    assert len(crops) == _labelled_with_image(corpus, TRAIN)
    vid = TRAIN[1]
    rows = [i for i, g in enumerate(crops.ids) if g == vid]
    assert set(crops.expr[rows].tolist()) == {EXPR_8.names.index("Happiness")}
    assert crops.names[rows[0]] == f"{vid}/{crops.frames[rows[0]] + 1:05d}.jpg"
    ino = (crops.path / "images.npy").stat().st_ino
    assert (build().path / "images.npy").stat().st_ino == ino  # the cache is used
    strided = build(stride=2)
    assert strided.path != crops.path and len(strided) == _labelled_with_image(corpus, TRAIN, 2)
    # A changed label file: the same cache folder is rebuilt.
    frame = int(crops.frames[rows[-1]])  # labelled, with an image
    label = tmp_path / "EXPR" / "Train_Set" / f"{vid}.txt"
    lines = label.read_text().splitlines()
    lines[1 + frame] = "-1"
    label.write_text("\n".join(lines) + "\n")
    changed = build()
    assert changed.path == crops.path and (changed.path / "images.npy").stat().st_ino != ino
    assert (
        len(changed) == len(crops) - 1 and frame not in changed.frames[np.array(changed.ids) == vid]
    )
    # A damaged frame file: rebuilt, the frame left out and counted.
    victim = frames / vid / changed.names[rows[0]].split("/")[1]
    victim.write_bytes(b"not a jpeg")
    damaged = build()
    assert damaged.skipped["unreadable"] == 1 and "1 unreadable" in damaged.describe()
    assert len(ImageDataset(damaged)) == len(changed) - 1
    # A labelled video without its frame folder is named.
    shutil.rmtree(frames / TRAIN[0])
    with pytest.raises(InputError, match=rf"no frame folder for 1 labelled video\(s\): {TRAIN[0]}"):
        build()


def _synthetic_au_va(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Made-up AU (0/1) and VA ([-1, 1]) labels: plumbing only (see the module docstring)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(n, AU_12.size)), rng.uniform(-1, 1, (n, 2)).round(3)


def test_au_and_va_folders_keep_their_values_and_sentinels(corpus, tmp_path):
    for i, vid in enumerate(TRAIN + VAL):
        split = "Train_Set" if vid in TRAIN else "Validation_Set"
        au, va = _synthetic_au_va(LABELLED, i)
        au[:3] = -1  # frames 0-2: no AU label
        va[5] = -5  # frame 5: no VA label
        write_video_labels(
            tmp_path / "AU" / split / f"{vid}.txt", VideoLabels.from_values(vid, AU_12, au)
        )
        write_video_labels(
            tmp_path / "VA" / split / f"{vid}.txt", VideoLabels.from_values(vid, VA, va)
        )
    frames = corpus / "cropped_aligned"
    au_labels = read_split_folders(tmp_path / "AU", track="AU")["train"]
    au_crops = frame_folder_crops(frames, au_labels, tmp_path / "crops", 48, name="au")
    va_labels = read_split_folders(tmp_path / "VA", track="VA")["train"]
    va_crops = frame_folder_crops(frames, va_labels, tmp_path / "crops", 48, name="va")
    for crops, labels in ((au_crops, au_labels), (va_crops, va_labels)):
        for i in range(len(crops)):
            lab = labels[crops.ids[i]]
            f = int(crops.frames[i])
            assert lab.mask[f].all() and (crops.frames[i] >= 3 or crops is va_crops)
            got = crops.au[i] if crops is au_crops else crops.va[i]
            np.testing.assert_allclose(got, lab.values[f])
        assert (crops.expr == -1).all()
    assert (au_crops.va == -5).all() and (va_crops.au == -1).all()
    assert 5 not in va_crops.frames[np.array(va_crops.ids) == TRAIN[0]]


def test_mtl_split_files_train_with_sentinels_and_balanced_sampling(corpus, models_dir, tmp_path):
    (tmp_path / "MTL").mkdir()
    kept = 0
    for name, vids in (("train_set.txt", TRAIN), ("validation_set.txt", VAL)):
        rows = ["image,valence,arousal,expression,aus"]
        for i, vid in enumerate(vids):
            au, va = _synthetic_au_va(LABELLED, 10 + i)
            for f in range(0, LABELLED, 2):  # the organisers' MTL rows sample the frames
                expr = ravdess_label(f"{vid}.mp4")
                aus = ",".join(map(str, au[f]))
                v, a = va[f]
                if f < 4:  # all sentinels: not used
                    expr, aus, v, a = -1, ",".join(["-1"] * AU_12.size), -5, -5
                elif f % 4 == 2:  # an expression only
                    aus, v, a = ",".join(["-1"] * AU_12.size), -5, -5
                rows.append(f"{vid}/{f + 1:05d}.jpg,{v},{a},{expr},{aus}")
                has_file = (corpus / "cropped_aligned" / vid / f"{f + 1:05d}.jpg").is_file()
                kept += name == "train_set.txt" and f >= 4 and has_file
        (tmp_path / "MTL" / name).write_text("\n".join(rows) + "\n")
    mtl = read_mtl_file(tmp_path / "MTL" / "train_set.txt")
    crops = frame_folder_crops(corpus / "cropped_aligned", mtl, tmp_path / "crops", 48)
    assert len(crops) == kept
    only_expr = crops.frames % 4 == 2
    assert (crops.au[only_expr] == -1).all() and (crops.va[only_expr] == -5).all()
    assert (crops.au[~only_expr] >= 0).all() and (crops.expr >= 0).all()
    config = TrainConfig(
        task="mtl", annotations=str(tmp_path / "MTL"), frames=str(corpus / "cropped_aligned"),
        model="face_cnn", modalities=["image"], batch_size=16, epochs=1, balanced=True,
        model_hparams={"backbone": "mini_xception", "input_size": 48},
        out=str(tmp_path / "run"), models_dir=str(models_dir), scheduler={"name": "none"},
    )  # fmt: skip
    result = train(config)
    assert result.last_checkpoint is not None and result.best_score is not None
    logged = {k for row in _metrics(tmp_path / "run") for k, v in row.items() if v}
    assert {"val/score", "train/loss", "train/loss_au", "train/loss_va"} <= logged, logged


def test_video_crops_train_on_labelled_frames_with_a_face(corpus, models_dir, tmp_path):
    run = tmp_path / "run"
    res = _cli([
        "train", "--config", _recipe(tmp_path), "--annotations", corpus / "EXPR",
        "--cache", corpus / "features", "--videos", corpus / "clips", "--epochs", "1",
        "--workers", "1", "--out", run, "--models-dir", models_dir,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    expected, no_face = 0, 0
    for vid in TRAIN:
        found = np.load(_faces_entry(corpus / "features", vid) / "found.npy")[UNKNOWN:LABELLED]
        expected, no_face = expected + int(found.sum()), no_face + int((~found).sum())
    assert no_face > 0  # the blacked-out frames
    assert f"train: {expected} face crops of 3 video(s)" in res.output
    assert f"{no_face} no face" in res.output
    crops = nonempty(sorted((run / "crops").glob("train-videos-*")), "train crop cache")[0]
    assert np.load(crops / "images.npy", mmap_mode="r").shape == (expected, 48, 48, 3)
    meta = json.loads((crops / "meta.json").read_text())
    assert meta["crop"] == {"kind": "box", "scale": 1.0} and meta["skipped"]["no face"] == no_face
    hp = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["model_hparams"]["crop"] == {"kind": "box", "scale": 1.0}
    # The crops are the faces: the box crop of the middle row matches a fresh cut of that frame.
    from mmaffect.media.frames import iter_frames

    entry = _faces_entry(corpus / "features", TRAIN[0])
    frame = int(np.load(crops / "labels.npz")["frames"][3])
    image = next(c for c in iter_frames(corpus / "clips" / f"{TRAIN[0]}.mp4") if frame in c.indices)
    k = int(np.flatnonzero(image.indices == frame)[0])
    cut = FaceCrop("box", 1.0).cut(
        image.images,
        np.load(entry / "box.npy")[[frame]],
        np.load(entry / "landmarks.npy")[[frame]],
        np.array([k]),
        48,
    )
    np.testing.assert_array_equal(np.load(crops / "images.npy")[3], cut[0])


def test_video_crops_find_the_recorded_video_or_say_where_to_look(corpus, tmp_path):
    labels = read_split_folders(corpus / "EXPR", track="EXPR")["validation"]
    crop = FaceCrop("template", 1.2)
    crops = video_crops(corpus / "features", labels, tmp_path / "crops", 56, crop)  # meta source
    assert crops.images.shape[1:] == (56, 56, 3) and crops.groups == list(VAL)
    empty = tmp_path / "elsewhere"
    (empty / "sub").mkdir(parents=True)
    shutil.copy(corpus / "clips" / f"{TRAIN[0]}.mp4", empty / "sub")
    with pytest.raises(InputError, match=rf"{VAL[0]}: no video of that name in {empty}"):
        video_crops(corpus / "features", labels, tmp_path / "crops", 56, crop, videos=empty)
    shutil.copy(corpus / "clips" / f"{TRAIN[0]}.mp4", empty / "sub" / f"{VAL[0]}.mp4")
    with pytest.raises(InputError, match=r"is not the video its faces were found in"):
        video_crops(corpus / "features", labels, tmp_path / "crops", 56, crop, videos=empty)


def test_labels_without_images_are_refused_before_writing(corpus, tmp_path):
    config = TrainConfig(
        task="expr", annotations=str(corpus / "EXPR"), model="face_cnn", modalities=["image"],
        model_hparams={"backbone": "mini_xception", "input_size": 48}, out=str(tmp_path / "run"),
    )  # fmt: skip
    with pytest.raises(InputError, match="image-level training needs face images and their labels"):
        train(config)
    assert not (tmp_path / "run").exists()
