"""The face model (`face_cnn`), its backbones, crops and image-level training on real faces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import nonempty

from mmaffect.errors import InputError
from mmaffect.faces.align import align_faces
from mmaffect.faces.crops import FaceCrop
from mmaffect.models import create_model
from mmaffect.models.face_cnn import FaceAugment
from mmaffect.nets.registry import BACKBONES, load_pretrained
from mmaffect.training.crops import ImageDataset, class_folder_crops

FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _fer_subset(shared_data: Path, dest: Path, split: str, per_class: int) -> Path:
    """A class-folder corpus of the first ``per_class`` real FER2013 faces of each class."""
    root = shared_data / "images" / "fer2013" / split
    for cls in FER_CLASSES:
        files = nonempty(sorted((root / cls).glob("*.jpg"))[:per_class], f"FER2013 {cls}")
        (dest / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, dest / cls / f.name)
    return dest


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_trains_and_embeds(name, models_dir):
    model = create_model("face_cnn", backbone=name, input_size=48, tasks=["expr", "va"])
    starts = load_pretrained(model.backbone, name, models_dir)
    assert starts == (BACKBONES[name].pretrained is not None)
    x = torch.randint(0, 256, (3, 60, 50, 3), dtype=torch.uint8)  # any crop size is resized
    model.train()
    out = model({"image": x})
    assert out["expr"].shape == (3, 8) and out["va"].shape == (3, 2)
    out["expr"].sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    model.eval()
    feats, probs = model.embed(x, flip=False)
    assert feats.shape == (3, BACKBONES[name].dim)
    torch.testing.assert_close(probs["expr"].sum(-1), torch.ones(3))


def test_flip_averaging_is_the_mean_of_the_image_and_its_mirror(models_dir):
    model = create_model("face_cnn", backbone="mini_xception", input_size=64).eval()
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    f1, _ = model.embed(x, flip=False)
    f2, _ = model.embed(torch.flip(x, dims=[2]), flip=False)
    both, _ = model.embed(x, flip=True)
    torch.testing.assert_close(both, (f1 + f2) / 2, rtol=1e-4, atol=1e-5)


def test_augment_flip_alone_mirrors_the_batch():
    x = torch.randn(4, 3, 16, 16)
    off = dict(rotate=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(FaceAugment(flip=1.0, **off)(x), torch.flip(x, dims=[-1]))
    torch.testing.assert_close(FaceAugment(flip=0.0, **off)(x), x)
    with pytest.raises(InputError, match="unknown augmentation blur"):
        FaceAugment(blur=1.0)


def test_crops_box_and_template():
    frame = np.zeros((1, 200, 300, 3), np.uint8)
    frame[0, 50:150, 100:200] = 200  # a bright 100x100 square "face"
    box = np.array([[100, 50, 200, 150]], np.float64)
    crop = FaceCrop("box", 1.0).cut(frame, box, np.zeros((1, 5, 2)), np.array([0]), 50)
    assert crop.shape == (1, 50, 50, 3) and crop[0, 2:-2, 2:-2].min() == 200  # the box fills it
    wide = FaceCrop("box", 2.0).cut(frame, box, np.zeros((1, 5, 2)), np.array([0]), 50)
    assert wide[0, 25, 25, 0] == 200 and wide[0, 2, 2, 0] == 0  # the box is the middle half
    lms = np.array([[[120, 80], [180, 80], [150, 110], [125, 135], [175, 135]]], np.float64)
    plain = FaceCrop("template", 1.0).cut(frame, box, lms, np.array([0]), 112)
    np.testing.assert_array_equal(plain, align_faces(frame, lms, 112))
    with pytest.raises(InputError, match="unknown crop kind 'circle'"):
        FaceCrop.from_dict({"kind": "circle"})


def test_box_crops_of_two_sizes_share_their_full_size_cut():
    # the extraction cuts the face model's 96-px and mini-Xception's 64-px crops from one
    # full-resolution cut: the same pixels as cutting each on its own
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 240, 320, 3), dtype=np.uint8)
    boxes = np.array([[100.3, 40.7, 231.9, 180.2], [10.0, 20.0, 60.0, 70.0]])
    lms, idx, crop = np.zeros((2, 5, 2)), np.array([0, 1]), FaceCrop("box", 1.0)
    natives: dict = {}
    shared = [crop.cut(frames, boxes, lms, idx, size, natives) for size in (96, 64)]
    alone = [crop.cut(frames, boxes, lms, idx, size) for size in (96, 64)]
    for a, b in zip(shared, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    assert list(natives[1.0]) == [0]  # the 132-px face was cut once; the 50-px one is enlarged


def test_class_folder_crops_are_cached_and_checked(shared_data, tmp_path):
    corpus = _fer_subset(shared_data, tmp_path / "fer", "train", 3)
    crops = class_folder_crops(corpus, tmp_path / "crops", size=96)
    assert crops.images.shape == (21, 48, 48, 3)  # stored at the images' side, not upsampled
    names = {"angry": 1, "disgust": 2, "fear": 3, "happy": 4, "neutral": 0, "sad": 5}
    for cls, index in {**names, "surprise": 6}.items():
        rows = [i for i, n in enumerate(crops.names) if n.startswith(f"{cls}/")]
        assert len(rows) == 3 and set(crops.expr[rows].tolist()) == {index}
    written = (crops.path / "images.npy").stat().st_mtime_ns
    again = class_folder_crops(corpus, tmp_path / "crops", size=96)
    assert (again.path / "images.npy").stat().st_mtime_ns == written  # read from the cache
    shutil.copy(next((corpus / "happy").glob("*.jpg")), corpus / "happy" / "extra.jpg")
    assert len(class_folder_crops(corpus, tmp_path / "crops", size=96)) == 22  # rebuilt
    item = ImageDataset(again)[0]
    assert item["feat_image"].dtype == torch.uint8 and item["va"].tolist() == [-5.0, -5.0]
    (corpus / "contempt").mkdir()
    with pytest.raises(InputError, match=r"class folder 'contempt' is not an ABAW expression"):
        class_folder_crops(corpus, tmp_path / "crops", size=96)


def _train_cmd(root: Path, models_dir: Path, epochs: int) -> list[str]:
    return [
        sys.executable, "-m", "mmaffect", "train", "--config", str(root / "recipe.yaml"),
        "--images", str(root / "train"), "--val-images", str(root / "val"),
        "--backbone", "mini_xception", "--input-size", "64", "--out", str(root / "run"),
        "--models-dir", str(models_dir), "--epochs", str(epochs),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def face_run(tmp_path_factory, shared_data, models_dir) -> Path:
    """A small expression model (mini-Xception from its FER2013 weights, 64 px) fine-tuned for
    four epochs on 84 real FER2013 faces, trained as a user runs it: its run folder."""
    import yaml

    root = tmp_path_factory.mktemp("face_model")
    _fer_subset(shared_data, root / "train", "train", 12)
    _fer_subset(shared_data, root / "val", "publictest", 4)
    recipe = yaml.safe_load(Path("pipelines/face_expr_fer2013.yaml").read_text())
    recipe.update(lr=0.001, batch_size=16)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = subprocess.run(_train_cmd(root, models_dir, 4), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "epoch 4/4" in res.stdout
    return root


@pytest.fixture(scope="module")
def face_checkpoint(face_run) -> Path:
    return face_run / "run" / "last.ckpt"


@pytest.mark.slow
def test_train_an_expression_model_on_real_faces_and_resume(face_run, models_dir):
    from mmaffect.training.module import AffectModule

    out = face_run / "run"
    ckpt = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert hp["model_name"] == "face_cnn" and hp["modalities"] == ["image"]
    assert hp["model_hparams"]["crop"] == {"kind": "box", "scale": 1.0}
    assert hp["model_hparams"]["backbone"] == "mini_xception" and ckpt["epoch"] == 3
    assert hp["label_names"]["expr"][0] == "Neutral"
    res = subprocess.run(_train_cmd(face_run, models_dir, 5), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "epoch 5/5" in res.stdout and "epoch 1/5" not in res.stdout  # resumed
    # From the FER2013 weights, five short epochs read the held-out faces above chance (1/7).
    module = AffectModule.load_from_checkpoint(out / "last.ckpt", map_location="cpu").eval()
    crops = class_folder_crops(face_run / "val", out / "crops", size=64)
    _, probs = module.model.embed(torch.from_numpy(np.array(crops.images)))
    accuracy = float((probs["expr"].argmax(-1).numpy() == crops.expr).mean())
    assert accuracy > 2 / 7, accuracy


@pytest.mark.slow
def test_face_model_as_frame_branch_expression_model_and_predictor(
    face_checkpoint, shared_data, models_dir, tmp_path
):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app
    from mmaffect.predict import load_prediction

    clip = shared_data / "video/ravdess_av_actor05/01-01-03-01-01-02-05.mp4"  # happy
    cache = tmp_path / "cache"
    args = ["extract", str(clip), "--cache", str(cache), "--modalities", "frame,clip"]
    res = CliRunner().invoke(app, [
        *args, "--frame-model", str(face_checkpoint), "--expression-model", str(face_checkpoint),
        "--no-progress", "--models-dir", str(models_dir),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    (frame,) = cache.glob(f"{clip.stem}/frame-*")
    meta = json.loads((frame / "meta.json").read_text())
    n = meta["timing"]["n_frames"]
    assert np.load(frame / "values.npy").shape == (n, 128)  # mini-Xception features: f_img
    probs = np.load(frame / "out_expr.npy")
    assert probs.shape == (n, 8) and meta["expr_names"][4] == "Happiness"
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert meta["config"]["model_sha256"] and meta["config"]["model"] == str(face_checkpoint)
    (clip_entry,) = cache.glob(f"{clip.stem}/clip-*")
    columns = json.loads((clip_entry / "meta.json").read_text())["columns"]
    assert columns[128:136] == [f"p_{c}" for c in meta["expr_names"]]
    np.testing.assert_allclose(  # the same model on the same crop in both branches
        np.load(clip_entry / "values.npy")[:, 128:136], probs, atol=1e-5
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "predict", str(clip), "--checkpoint", str(face_checkpoint), "--out", str(out),
        "--no-words", "--no-progress", "--models-dir", str(models_dir),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    pred = load_prediction(out / "predictions" / f"{clip.stem}.npz")
    assert len(pred) == n and pred.face_found.all()
    np.testing.assert_allclose(pred.expr_probs, probs, atol=1e-5)  # read from the frame entry
    run = json.loads((out / "run.json").read_text())
    assert run["predictor"]["crop"] == {"kind": "box", "scale": 1.0}
    lines = (out / "abaw3" / "EXPR" / f"{clip.stem}.txt").read_text().splitlines()
    assert len(lines) == n + 1


def test_export_keeps_the_model_and_drops_the_training_state(face_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app
    from mmaffect.features.face_model import FaceModel

    out = tmp_path / "small.ckpt"
    res = CliRunner().invoke(app, ["models", "export", str(face_checkpoint), str(out), "--half"])
    assert res.exit_code == 0, res.output
    small = torch.load(out, map_location="cpu", weights_only=False)
    assert "optimizer_states" not in small and "optimizer_states" in torch.load(
        face_checkpoint, map_location="cpu", weights_only=False
    )
    assert small["state_dict"]["model.heads.heads.expr.weight"].dtype == torch.float16
    assert out.stat().st_size < face_checkpoint.stat().st_size / 2
    faces = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8).numpy()
    feats, probs = FaceModel(face_checkpoint)(faces)
    feats_h, probs_h = FaceModel(out)(faces)
    np.testing.assert_allclose(probs_h["expr"], probs["expr"], atol=2e-3)
    np.testing.assert_allclose(feats_h, feats, atol=2e-2, rtol=1e-2)
    res = CliRunner().invoke(app, ["models", "export", str(tmp_path / "nope.ckpt"), str(out)])
    assert res.exit_code == 2
