"""Losses chosen in recipes and on the command line; AU losses weighted from the training labels.

Runs on the small feature cache of ``test_training.py`` (its ``data`` fixture).
"""

# ruff: noqa: F811 - pytest fixtures imported from other test modules are parameters here

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import config, data  # noqa: F401 - fixtures used below

from mmaffect import losses as L_
from mmaffect.annotations import read_split_folders
from mmaffect.errors import InputError
from mmaffect.training.module import AffectModule, parse_losses
from mmaffect.training.train import prepare

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args: list):
    from typer.testing import CliRunner

    from mmaffect.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _train_au_labels(data) -> np.ndarray:
    """The AU labels of the training split, read from the label files."""
    train = read_split_folders(data["root"] / "AU", track="AU")["train"]
    return np.concatenate([lab.values[lab.mask.all(1)] for lab in train.values()])


def _cli_args(data, tmp_path, task: str, *extra) -> list:
    recipe = tmp_path / "tiny.yaml"
    config(data, tmp_path / "ignored", task).to_yaml(recipe)
    return [
        "train", "--config", recipe, "--task", task, "--annotations", data["root"] / task.upper(),
        "--epochs", "1", "--out", tmp_path / "run", "--device", "cpu", *extra,
    ]  # fmt: skip


def test_losses_from_the_command_line_reach_the_module(data, tmp_path):
    res = _cli(_cli_args(data, tmp_path, "mtl", "--loss", "expr=focal, va=mse_ccc"))
    assert res.exit_code == 0, res.output
    module = AffectModule.load_from_checkpoint(tmp_path / "run" / "last.ckpt", map_location="cpu")
    assert module.hparams["losses"] == {"expr": "focal", "au": "circle_bce", "va": "mse_ccc"}
    assert module._loss_fns["expr"] is L_.focal_loss and module._loss_fns["va"] is L_.mse_ccc_loss
    assert module.hparams["au_weights"] is None  # circle + BCE takes no weights


def test_weighted_bce_gets_its_weights_from_the_training_labels(data, tmp_path):
    res = _cli(_cli_args(data, tmp_path, "au", "--loss", "au=weighted_bce"))
    assert res.exit_code == 0, res.output
    module = AffectModule.load_from_checkpoint(tmp_path / "run" / "last.ckpt", map_location="cpu")
    labels = _train_au_labels(data)
    expected = (labels == 0).sum(0) / (labels == 1).sum(0)  # n_neg / n_pos of each AU
    np.testing.assert_allclose(module.hparams["au_weights"], expected, rtol=1e-5)
    assert not np.allclose(expected, 1.0)  # the labels are unbalanced: the weights matter
    logits = torch.randn(6, 12)
    target = torch.from_numpy(labels[:6]).float()
    got = module.loss_terms({"au": logits}, {"au": target})["AU"]
    want = L_.bce_loss(logits, target, pos_weight=torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, L_.bce_loss(logits, target))


def test_weighted_asymmetric_loss_from_a_recipe(data, tmp_path):
    run = prepare(config(data, tmp_path / "run", "au", losses={"au": "weighted_asymmetric"}))
    labels = _train_au_labels(data)
    rate = (labels == 1).sum(0) / len(labels)
    expected = (1 / rate) / (1 / rate).mean()
    np.testing.assert_allclose(run.module.hparams["au_weights"], expected, rtol=1e-5)
    fn = run.module._loss_fns["au"]
    assert fn.func is L_.asymmetric_loss and torch.equal(fn.keywords["weight"], torch.tensor(
        run.module.hparams["au_weights"]))  # fmt: skip
    assert not (tmp_path / "run").exists()  # prepare writes nothing


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("au=nope", "unknown au loss 'nope'"),
        ("mouth=ce", "unknown loss head 'mouth'"),
        ("au", "expected HEAD=LOSS pairs"),
    ],
)
def test_bad_losses_are_refused_before_writing(data, tmp_path, loss, message):
    res = _cli(_cli_args(data, tmp_path, "au", "--loss", loss))
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_parse_losses_and_a_missing_weight_list():
    assert parse_losses("au=asymmetric,va=mse_ccc") == {"au": "asymmetric", "va": "mse_ccc"}
    with pytest.raises(InputError, match=r"the weighted_bce AU loss needs 12 per-AU weights"):
        AffectModule(
            model_name="fusion", task="au", modalities=["frame"], losses={"au": "weighted_bce"},
            model_hparams={"dims": {"frame": 6}, "d_model": 8, "head_hidden": 0},
        )  # fmt: skip
