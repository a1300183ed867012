"""Seed 004 as an ensemble of separately trained members: per-frame targets of whole windows,
many-to-many training, the paper's schedule, and the three members combined on validation.

Runs on the small feature cache of ``test_training.py`` (its ``data`` fixture).
"""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are parameters here

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import DIMS, N, config, data  # noqa: F401 - fixtures

from mmaffect.annotations import read_split_folders
from mmaffect.errors import InputError
from mmaffect.training.dataset import WindowDataset
from mmaffect.training.many_to_many import FrameTargetWindows
from mmaffect.training.train import TrainConfig, prepare, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
MEMBERS = ("frame", "gru", "transformer")


def test_windows_carry_the_targets_of_every_frame(data):
    labels = read_split_folders(data["root"] / "EXPR", track="EXPR")["train"]
    plain = WindowDataset(data["cache"], labels, ["clip"], window=9, stride=3)
    seq = FrameTargetWindows(data["cache"], labels, ["clip"], window=9, stride=3)
    assert len(seq) == len(plain) and (seq.frames == plain.frames).all()  # same samples
    for i in (0, 5, len(seq) - 1):
        item = seq[i]
        vid, f = item["video_id"], int(item["frame"])
        truth = labels[vid].values.astype(np.int64)
        frames = f - 4 + np.arange(9)
        inside = (frames >= 0) & (frames < N)
        expected = np.where(inside, truth[np.clip(frames, 0, N - 1)], -1)
        assert item["expr_seq"].tolist() == expected.tolist()
        assert int(item["expr_seq"][4]) == int(item["expr"])  # the middle frame's target
        torch.testing.assert_close(item["feat_clip"], plain[i]["feat_clip"])
    assert (seq[0]["expr_seq"][:4] == -1).all()  # before the first frame: no target


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: steps by hand
def test_many_to_many_trains_on_every_frame_of_the_window(data, tmp_path):
    hp = {"members": ["gru"], "d_model": 8, "head_hidden": 0, "dims": DIMS}
    run = prepare(config(data, tmp_path / "run", model="temporal_ensemble", window=9,
                         model_hparams=hp, many_to_many=True))  # fmt: skip
    module, batch = run.module, next(iter(torch.utils.data.DataLoader(run.train_ds, 8)))
    assert isinstance(run.train_ds, FrameTargetWindows) and module.hparams["many_to_many"]
    assert not isinstance(run.val_ds, FrameTargetWindows)  # validated on the middle frame
    batch["expr"] = torch.full_like(batch["expr"], -1)  # no middle-frame label at all ...
    batch["expr_seq"][:, 4] = -1
    loss = module.training_step(batch, 0)
    loss.backward()  # ... still a loss and gradients, from the other frames of the windows
    assert loss > 0 and module.model.gru.weight_ih_l0.grad.abs().sum() > 0
    module.hparams["many_to_many"] = False  # many-to-one: nothing to learn from this batch
    assert module.training_step(batch, 0) == 0
    with pytest.raises(InputError, match="many_to_many training needs a model over feature"):
        prepare(config(data, tmp_path / "r2", many_to_many=True))  # fusion: middle frame only


def test_the_recipes_schedule_is_the_papers():
    from mmaffect.training.module import make_optimization

    for name in [f"seed004_{m}_expr7.yaml" for m in MEMBERS] + ["temporal_ensemble_expr7.yaml"]:
        cfg = TrainConfig.from_yaml(PIPELINES / name)
        assert cfg.epochs == 10 and cfg.window in (1, 9), name
        opt = make_optimization(
            [torch.nn.Parameter(torch.zeros(1))], {**cfg.optimizer, "lr": cfg.lr}, cfg.scheduler
        )
        lrs = []
        for _ in range(cfg.epochs):
            lrs.append(opt["optimizer"].param_groups[0]["lr"])
            opt["optimizer"].step()
            opt["lr_scheduler"]["scheduler"].step()
        np.testing.assert_allclose(lrs, [5e-4] * 2 + [5e-5] * 2 + [5e-6] * 4 + [5e-7] * 2)
    gru = TrainConfig.from_yaml(PIPELINES / "seed004_gru_expr7.yaml")
    assert gru.many_to_many and gru.model_hparams["members"] == ["gru"]


def test_seed004_members_trained_apart_and_fitted_on_validation(data, tmp_path):
    from mmaffect.training.ensemble import ValidationData, build_ensemble

    checkpoints = []
    for member in MEMBERS:
        cfg = TrainConfig.from_yaml(PIPELINES / f"seed004_{member}_expr7.yaml")
        small = {k: v for k, v in cfg.model_hparams.items() if k in ("members", "gru_layers")}
        overrides = dict(
            model_hparams={**small, "d_model": 8, "num_heads": 2, "head_hidden": 0,
                           "dims": DIMS},  # fmt: skip
            edition="abaw3", annotations=str(data["root"] / "EXPR"), cache=str(data["cache"]),
            epochs=1, batch_size=32, out=str(tmp_path / member), modalities=["frame", "clip"],
        )  # fmt: skip
        checkpoints.append(train(TrainConfig(**{**cfg.to_dict(), **overrides})).last_checkpoint)
    lines = []
    validation = ValidationData(annotations=data["root"] / "EXPR", cache=data["cache"])
    result = build_ensemble(
        checkpoints, tmp_path / "seed004.ckpt", validation=validation, report=lines.append
    )
    weights = result.weights["expr"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)
    scores = result.scores["expr"]
    assert scores["ensemble"] >= max(scores["members"]) and lines[0].startswith("expr: members")
    hp = torch.load(tmp_path / "seed004.ckpt", map_location="cpu", weights_only=False)
    members = hp["hyper_parameters"]["model_hparams"]["members"]
    assert [m["window"] for m in members] == [1, 9, 9]
    assert hp["hyper_parameters"]["window"] == 9
