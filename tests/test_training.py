"""Training loop on a tiny synthetic feature cache: losses fall, checkpoints, resume, CLI, YAML."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    from mmaffect.training.train import check_edition

    cfg = TrainConfig.from_yaml(path)
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg
    assert cfg.task in ("expr", "va", "au", "mtl")
    check_edition(cfg.task, cfg.edition)  # the recipe's edition has its track


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


# ------------------------------------------------------------------ run state (issue 11)


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _epoch_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("epoch ")]


def test_last_checkpoint_is_the_last_epoch_and_resume_goes_on(data, tmp_path, capsys):
    """lr 0: the score never improves after epoch 0, so only best-000 is written; last.ckpt
    still holds epoch 2 and a resume trains only the epochs after it."""
    run = tmp_path / "run"
    first = train(config(data, run, "expr", epochs=3, lr=0.0))
    assert first.best_checkpoint == run / "best-000.ckpt"
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best-000.ckpt", "last.ckpt"]
    assert _ckpt(run / "last.ckpt")["epoch"] == 2
    assert _epoch_lines(capsys.readouterr().out)[-1].startswith("epoch 3/3  train/loss ")
    second = train(config(data, run, "expr", epochs=5, lr=0.0))
    lines = _epoch_lines(capsys.readouterr().out)
    assert [ln.split()[1] for ln in lines] == ["4/5", "5/5"]  # epochs 1-2 are not redone
    assert _ckpt(second.last_checkpoint)["epoch"] == 4
    assert second.best_checkpoint == run / "best-000.ckpt"  # the best state carried over
    assert second.best_score == pytest.approx(first.best_score)
    rows = read_metrics(second.metrics_csv)
    assert sorted(epoch_values(rows, "val/score")) == [0, 1, 2, 3, 4]
    assert epoch_values(rows, "lr") == {e: 0.0 for e in range(5)}


def _diverge_at(monkeypatch, epoch: int) -> None:
    """Training losses NaN from ``epoch`` on (what a too-high learning rate leads to)."""
    from mmaffect.training.module import AffectModule

    terms = AffectModule.loss_terms

    def nan_from(self, outputs, batch):
        out = terms(self, outputs, batch)
        if self.training and self.current_epoch >= epoch:
            out = {**out, "EXPR": out["EXPR"] * float("nan")}
        return out

    monkeypatch.setattr(AffectModule, "loss_terms", nan_from)


def test_a_diverged_loss_stops_the_run_and_keeps_what_was_written(data, tmp_path, monkeypatch):
    from mmaffect.errors import TrainingDiverged

    run = tmp_path / "run"
    _diverge_at(monkeypatch, 1)
    with pytest.raises(TrainingDiverged, match=r"not finite at epoch 1, step \d+ \(EXPR nan\)"):
        train(config(data, run, "expr", epochs=3))
    # epoch 0's checkpoints stay; nothing of the NaN epoch was written
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best-000.ckpt", "last.ckpt"]
    state = _ckpt(run / "last.ckpt")
    assert state["epoch"] == 0
    weights = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    # a resumed run that diverges keeps the metrics rows of the epochs before it
    monkeypatch.undo()
    train(config(data, run, "expr", epochs=2))
    _diverge_at(monkeypatch, 2)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(config(data, run, "expr", epochs=4))
    rows = read_metrics(run / "logs" / "metrics.csv")
    assert sorted(epoch_values(rows, "val/score")) == [0, 1]
    assert _ckpt(run / "last.ckpt")["epoch"] == 1


def test_edition_defaults_to_abaw3_and_must_have_the_track(data, tmp_path):
    from mmaffect.errors import InputError
    from mmaffect.training.module import AffectModule

    assert TrainConfig().edition == "abaw3"
    assert TrainConfig.from_yaml("task: expr\n").edition == "abaw3"
    assert AffectModule(model_hparams=TINY, modalities=list(DIMS)).edition == "abaw3"
    out = tmp_path / "mtl5"
    with pytest.raises(InputError, match=r"ABAW5 has no MTL track") as e:
        train(config(data, out, "mtl", edition="abaw5"))
    assert "ABAW3, ABAW4, ABAW7" in e.value.hint
    assert not out.exists()  # refused before anything was written


def test_train_device_is_the_one_device_option(data, tmp_path):
    """``--device`` takes the spelling of extract/predict (``cuda``, ``cuda:N``; ``gpu`` still
    means ``cuda``), checked before anything is written."""
    import torch

    from mmaffect.errors import InputError
    from mmaffect.training.train import _accelerator

    assert _accelerator("cpu") == ("cpu", 1)
    if torch.cuda.is_available():
        assert _accelerator("cuda:0") == ("gpu", [0]) and _accelerator("gpu") == ("gpu", 1)
        return
    assert _accelerator("auto") == ("cpu", 1)
    for device in ("cuda", "cuda:1", "gpu"):
        out = tmp_path / device.replace(":", "_")
        with pytest.raises(InputError, match="sees no CUDA device"):
            train(config(data, out, "expr", device=device))
        assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"scheduler": {"name": "bogus"}}, "unknown scheduler 'bogus'"),
        ({"scheduler": {"name": "none", "interval": "hour"}}, "unknown scheduler interval"),
        ({"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}}, "optimizer 'sgd' / scheduler"),
        ({"model_hparams": {**TINY, "gru_size": 3}}, "'fusion' does not take these model_hparams"),
        ({"model_hparams": {**TINY, "dims": {**DIMS, "clip": 7}}}, "'clip' features have 5 col"),
        ({"losses": {"expr": "hinge"}}, "unknown expr loss 'hinge'"),
    ],
)
def test_bad_settings_write_nothing(data, tmp_path, change, message):
    from mmaffect.errors import InputError

    out = tmp_path / "run"
    with pytest.raises(InputError, match=message):
        train(config(data, out, "expr", **change))
    assert not out.exists()


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_folder_of_another_model_is_refused_before_writing(data, tmp_path):
    shared = {k: TINY[k] for k in ("d_model", "num_heads", "head_hidden", "dropout", "dims")}
    cfg = config(data, tmp_path / "ignored", "expr", epochs=1, model_hparams=shared)
    yaml_path = tmp_path / "shared.yaml"
    cfg.to_yaml(yaml_path)
    out = tmp_path / "run"
    base = ["train", "--config", yaml_path, "--out", out, "--device", "cpu"]
    assert _cli(base).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    res = _cli([*base, "--model", "affine_transformer"])
    assert res.exit_code == 2, res.output
    msg = " ".join(res.output.split())
    assert f"{out} holds a run that cannot be resumed with these settings" in msg
    assert "model_name 'fusion' there, 'affine_transformer' now" in msg
    assert "use another --out, or --no-resume" in msg
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    res = _cli([*base, "--modalities", "frame,clip"])
    assert res.exit_code == 2 and "modalities ['frame', 'clip', 'speech', 'word'] there" in (
        " ".join(res.output.split())
    )
    # a failed argument check leaves no folder and no config.yaml behind
    fresh = tmp_path / "fresh"
    res = _cli(["train", "--config", yaml_path, "--out", fresh, "--device", "tpu"])
    assert res.exit_code == 2 and "unknown device 'tpu'" in res.output
    assert not fresh.exists()
    # --no-resume starts over: the other model's checkpoints are replaced
    res = _cli([*base, "--model", "affine_transformer", "--no-resume"])
    assert res.exit_code == 0, res.output
    assert TrainConfig.from_yaml(out / "config.yaml").model == "affine_transformer"
    for path in out.glob("*.ckpt"):
        assert _ckpt(path)["hyper_parameters"]["model_name"] == "affine_transformer", path


def test_ctrl_c_exits_130_and_the_rerun_resumes(data, tmp_path):
    """A real SIGINT to ``mmaffect train`` (a separate process, output to a pipe)."""
    import signal
    import subprocess
    import sys

    yaml_path = tmp_path / "tiny.yaml"
    config(data, tmp_path / "run", "expr", epochs=200).to_yaml(yaml_path)
    cmd = [sys.executable, "-m", "mmaffect", "train", "--config", str(yaml_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 2/200"):
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    done = int(_ckpt(tmp_path / "run" / "last.ckpt")["epoch"]) + 1
    assert done >= 2 and len(_epoch_lines("".join(seen) + rest)) == done
    assert err.strip().endswith(
        f"interrupted: {tmp_path / 'run' / 'last.ckpt'} holds epoch {done}/200; "
        "run the same command again to resume"
    ), err
    again = subprocess.run(
        [*cmd, "--epochs", str(done + 1)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert [ln.split()[1] for ln in _epoch_lines(again.stdout)] == [f"{done + 1}/{done + 1}"]
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert sorted(epoch_values(rows, "val/score")) == list(range(done + 1))


def test_output_in_a_log_is_one_plain_line_per_epoch(data, tmp_path):
    """Not a terminal: a line per epoch with loss, score and lr; none of Lightning's tips,
    device lines or deprecation warnings."""
    import re
    import subprocess
    import sys

    yaml_path = tmp_path / "tiny.yaml"
    config(data, tmp_path / "run", "va", epochs=2).to_yaml(yaml_path)
    cmd = [sys.executable, "-m", "mmaffect", "train", "--config", str(yaml_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    number = r"-?\d[\d.e+-]*"
    line = rf"epoch (\d)/2  train/loss {number}  val/score {number}  lr 0\.05"
    lines = _epoch_lines(res.stdout)
    assert [re.fullmatch(line, ln).group(1) for ln in lines] == ["1", "2"], res.stdout
    assert res.stderr == "", res.stderr
    for chatter in ("Tip", "GPU available", "TPU available", "deprecated", "Warning", "stopped"):
        assert chatter not in res.stdout, res.stdout


def test_checkpoint_settings_make_the_same_cache_entries(tmp_path, models_dir):
    """Train on ``extract --frame-backbone efficientnet_lite0 --frame-crop 112 --detect-every
    2`` features of real videos: the options rebuilt from the checkpoint give its
    faces/frame/clip hashes, and a second extract with them finds every entry, the speech and
    word ones (keyed on each video's frame grid) included. Each step runs in its own process,
    as a user runs them (see the SIGPROF note in test_predict)."""
    import json
    import subprocess
    import sys

    from mmaffect.errors import InputError
    from mmaffect.extraction import ExtractOptions
    from mmaffect.features.vision import face_config_dict, vision_keys
    from mmaffect.features.words import WORDS_VERSION
    from mmaffect.training.feature_settings import extract_options_from_checkpoint

    samples = REPO / "sample_media"
    videos = [str(samples / "astronaut_talking.mp4"), str(samples / "no_face.mp4")]
    cache = tmp_path / "cache"
    mm = [sys.executable, "-m", "mmaffect"]
    subprocess.run([*mm, "extract", *videos, "--cache", str(cache), "--frame-crop", "112",
                    "--frame-backbone", "efficientnet_lite0", "--detect-every", "2",
                    "--models-dir", str(models_dir), "--no-progress"], check=True,
                   capture_output=True)  # fmt: skip
    rng = np.random.default_rng(0)
    for split, vid, n in (
        ("Train_Set", "astronaut_talking", 150),
        ("Validation_Set", "no_face", 75),
    ):
        lab = VideoLabels.from_values(vid, EXPR_8, rng.integers(0, 8, size=n))
        write_video_labels(tmp_path / "EXPR" / split / f"{vid}.txt", lab)
    hp = {k: v for k, v in TINY.items() if k != "dims"}  # the real features' widths
    TrainConfig(task="expr", annotations=str(tmp_path / "EXPR"), cache=str(cache),
                modalities=list(DIMS), window=8, batch_size=32, epochs=1, model_hparams=hp,
                out=str(tmp_path / "run"), scheduler={"name": "none"},
                ).to_yaml(tmp_path / "run.yaml")  # fmt: skip
    subprocess.run([*mm, "train", "--config", str(tmp_path / "run.yaml")], check=True,
                   capture_output=True)  # fmt: skip
    ckpt = tmp_path / "run" / "last.ckpt"
    saved = _ckpt(ckpt)["hyper_parameters"]
    configs, settings = saved["feature_configs"], saved["feature_settings"]
    assert set(configs) == {"faces", "frame", "clip"}  # speech/word keys depend on the video
    assert set(settings) == {"faces", "frame", "clip", "speech", "word"}
    assert settings["frame"]["crop_size"] == 112 and settings["faces"]["detect_every"] == 2
    assert "grid" not in json.dumps(settings) and "n_frames" not in json.dumps(settings)

    options = extract_options_from_checkpoint(settings, ExtractOptions(models_dir=models_dir))
    assert options.frame.crop_size == 112 and options.models_dir == models_dir
    assert options.frame.model is None and options.face.detect_every == 2
    # settings recorded before detect_every existed were made detecting every frame
    before = {**settings, "faces": {k: v for k, v in settings["faces"].items()
                                    if k != "detect_every"}}  # fmt: skip
    assert extract_options_from_checkpoint(before).face.detect_every == 1
    for vid in ("astronaut_talking", "no_face"):
        keys = vision_keys(vid, face_config_dict(options.face, False), options.frame, options.clip)
        assert {m: keys[m][0].config_hash for m in configs} == configs
    default = ExtractOptions()
    keys = vision_keys(
        "no_face", face_config_dict(default.face, False), default.frame, default.clip
    )
    assert keys["frame"][0].config_hash != configs["frame"]  # the defaults would miss them

    script = (
        "import json, sys, torch, mmaffect\n"
        "from mmaffect.extraction import ExtractOptions\n"
        "from mmaffect.training.feature_settings import extract_options_from_checkpoint\n"
        "hp = torch.load(sys.argv[1], weights_only=False)['hyper_parameters']\n"
        "base = ExtractOptions(models_dir=sys.argv[3])\n"
        "opts = extract_options_from_checkpoint(hp['feature_settings'], base)\n"
        "r = mmaffect.extract(sys.argv[4:], cache=sys.argv[2], options=opts, progress=False)\n"
        "print(json.dumps({v: [s.computed, s.reused] for v, s in r.videos.items()}))\n"
    )
    again = subprocess.run([sys.executable, "-c", script, str(ckpt), str(cache), str(models_dir),
                            *videos], check=True, capture_output=True, text=True)  # fmt: skip
    done = json.loads(again.stdout.strip().splitlines()[-1])
    for vid in ("astronaut_talking", "no_face"):
        computed, reused = done[vid]
        assert computed == [] and {"frame", "clip", "speech", "word"} <= set(reused), done

    # settings that this version cannot make again are refused, naming the branch
    old = {**settings, "word": {**settings["word"], "version": 0}}
    with pytest.raises(
        InputError, match=rf"word features .*version: trained 0, now {WORDS_VERSION}"
    ):
        extract_options_from_checkpoint(old)


def test_native_signal_handlers_survive_a_fit_in_process(tmp_path, shared_data, models_dir):
    # MediaPipe sets SIGPROF to "ignore"; Lightning's teardown put back the SIG_DFL Python had
    # seen, and the next SIGPROF killed the process ("Profiling timer expired") when a user ran
    # extract -> train -> extract in one Python process. Run in a child: a crash fails the test
    # instead of killing pytest.
    import textwrap

    corpus = tmp_path / "faces"
    for split, src in (("train", "train"), ("val", "publictest")):
        for cls in ("happy", "sad"):
            (corpus / split / cls).mkdir(parents=True)
            for f in sorted((shared_data / "images/fer2013" / src / cls).glob("*.jpg"))[:8]:
                (corpus / split / cls / f.name).write_bytes(f.read_bytes())
    code = textwrap.dedent(f"""
        import ctypes, ctypes.util, signal
        import mmaffect
        from mmaffect.training.train import TrainConfig, train
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        def sigprof():
            buf = ctypes.create_string_buffer(256)
            libc.sigaction(int(signal.SIGPROF), None, buf)
            return int.from_bytes(buf.raw[:8], "little")
        video = {str(REPO / "sample_media" / "astronaut_talking.mp4")!r}
        kw = dict(modalities="clip", models_dir={str(models_dir)!r}, progress=False)
        assert mmaffect.extract([video], cache={str(tmp_path / "c1")!r}, **kw).exit_code == 0
        before = sigprof()
        train(TrainConfig(task="expr", model="face_cnn", modalities=["image"],
            images={str(corpus / "train")!r}, val_images={str(corpus / "val")!r},
            out={str(tmp_path / "run")!r}, epochs=1, batch_size=8, models_dir={str(models_dir)!r},
            model_hparams={{"backbone": "resnet18", "input_size": 32}}))
        print("sigprof", before, sigprof())
        assert mmaffect.extract([video], cache={str(tmp_path / "c2")!r}, **kw).exit_code == 0
        print("done")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    before, after = res.stdout.split("sigprof ")[1].split()[:2]
    assert before == after and "done" in res.stdout
