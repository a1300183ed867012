"""The seed image models (DAN, hybrid CNN-Transformer) on real faces: they train through
``mmaffect train`` (FER2013 class folders, Aff-Wild2-style frame folders and video crops of
real RAVDESS clips), resume, and predict a real clip through ``predict --checkpoint``.

Small settings throughout (mini-Xception from its FER2013 weights at 48 px, narrow attention
and Transformer widths, a few faces per class): what is tested is that each model trains,
resumes and serves every consumer of an image model, not what it learns.
"""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are parameters here

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, run_ffmpeg
from test_face_model import _fer_subset
from test_image_training import TRAIN, VAL, corpus  # noqa: F401 - fixtures

from mmaffect.annotations import AU_12, VideoLabels, write_video_labels
from mmaffect.models import create_model
from mmaffect.training.module import AffectModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Each model's small settings and the losses of its paper.
MODELS = {
    "dan": (
        {"backbone": "mini_xception", "input_size": 48, "attention_dim": 32, "num_heads": 2},
        {"expr": "focal", "va": "ccc"},
    ),
    "hybrid_cnn_transformer": (
        {"backbone": "mini_xception", "input_size": 48, "d_model": 32, "num_heads": 2},
        {"expr": "ce", "au": "weighted_bce", "va": "ccc"},
    ),
}


