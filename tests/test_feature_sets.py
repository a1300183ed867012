"""Seed 001 over several visual feature sets chosen by name: the entries behind each set are
found in the cache, the model takes any named inputs with their widths from the data, and the
checkpoint predicts through the same sets.

The cache is small and made here: per video two ``frame`` entries (the ImageNet backbone's and
a face model's, as ``extract`` and ``extract --frame-model`` make them) and a ``clip`` entry
with the expression, blendshape and head-pose columns; labels derive from the features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmaffect.annotations import AU_12, EXPR_8, VA, VideoLabels, write_video_labels
from mmaffect.errors import InputError
from mmaffect.features.cache import EntryKey, FeatureCache, config_hash
from mmaffect.features.timing import FrameTiming
from mmaffect.training.feature_sets import FeatureSetWindows
from mmaffect.training.train import TrainConfig, train

N = 40
SPLITS = {"Train_Set": ["v1", "v2", "v3"], "Validation_Set": ["v4"]}
CLIP_COLUMNS = ["expr_feat_0", "expr_feat_1", "p_Neutral", "bs_jawOpen", "bs_smile", "yaw",
                "pitch", "roll"]  # fmt: skip
WIDTHS = {"imagenet": 6, "face_cnn": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(cache: FeatureCache, vid: str, extractor: str, values: np.ndarray, config: dict,
           columns: list[str] | None = None) -> None:  # fmt: skip
    key = EntryKey(vid, extractor, config_hash(config))
    cache.write(key, {"values": values.astype(np.float32)}, timing=FrameTiming(30.0, N),
                config=config, columns=columns)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("feature_sets")
    cache = FeatureCache(root / "cache")
    rng = np.random.default_rng(0)
    for split, vids in SPLITS.items():
        for vid in vids:
            z = rng.normal(size=(N, 3))
            for name, model in (("imagenet", None), ("face_cnn", "/runs/face/best.ckpt")):
                proj = np.random.default_rng(len(name)).normal(size=(3, WIDTHS[name]))
                config = {"backbone": "efficientnet_lite0", "model": model, "faces": "f0"}
                _write(cache, vid, "frame", z @ proj, config)
            clip = np.concatenate([z @ rng.normal(size=(3, 5)), rng.normal(size=(N, 3))], 1)
            _write(cache, vid, "clip", clip, {"expression": "x", "faces": "f0"}, CLIP_COLUMNS)
            expr = ((np.arctan2(z[:, 1], z[:, 0]) + np.pi) / (2 * np.pi) * 8).astype(int) % 8
            au = (z @ rng.normal(size=(3, 12)) > 0.8).astype(int)
            va = np.tanh(z[:, :2]).round(3)
            for track, space, values in (("EXPR", EXPR_8, expr), ("AU", AU_12, au), ("VA", VA, va)):
                lab = VideoLabels.from_values(vid, space, values)
                write_video_labels(root / "labels" / track / split / f"{vid}.txt", lab)
    return root


def _labels(corpus: Path, split: str = "train"):
    from mmaffect.annotations import read_split_folders

    return read_split_folders(corpus / "labels" / "EXPR", track="EXPR")[split]


def test_feature_sets_are_found_by_name(corpus):
    cache = FeatureCache(corpus / "cache")
    ds = FeatureSetWindows(cache, _labels(corpus), ["face_cnn", "imagenet", "blendshapes"],
                           window=5)  # fmt: skip
    assert ds.widths() == {"face_cnn": 4, "imagenet": 6, "blendshapes": 2}
    item = ds[7]
    vid, f = item["video_id"], int(item["frame"])
    rows = np.clip(f - 2 + np.arange(5), 0, N - 1)
    for name, extractor, model in (("face_cnn", "frame", True), ("imagenet", "frame", False)):
        (entry,) = [e for e in (corpus / "cache" / vid).glob(f"{extractor}-*")
                    if ('"model": null' not in (e / "meta.json").read_text()) == model]  # fmt: skip
        np.testing.assert_allclose(item[f"feat_{name}"], np.load(entry / "values.npy")[rows])
    (clip,) = (corpus / "cache" / vid).glob("clip-*")
    np.testing.assert_allclose(item["feat_blendshapes"], np.load(clip / "values.npy")[rows][:, 3:5])
    assert "feat_frame" not in item and "feat_clip" not in item
    with pytest.raises(InputError, match="unknown feature set\\(s\\) nose"):
        FeatureSetWindows(cache, _labels(corpus), ["nose"], window=5)
    with pytest.raises(InputError, match="feature set speech: no speech features common to all"):
        FeatureSetWindows(cache, _labels(corpus), ["speech"], window=5)


def test_two_face_models_need_a_choice(corpus, tmp_path):
    import shutil

    shutil.copytree(corpus / "cache", tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache")
    config = {"backbone": "efficientnet_lite0", "model": "/runs/other.ckpt", "faces": "f0"}
    for vids in SPLITS.values():
        for vid in vids:
            _write(cache, vid, "frame", np.zeros((N, 3)), config)
    with pytest.raises(InputError, match="feature set face_cnn: 2 different frame entries"):
        FeatureSetWindows(cache, _labels(corpus), ["face_cnn"], window=3)
    chosen = FeatureSetWindows(cache, _labels(corpus), ["face_cnn"], window=3,
                               configs={"face_cnn": config_hash(config)[:12]})  # fmt: skip
    assert chosen.widths() == {"face_cnn": 3}


def test_affine_transformer_trains_on_feature_sets_and_predicts(corpus, tmp_path):
    from mmaffect.predict.compute import CheckpointPredictor
    from mmaffect.training.module import AffectModule

    recipe = TrainConfig.from_yaml(Path(__file__).parents[1] / "pipelines" /
                                   "affine_transformer_mtl.yaml")  # fmt: skip
    assert recipe.features and recipe.losses["au"] == "weighted_asymmetric"
    config = TrainConfig(**{**recipe.to_dict(), **dict(
        annotations=str(corpus / "labels"), cache=str(corpus / "cache"), out=str(tmp_path / "run"),
        features=["face_cnn", "imagenet", "blendshapes", "head_pose"], epochs=1, batch_size=32,
        window=8, model_hparams={"d_model": 16, "num_heads": 2, "head_hidden": 0},
    )})  # fmt: skip
    result = train(config)
    module = AffectModule.load_from_checkpoint(result.last_checkpoint, map_location="cpu")
    hp = module.hparams
    assert hp["features"] == ["face_cnn", "imagenet", "blendshapes", "head_pose"]
    assert hp["model_hparams"]["dims"] == {"face_cnn": 4, "imagenet": 6, "blendshapes": 2,
                                           "head_pose": 3}  # fmt: skip
    assert hp["losses"] == {"expr": "ce", "au": "weighted_asymmetric", "va": "mse_ccc"}
    assert len(hp["au_weights"]) == 12  # from the training labels
    predictor = CheckpointPredictor(result.last_checkpoint)
    out = predictor.outputs(FeatureCache(corpus / "cache"), "v4")
    assert out["expr"].shape == (N, 8) and out["au"].shape == (N, 12) and out["va"].shape == (N, 2)
    np.testing.assert_allclose(out["expr"].sum(1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="feature sets \\(imagenet\\) are inputs of the"):
        train(TrainConfig(**{**config.to_dict(), "model": "fusion", "features": ["imagenet"]}))


@pytest.mark.slow
def test_feature_sets_of_real_clips_train_and_predict_through_the_cli(
    tmp_path, shared_data, models_dir
):
    """Real RAVDESS clips, both frame entries extracted (the ImageNet backbone, then a face
    model trained here on real FER2013 faces), trained on face_cnn + imagenet + blendshapes and
    predicted by ``predict --checkpoint`` from the same cache."""
    import yaml
    from conftest import run_ffmpeg
    from test_face_model import _fer_subset
    from typer.testing import CliRunner

    from mmaffect.annotations import ravdess_label
    from mmaffect.cli.app import app
    from mmaffect.predict import load_prediction

    def cli(*args):
        res = CliRunner().invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res

    ravdess = shared_data / "video" / "ravdess_av_actor05"
    clips = tmp_path / "clips"
    clips.mkdir()
    vids = {"01-01-03-01-01-02-05": "Train_Set", "01-01-04-01-01-01-05": "Validation_Set"}
    for vid, split in vids.items():
        run_ffmpeg("-ss", "1.2", "-t", "0.5", "-i", str(ravdess / f"{vid}.mp4"), "-an", "-vf",
                   "scale=480:-2", str(clips / f"{vid}.mp4"))  # fmt: skip
        expr = np.full(15, ravdess_label(f"{vid}.mp4"))
        write_video_labels(tmp_path / "EXPR" / split / f"{vid}.txt",
                           VideoLabels.from_values(vid, EXPR_8, expr))  # fmt: skip
    _fer_subset(shared_data, tmp_path / "fer" / "train", "train", 2)
    _fer_subset(shared_data, tmp_path / "fer" / "val", "publictest", 1)
    face = {"model": "face_cnn", "modalities": ["image"], "task": "expr", "epochs": 1,
            "model_hparams": {"backbone": "mini_xception", "input_size": 48}}  # fmt: skip
    (tmp_path / "face.yaml").write_text(yaml.safe_dump(face))
    cli("train", "--config", tmp_path / "face.yaml", "--images", tmp_path / "fer" / "train",
        "--val-images", tmp_path / "fer" / "val", "--out", tmp_path / "face",
        "--models-dir", models_dir)  # fmt: skip
    cache, common = tmp_path / "cache", ["--no-progress", "--models-dir", models_dir]
    cli("extract", clips, "--cache", cache, "--modalities", "frame,clip", "--frame-backbone",
        "efficientnet_lite0", *common)  # fmt: skip
    cli("extract", clips, "--cache", cache, "--modalities", "frame", "--frame-model",
        tmp_path / "face" / "last.ckpt", *common)  # fmt: skip
    recipe = {"model": "affine_transformer", "task": "expr", "window": 5, "epochs": 1,
              "batch_size": 8, "model_hparams": {"d_model": 16, "num_heads": 2}}  # fmt: skip
    (tmp_path / "seed001.yaml").write_text(yaml.safe_dump(recipe))
    cli("train", "--config", tmp_path / "seed001.yaml", "--annotations", tmp_path / "EXPR",
        "--cache", cache, "--features", "face_cnn,imagenet,blendshapes", "--out",
        tmp_path / "run")  # fmt: skip
    hp = torch.load(tmp_path / "run" / "last.ckpt", map_location="cpu", weights_only=False)[
        "hyper_parameters"]  # fmt: skip
    assert hp["model_hparams"]["dims"] == {"face_cnn": 128, "imagenet": 1280, "blendshapes": 52}
    ckpt = tmp_path / "run" / "last.ckpt"
    cli("predict", clips / "01-01-04-01-01-01-05.mp4", "--checkpoint", ckpt, "--out",
        tmp_path / "pred", "--cache", cache, "--no-words", *common)  # fmt: skip
    pred = load_prediction(tmp_path / "pred" / "predictions" / "01-01-04-01-01-01-05.npz")
    assert len(pred) == 15 and pred.expr_probs.shape == (15, 8)
    np.testing.assert_allclose(pred.expr_probs.sum(1), 1.0, atol=1e-5)
