"""Training loop on a tiny synthetic feature cache: losses fall, checkpoints, resume, CLI, YAML."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mmaffect.annotations import AU_12, EXPR_8, VA, VideoLabels, write_video_labels
from mmaffect.features.cache import EntryKey, FeatureCache, config_hash
from mmaffect.features.timing import FrameTiming
from mmaffect.training.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
N = 48
DIMS = {"frame": 6, "clip": 5, "speech": 4, "word": 5}
SPLITS = {"Train_Set": ["vidA", "vidB", "vidC"], "Validation_Set": ["vidD"]}
TINY = {
    "d_model": 8,
    "gru_hidden": 4,
    "gru_layers": 1,
    "num_heads": 2,
    "head_hidden": 16,
    "dropout": 0.0,
    "dims": DIMS,
}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _labels(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets that the middle frame's latent ``z`` (n, 3) determines."""
    angle = np.arctan2(z[:, 1], z[:, 0])
    expr = ((angle + np.pi) / (2 * np.pi) * 8).astype(np.int64).clip(0, 7)
    proj = np.random.default_rng(7).normal(size=(3, 12))
    au = (z @ proj > 0).astype(np.int64)
    va = np.tanh(0.7 * z[:, :2]).round(3).astype(np.float32)
    return expr, au, va


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_data")
    cache = FeatureCache(root / "cache")
    rng = np.random.default_rng(0)
    proj = {
        m: np.random.default_rng(i + 1).normal(size=(3, d)) for i, (m, d) in enumerate(DIMS.items())
    }
    mtl_rows: dict[str, list[str]] = {"Train_Set": [], "Validation_Set": []}
    for split, vids in SPLITS.items():
        for vid in vids:
            z = rng.normal(size=(N, 3))
            for m, d in DIMS.items():
                values = (z @ proj[m] + 0.05 * rng.normal(size=(N, d))).astype(np.float32)
                cfg = {"extractor": m, "test": 1}
                key = EntryKey(vid, m, config_hash(cfg))
                cache.write(key, {"values": values}, timing=FrameTiming(30.0, N), config=cfg)
            expr, au, va = _labels(z)
            for track, space, vals in (("EXPR", EXPR_8, expr), ("AU", AU_12, au), ("VA", VA, va)):
                lab = VideoLabels.from_values(vid, space, vals)
                write_video_labels(root / track / split / f"{vid}.txt", lab)
            for f in range(N):
                aus = ",".join(str(int(a)) for a in au[f])
                mtl_rows[split].append(
                    f"{vid}/{f + 1:05d}.jpg,{va[f, 0]},{va[f, 1]},{expr[f]},{aus}"
                )
    (root / "MTL").mkdir()
    for split, name in (("Train_Set", "train_set.txt"), ("Validation_Set", "validation_set.txt")):
        lines = ["image,valence,arousal,expression,aus", *mtl_rows[split]]
        (root / "MTL" / name).write_text("\n".join(lines) + "\n")
    return {"root": root, "cache": root / "cache"}


def config(data: dict[str, Path], out: Path, task: str = "expr", **kw) -> TrainConfig:
    ann = data["root"] / task.upper()
    base = dict(
        task=task,
        edition="abaw3",
        annotations=str(ann),
        cache=str(data["cache"]),
        model="fusion",
        model_hparams=dict(TINY),
        modalities=list(DIMS),
        window=8,
        batch_size=16,
        epochs=4,
        lr=0.05,
        seed=0,
        out=str(out),
        scheduler={"name": "none"},
    )
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def epoch_values(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["epoch"]): float(r[key]) for r in rows if r.get(key)}


@pytest.mark.parametrize(
    ("task", "modalities"),
    [
        ("expr", list(DIMS)),
        ("va", list(DIMS)),
        ("au", list(DIMS)),
        ("mtl", list(DIMS)),
        ("expr", ["frame"]),
        ("expr", ["clip", "speech"]),
        ("va", ["word"]),
    ],
)
def test_training_loss_decreases(data, tmp_path, task, modalities):
    result = train(config(data, tmp_path / "run", task, modalities=modalities))
    rows = read_metrics(result.metrics_csv)
    loss = epoch_values(rows, "train/loss")
    assert sorted(loss) == [0, 1, 2, 3]
    assert loss[3] < loss[0], loss
    scores = epoch_values(rows, "val/score")
    assert sorted(scores) == [0, 1, 2, 3]  # one val/score per epoch
    assert all(np.isfinite(list(scores.values())))
    assert (tmp_path / "run" / "config.yaml").is_file()
    saved = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert saved == config(data, tmp_path / "run", task, modalities=modalities)


