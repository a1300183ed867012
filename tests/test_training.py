"""Training loop on a tiny synthetic feature cache: losses fall, checkpoints, resume, CLI, YAML."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from mmaffect.annotations import AU_12, EXPR_8, VA, VideoLabels, write_video_labels
from mmaffect.annotations import read_mtl_file as read_split_mtl
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


SUBSETS = [list(c) for r in range(1, len(DIMS) + 1) for c in itertools.combinations(list(DIMS), r)]


@pytest.mark.parametrize("task", ["expr", "va", "au", "mtl"])
def test_every_modality_subset_learns(data, task):
    """Dataset + AffectModule + design losses: the loss on fixed batches falls for each subset."""
    from mmaffect.training.dataset import make_loader
    from mmaffect.training.module import AffectModule
    from mmaffect.training.train import build_datasets

    assert len(SUBSETS) == 15
    for modalities in SUBSETS:
        torch.manual_seed(0)
        cfg = config(data, data["root"] / "unused", task, modalities=modalities)
        train_ds, _, names = build_datasets(cfg)
        loader = make_loader(train_ds, batch_size=24, shuffle=True, seed=0)
        batches = [b for _, b in zip(range(3), loader, strict=False)]
        module = AffectModule(
            model_hparams=TINY, task=task, modalities=modalities, edition="abaw3",
            window=8, label_names=names,
        )  # fmt: skip
        opt = torch.optim.Adam(module.parameters(), lr=0.03)

        def total(batch, module=module) -> torch.Tensor:
            return torch.stack(list(module.loss_terms(module(batch), batch).values())).sum()

        with torch.no_grad():
            before = sum(float(total(b)) for b in batches)
        for step in range(45):
            opt.zero_grad()
            total(batches[step % len(batches)]).backward()
            opt.step()
        with torch.no_grad():
            after = sum(float(total(b)) for b in batches)
        assert after < 0.9 * before, (task, modalities, before, after)


def _write_abaw12(root: Path) -> Path:
    """ABAW1/2 per-video files (7-class EXPR, 8 AUs) for the cached videos."""
    from mmaffect.annotations import AU_8, EXPR_7

    rng = np.random.default_rng(3)
    for split, vids in SPLITS.items():
        for vid in vids:
            expr = rng.integers(0, 7, size=N)
            expr[:3] = -1
            au = rng.integers(0, 2, size=(N, 8))
            for track, space, vals in (("EXPR", EXPR_7, expr), ("AU", AU_8, au)):
                lab = VideoLabels.from_values(vid, space, vals)
                write_video_labels(root / track / split / f"{vid}.txt", lab)
    return root


def test_abaw1_layout_trains_and_edition_mismatch_is_refused(data, tmp_path):
    from mmaffect.errors import InputError

    ann = _write_abaw12(tmp_path / "abaw12")
    for track in ("expr", "au"):
        cfg = config(data, tmp_path / f"run_{track}", track, epochs=1, edition="abaw1")
        cfg.annotations = str(ann / track.upper())
        result = train(cfg)
        names = result.module.hparams["label_names"][track]
        assert len(names) == (7 if track == "expr" else 8)
        assert result.best_score is not None and np.isfinite(result.best_score)
    bad = config(data, tmp_path / "bad", "expr", edition="abaw5")
    bad.annotations = str(ann / "EXPR")
    with pytest.raises(InputError, match=r"EXPR, 7 classes .* but ABAW5 scores EXPR, 8") as e:
        train(bad)
    assert "--edition abaw1 or abaw2" in e.value.hint
    no_track = config(data, tmp_path / "bad2", "expr", edition="abaw7")
    with pytest.raises(InputError, match="ABAW7 has no EXPR track"):
        train(no_track)


def test_mtl_from_uni_task_folders(data, tmp_path):
    """``--task mtl`` on a folder of EXPR/AU/VA track folders joins them per frame."""
    from mmaffect.annotations import find_track_folders, mtl_from_tracks, read_split_folders

    root = data["root"]
    assert set(find_track_folders(root)) == {"EXPR", "AU", "VA"}
    joined = mtl_from_tracks(
        {t: read_split_folders(root / t, track=t)["train"] for t in ("EXPR", "AU", "VA")}
    )
    direct = read_split_mtl(root / "MTL" / "train_set.txt")
    assert joined.image_names() == direct.image_names()
    for name in ("va", "expr", "au", "va_mask", "expr_mask", "au_mask"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(direct, name), err_msg=name)
    result = train(config(data, tmp_path / "run", "mtl", annotations=str(root), epochs=1))
    assert result.best_score is not None and 0 <= result.best_score <= 3


def test_mtl_join_masks_missing_tracks():
    from mmaffect.annotations import AU_8, EXPR_7, mtl_from_tracks
    from mmaffect.errors import InputError

    expr = VideoLabels.from_values("v", EXPR_7, np.array([0, -1, 6, 2]))
    au_values = np.array([[1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0], [-1] * 12])
    au = VideoLabels.from_values("v", AU_12, au_values)
    va = VideoLabels.from_values("w", VA, np.array([[0.5, -0.2], [-5, -5]], dtype=np.float32))
    rows = mtl_from_tracks({"EXPR": {"v": expr}, "AU": {"v": au}, "VA": {"w": va}})
    # frame 2 of v is labelled by no track: no row, as in the organisers' MTL files
    assert rows.image_names() == ["v/00001.jpg", "v/00003.jpg", "v/00004.jpg", "w/00001.jpg"]
    np.testing.assert_array_equal(rows.expr_mask, [True, True, True, False])
    np.testing.assert_array_equal(rows.expr[:3], [0, 6, 2])
    np.testing.assert_array_equal(rows.va_mask, [False, False, False, True])
    np.testing.assert_allclose(rows.va[3], [0.5, -0.2])
    assert rows.au_mask[0].all() and not rows.au_mask[1:].any()
    np.testing.assert_array_equal(rows.au[0], au_values[0])
    au8 = VideoLabels.from_values("v", AU_8, np.zeros((2, 8), dtype=np.int64))
    with pytest.raises(InputError, match="AU, 8 units .* cannot join MTL rows"):
        mtl_from_tracks({"AU": {"v": au8}})


def test_abaw7_mtl_file_trains(data, tmp_path):
    """ABAW4/7 file names with the trailing comma of the ABAW7 rows."""
    folder = tmp_path / "abaw7"
    folder.mkdir()
    for src, dst in (("train_set.txt", "training_set_annotations.txt"),
                     ("validation_set.txt", "validation_set_annotations.txt")):  # fmt: skip
        lines = (data["root"] / "MTL" / src).read_text().splitlines()
        (folder / dst).write_text("\n".join([lines[0]] + [r + "," for r in lines[1:]]) + "\n")
    result = train(config(data, tmp_path / "run", "mtl", annotations=str(folder),
                          edition="abaw7", epochs=1))  # fmt: skip
    assert result.module.hparams["edition"] == "abaw7"
    assert result.best_score is not None and 0 <= result.best_score <= 3
