"""``mmaffect ensemble``: trained checkpoints combined into one checkpoint whose outputs are the
weighted sum of the members' own outputs, for image members (real FER2013 faces, a real
RAVDESS clip through extract and predict) and for members over cached features."""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are parameters here

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_seed_image_models import clip, fer  # noqa: F401 - fixtures
from test_training import DIMS, config, data  # noqa: F401 - fixtures

from mmaffect.features.face_model import FaceModel
from mmaffect.training.crops import class_folder_crops
from mmaffect.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args: list):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _image_member(root: Path, fer: Path, models_dir: Path, name: str, **hparams) -> Path:
    """One epoch of an image model on the small FER2013 subset: its last checkpoint."""
    recipe = {
        "model": name, "modalities": ["image"], "task": "expr", "batch_size": 16, "lr": 0.001,
        "optimizer": {"name": "adamw"}, "scheduler": {"name": "none"}, "epochs": 1,
        "model_hparams": {"input_size": 48, "augment": {"off": True}, **hparams},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = _cli([
        "train", "--config", root / "recipe.yaml", "--images", fer / "train", "--val-images",
        fer / "val", "--out", root / "run", "--models-dir", models_dir,
        "--crop-cache", root.parent / "crops",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / "run" / "last.ckpt"


@pytest.fixture(scope="module")
def hybrids(tmp_path_factory, fer, models_dir) -> list[Path]:
    """The hybrid's two-backbone pair: mini-Xception (FER2013 weights) and ResNet-18."""
    root = tmp_path_factory.mktemp("hybrids")
    small = {"d_model": 32, "num_heads": 2}
    return [
        _image_member(root / b, fer, models_dir, "hybrid_cnn_transformer", backbone=b, **small)
        for b in ("mini_xception", "resnet18")
    ]


def test_image_ensemble_is_the_weighted_sum_of_its_members(
    hybrids,
    fer,
    clip,
    models_dir,
    tmp_path,
):
    out = tmp_path / "hybrid_ensemble.ckpt"
    res = _cli(["ensemble", *hybrids, "--val-images", fer / "val", "--out", out])
    assert res.exit_code == 0, res.output
    assert "expr: members" in res.output and f"ensemble of 2: {out}" in res.output
    hp = torch.load(out, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["model_name"] == "ensemble" and hp["modalities"] == ["image"]
    fitted = hp["model_hparams"]["fitted"]
    w = hp["model_hparams"]["weights"]["expr"]
    assert len(w) == 2 and sum(w) == pytest.approx(1.0) and fitted["samples"] == 14
    scores = fitted["scores"]["expr"]  # the grid holds each member alone: never worse
    assert scores["ensemble"] >= max(scores["members"])
    faces = np.array(class_folder_crops(fer / "val", tmp_path / "crops", 48).images)
    feats, probs = FaceModel(out)(faces)
    members = [FaceModel(p)(faces) for p in hybrids]
    expected = w[0] * members[0][1]["expr"] + w[1] * members[1][1]["expr"]
    np.testing.assert_allclose(probs["expr"], expected, atol=1e-5)
    np.testing.assert_allclose(feats, np.concatenate([m[0] for m in members], axis=1), atol=1e-5)
    # Through extract and predict on a real clip: the ensemble's frame entry holds the weighted
    # sum of what each member wrote into its own frame entry for the same faces.
    cache = tmp_path / "cache"
    for ckpt in hybrids:
        res = _cli([
            "extract", clip, "--cache", cache, "--modalities", "frame", "--frame-model", ckpt,
            "--no-progress", "--models-dir", models_dir,
        ])  # fmt: skip
        assert res.exit_code == 0, res.output
    pred_out = tmp_path / "pred"
    res = _cli([
        "predict", clip, "--checkpoint", out, "--out", pred_out, "--cache", cache,
        "--no-words", "--no-progress", "--models-dir", models_dir,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    outputs = {}
    for entry in cache.glob(f"{clip.stem}/frame-*"):
        meta = json.loads((entry / "meta.json").read_text())
        outputs[Path(meta["config"]["model"]).resolve()] = np.load(entry / "out_expr.npy")
    ens = outputs[out.resolve()]
    summed = sum(wk * outputs[p.resolve()] for wk, p in zip(w, hybrids, strict=True))
    np.testing.assert_allclose(ens, summed, atol=1e-5)
    assert json.loads((pred_out / "run.json").read_text())["predictor"]["model"] == "ensemble"


def test_equal_weights_without_validation_are_soft_voting(hybrids, tmp_path):
    out = tmp_path / "voted.ckpt"
    res = _cli(["ensemble", *hybrids, "--weighting", "equal", "--out", out])
    assert res.exit_code == 0, res.output
    hp = torch.load(out, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["model_hparams"]["weights"] == {"expr": [0.5, 0.5]}
    assert hp["model_hparams"]["fitted"] == {"weighting": "equal", "samples": 0, "scores": {}}


def test_window_ensemble_is_the_weighted_sum_of_its_members(data, tmp_path):
    from mmaffect.predict.compute import CheckpointPredictor
    from mmaffect.training.ensemble import ValidationData, build_ensemble

    members = []
    small = {"d_model": 8, "head_hidden": 16, "dropout": 0.0, "num_heads": 2}
    for name, window, modalities in (("fusion", 8, ["frame", "clip"]),
                                     ("temporal_ensemble", 4, ["clip"])):  # fmt: skip
        dims = {m: DIMS[m] for m in modalities}
        cfg = config(data, tmp_path / name, "mtl", model=name, window=window, epochs=1,
                     modalities=modalities, model_hparams={**small, "dims": dims})  # fmt: skip
        members.append(train(cfg).last_checkpoint)
    out = tmp_path / "ens.ckpt"
    validation = ValidationData(annotations=data["root"] / "MTL", cache=data["cache"])
    result = build_ensemble(members, out, validation=validation)
    assert set(result.weights) == {"expr", "au", "va"} and result.samples == 48
    ens = CheckpointPredictor(out)
    assert ens.window == 8 and ens.modalities == ("frame", "clip")
    got = ens.outputs(_cache(data), "vidD")
    parts = [CheckpointPredictor(m).outputs(_cache(data), "vidD") for m in members]
    for task, w in result.weights.items():
        np.testing.assert_allclose(got[task], w[0] * parts[0][task] + w[1] * parts[1][task],
                                   atol=1e-5)  # fmt: skip


def _cache(data):
    from mmaffect.features.cache import FeatureCache

    return FeatureCache(data["cache"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--weighting fit chooses the weights on the validation split"),
        (["--weighting", "vote"], "unknown weighting 'vote'"),
    ],
)
def test_ensemble_refuses_bad_settings(hybrids, tmp_path, extra, message):
    res = _cli(["ensemble", *hybrids, "--out", tmp_path / "e.ckpt", *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    res = _cli(["ensemble", hybrids[0], "--weighting", "equal", "--out", tmp_path / "e.ckpt"])
    assert res.exit_code == 2 and "an ensemble needs at least 2 checkpoints" in res.output
    assert not (tmp_path / "e.ckpt").exists()