def _cli(args: list):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _recipe(path: Path, name: str, task: str = "expr") -> Path:
    hparams, losses = MODELS[name]
    recipe = {
        "model": name, "modalities": ["image"], "task": task, "batch_size": 16, "lr": 0.001,
        "optimizer": {"name": "adamw", "weight_decay": 0.0}, "scheduler": {"name": "none"},
        "model_hparams": {**hparams, "augment": {"off": True}}, "losses": losses,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "logs" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fer(tmp_path_factory, shared_data) -> Path:
    """3 real FER2013 training faces and 2 PublicTest faces of each of the 7 classes."""
    root = tmp_path_factory.mktemp("fer_small")
    _fer_subset(shared_data, root / "train", "train", 3)
    _fer_subset(shared_data, root / "val", "publictest", 2)
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory, shared_data) -> Path:
    """0.5 s of a real RAVDESS clip (happy), 480 px wide."""
    src = shared_data / "video" / "ravdess_av_actor05" / "01-01-03-01-01-02-05.mp4"
    dest = tmp_path_factory.mktemp("clip") / "happy.mp4"
    run_ffmpeg("-ss", "1.2", "-t", "0.5", "-i", str(src), "-an", "-vf", "scale=480:-2", str(dest))
    return dest


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seed_image_model_trains_on_faces_resumes_and_predicts(
    name, fer, clip, models_dir, tmp_path
):
    from mmaffect.predict import load_prediction

    run = tmp_path / "run"
    common = [
        "train", "--config", _recipe(tmp_path / "recipe.yaml", name), "--images", fer / "train",
        "--val-images", fer / "val", "--out", run, "--models-dir", models_dir,
    ]  # fmt: skip
    res = _cli([*common, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert hp["model_name"] == name and hp["modalities"] == ["image"]
    assert hp["model_hparams"]["crop"] == {"kind": "box", "scale": 1.0}
    assert hp["losses"]["expr"] == MODELS[name][1]["expr"]
    res = _cli([*common, "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "resuming from" in res.output and "epoch 2/2" in res.output
    assert not any(line.startswith("epoch 1/2") for line in res.output.splitlines())
    logged = {k for row in _metrics(run) for k, v in row.items() if v}
    if name == "dan":  # its own loss terms beside the focal loss
        assert {"train/loss_affinity", "train/loss_partition", "train/loss_expr"} <= logged
    out = tmp_path / "pred"
    res = _cli([
        "predict", clip, "--checkpoint", run / "last.ckpt", "--out", out, "--no-words",
        "--no-progress", "--models-dir", models_dir,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    pred = load_prediction(out / "predictions" / f"{clip.stem}.npz")
    assert pred.face_found.all() and pred.expr_probs.shape == (len(pred), 8)
    np.testing.assert_allclose(pred.expr_probs.sum(1), 1.0, atol=1e-4)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["predictor"]["model"] == name
    # predict read the outputs the model wrote into the frame entry (extract --frame-model)
    (frame,) = (out / "cache").glob(f"{clip.stem}/frame-*")
    np.testing.assert_allclose(pred.expr_probs, np.load(frame / "out_expr.npy"), atol=1e-5)
    width = np.load(frame / "values.npy").shape[1]
    assert width == create_model(name, **hp["model_hparams"]).feature_dim


def test_dan_trains_on_video_crops(corpus, models_dir, tmp_path):
    run = tmp_path / "run"
    res = _cli([
        "train", "--config", _recipe(tmp_path / "recipe.yaml", "dan"), "--annotations",
        corpus / "EXPR", "--cache", corpus / "features", "--videos", corpus / "clips",
        "--epochs", "1", "--out", run, "--models-dir", models_dir,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "face crops of 3 video(s)" in res.output
    hp = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["model_name"] == "dan"
    assert hp["model_hparams"]["crop"] == {"kind": "box", "scale": 1.0}


def test_hybrid_trains_au_on_frame_folders_with_weighted_bce(corpus, models_dir, tmp_path):
    rng = np.random.default_rng(3)
    for vid in TRAIN + VAL:  # made-up AU labels (plumbing: see test_image_training)
        split = "Train_Set" if vid in TRAIN else "Validation_Set"
        au = (rng.random((28, AU_12.size)) < np.linspace(0.1, 0.6, AU_12.size)).astype(int)
        write_video_labels(
            tmp_path / "AU" / split / f"{vid}.txt", VideoLabels.from_values(vid, AU_12, au)
        )
    run = tmp_path / "run"
    res = _cli([
        "train", "--config", _recipe(tmp_path / "recipe.yaml", "hybrid_cnn_transformer", "au"),
        "--annotations", tmp_path / "AU", "--frames", corpus / "cropped_aligned", "--epochs", "1",
        "--out", run, "--models-dir", models_dir,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    module = AffectModule.load_from_checkpoint(run / "last.ckpt", map_location="cpu")
    assert module.hparams["model_hparams"]["crop"] == {"kind": "template", "scale": 1.0}
    weights = np.array(module.hparams["au_weights"])
    assert weights.shape == (12,) and weights[0] > weights[-1] > 0  # rarer AU, larger weight
    assert module._loss_fns["au"].keywords["pos_weight"].tolist() == pytest.approx(weights)


@pytest.mark.parametrize("recipe", ["dan_expr.yaml", "hybrid_cnn_transformer_mtl.yaml"])
def test_seed_recipes_build_their_model_losses_and_schedule(recipe):
    from mmaffect.training.module import LOSSES
    from mmaffect.training.train import TrainConfig

    cfg = TrainConfig.from_yaml(Path(__file__).parents[1] / "pipelines" / recipe)
    au_weights = [1.0] * 12 if cfg.losses.get("au", "").startswith("weighted") else None
    module = AffectModule(
        model_name=cfg.model, model_hparams=cfg.model_hparams, task=cfg.task,
        modalities=cfg.modalities, edition=cfg.edition, losses=cfg.losses, au_weights=au_weights,
        optimizer={**cfg.optimizer, "lr": cfg.lr}, scheduler=cfg.scheduler,
    )  # fmt: skip
    assert module.model.hparams["modalities"] == ["image"]
    for head in module.heads:
        fn, named = module._loss_fns[head], LOSSES[head][cfg.losses[head]]
        assert fn is named or fn.func is getattr(named, "func", named)


def test_dan_affinity_and_partition_losses_follow_their_formulas():
    from mmaffect.losses import affinity_loss, partition_loss

    torch.manual_seed(0)
    feats, centers = torch.randn(5, 4), torch.randn(3, 4)
    target = torch.tensor([0, 2, -1, 1, 2])  # one sample without an expression label
    keep = target >= 0
    expected = ((feats[keep] - centers[target[keep]]) ** 2).sum(1).mean() / centers.var(0).sum()
    torch.testing.assert_close(affinity_loss(feats, target, centers), expected)
    heads = torch.randn(6, 3, 8)
    expected = torch.log(1 + 3 / heads.var(dim=1).mean())
    torch.testing.assert_close(partition_loss(heads), expected)
    apart = partition_loss(heads * 10)  # heads further apart: a smaller loss
    assert apart < partition_loss(heads) and partition_loss(heads[:, :1]) == 0


def test_dan_takes_its_recipes_learning_rate_on_real_faces(shared_data):
    """The authors' BatchNorm1d on the expression logits (LogitNorm) keeps SGD at the recipe's
    lr 0.1 in hand: without it the focal loss started near 30 and was NaN within a few steps."""
    import cv2

    root = shared_data / "images" / "fer2013" / "train"
    files = [f for c in sorted(root.iterdir()) for f in sorted(c.glob("*.jpg"))[:12]]
    classes = {c.name: i for i, c in enumerate(sorted(root.iterdir()))}
    images = np.stack([cv2.imread(str(f)) for f in files])  # (N, 48, 48, 3) uint8
    batch = {
        "feat_image": torch.from_numpy(images),
        "expr": torch.tensor([classes[f.parent.name] for f in files]),
    }
    torch.manual_seed(0)
    recipe = yaml.safe_load((REPO / "pipelines" / "dan_expr.yaml").read_text())
    hp = {**recipe["model_hparams"], "input_size": 32}
    module = AffectModule(model_name="dan", model_hparams=hp, task="expr",
                          modalities=["image"], losses={"expr": "focal"})  # fmt: skip
    opt = torch.optim.SGD(module.parameters(), lr=recipe["lr"], momentum=0.9, weight_decay=1e-4)
    module.train()
    losses = []
    for _ in range(6):
        loss = torch.stack(list(module.loss_terms(module(batch), batch).values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all(), losses
    assert losses[0] < 5 and max(losses) < 8, losses
    # one face in a training batch: normalised with the running statistics, not refused
    one = {"feat_image": batch["feat_image"][:1], "expr": batch["expr"][:1]}
    assert torch.isfinite(module(one)["expr"]).all()