def _predict(module, dataset) -> dict[str, torch.Tensor]:
    from mmaffect.training.dataset import make_loader

    module.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in make_loader(dataset, batch_size=32, shuffle=False):
            for k, v in module(batch).items():
                outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def test_checkpoint_round_trip(data, tmp_path):
    from mmaffect.training.module import AffectModule

    result = train(config(data, tmp_path / "run", "mtl", epochs=3))
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    memory = _predict(result.module, result.val_dataset)
    last = AffectModule.load_from_checkpoint(result.last_checkpoint, map_location="cpu")
    loaded = _predict(last, result.val_dataset)
    assert memory.keys() == loaded.keys() == {"expr", "au", "va"}
    for k in memory:
        torch.testing.assert_close(loaded[k], memory[k], rtol=0, atol=0)
    hp = last.hparams
    assert hp["model_name"] == "fusion" and hp["window"] == 8 and hp["task"] == "mtl"
    assert hp["modalities"] == list(DIMS) and hp["edition"] == "abaw3"
    assert hp["label_names"]["expr"] == list(EXPR_8.names)
    assert set(hp["feature_configs"]) == set(DIMS)
    # the best checkpoint reproduces its monitored score
    best = AffectModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu")
    out = _predict(best, result.val_dataset)
    ds = result.val_dataset
    gathered = {f"pred_{k}": v.numpy() for k, v in out.items()}
    gathered.update({"true_expr": ds.expr, "true_au": ds.au, "true_va": ds.va})
    assert best.score(gathered).score == pytest.approx(result.best_score, abs=1e-5)


def test_resume_continues_epochs(data, tmp_path):
    first = train(config(data, tmp_path / "run", "expr", epochs=2))
    assert first.epochs == 2
    second = train(config(data, tmp_path / "run", "expr", epochs=4))
    assert second.epochs == 4
    rows = read_metrics(second.metrics_csv)
    assert sorted(epoch_values(rows, "val/score")) == [0, 1, 2, 3]
    ckpt = torch.load(second.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 3


@pytest.mark.parametrize("path", sorted((REPO / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_pipelines_round_trip(path):
    cfg = TrainConfig.from_yaml(path)
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg
    assert cfg.task in ("expr", "va", "au", "mtl")


def test_pipelines_present():
    names = {p.name for p in (REPO / "pipelines").glob("*.yaml")}
    assert {
        "fusion_expr.yaml",
        "fusion_va.yaml",
        "fusion_au.yaml",
        "fusion_mtl.yaml",
        "affine_transformer_mtl.yaml",
        "temporal_ensemble_expr7.yaml",
    } <= names


def test_unknown_config_key():
    from mmaffect.errors import InputError

    with pytest.raises(InputError, match="unknown training config key"):
        TrainConfig.from_yaml("task: expr\nbogus: 1\n")


def test_train_cli(data, tmp_path):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    base = config(data, tmp_path / "ignored", "au")
    yaml_path = tmp_path / "tiny.yaml"
    base.to_yaml(yaml_path)
    out = tmp_path / "cli_run"
    args = [
        "train",
        "--config", str(yaml_path),
        "--task", "au",
        "--annotations", str(data["root"] / "AU"),
        "--cache", str(data["cache"]),
        "--modalities", "frame,clip",
        "--epochs", "2",
        "--batch-size", "32",
        "--out", str(out),
        "--device", "cpu",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = TrainConfig.from_yaml(out / "config.yaml")
    assert saved.epochs == 2 and saved.batch_size == 32 and saved.modalities == ["frame", "clip"]
    assert saved.model_hparams == base.model_hparams and saved.lr == base.lr  # from the YAML
    assert (out / "last.ckpt").is_file()
    assert "val/score" in res.output
