"""The affect models: every model × every non-empty modality subset builds, predicts the right
shapes, learns a synthetic problem, survives fully-masked branches, and rebuilds from hparams."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmaffect.errors import InputError
from mmaffect.losses import mtl_loss
from mmaffect.models import MODALITIES, available_models, create_model, middle_index

DIMS = {"frame": 12, "clip": 10, "speech": 9, "word": 11}
B, T = 4, 8
N_EXPR, N_AU = 8, 12
SUBSETS = [
    list(c) for r in range(1, len(MODALITIES) + 1) for c in itertools.combinations(MODALITIES, r)
]
MODELS = ["fusion", "affine_transformer", "temporal_ensemble"]
TINY = {
    "fusion": {"d_model": 16, "gru_hidden": 8, "num_heads": 2, "head_hidden": 16},
    "affine_transformer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 32,
        "head_hidden": 16,
    },
    "temporal_ensemble": {"d_model": 16, "num_heads": 2, "num_layers": 1, "head_hidden": 16},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str, modalities: list[str], **extra) -> torch.nn.Module:
    return create_model(
        name, modalities=modalities, dims=DIMS, dropout=0.0, **{**TINY[name], **extra}
    )


def make_batch(modalities: list[str], b: int = B, t: int = T, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for m in modalities:
        batch[m] = torch.randn(b, t, DIMS[m], generator=g)
        batch[f"mask_{m}"] = torch.ones(b, t, dtype=torch.bool)
    return batch


def targets_from(batch: dict, modalities: list[str]) -> dict:
    """Labels that are a function of the middle frame of the first enabled modality."""
    x = batch[modalities[0]]
    mid = x[:, middle_index(x.shape[1])]
    feats = torch.cat([mid, mid], dim=-1)  # at least 18 columns
    return {
        "EXPR": feats[:, :N_EXPR].argmax(dim=-1),
        "AU": (feats[:, :N_AU] > 0).long(),
        "VA": torch.tanh(feats[:, :2]),
    }


def test_registry_lists_the_models() -> None:
    assert set(MODELS) <= set(available_models())


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(InputError) as info:
        create_model("no_such_model")
    msg = str(info.value)
    assert "unknown model 'no_such_model'" in msg
    for name in MODELS:
        assert name in msg


def test_bad_modality_and_missing_input() -> None:
    with pytest.raises(InputError, match="unknown modalities"):
        tiny("fusion", ["frame", "video"])
    with pytest.raises(InputError, match="at least one modality"):
        tiny("fusion", [])
    model = tiny("fusion", ["frame", "speech"])
    with pytest.raises(InputError, match="no 'speech' features"):
        model(make_batch(["frame"]))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("modalities", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_build_predict_and_learn(name: str, modalities: list[str]) -> None:
    torch.manual_seed(0)
    model = tiny(name, modalities)
    assert model.modalities == tuple(modalities)
    batch = make_batch(modalities, b=8)
    out = model(batch)
    assert set(out) == {"expr", "au", "va"}
    assert out["expr"].shape == (8, N_EXPR)
    assert out["au"].shape == (8, N_AU)
    assert out["va"].shape == (8, 2)
    assert out["va"].abs().max() <= 1.0

    targets = targets_from(batch, modalities)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = mtl_loss(model(batch), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", MODELS)
def test_odd_window_and_subset_of_tasks(name: str) -> None:
    model = tiny(name, ["frame", "word"], tasks=["VA"], n_expr=7, n_au=8)
    out = model(make_batch(["frame", "word"], t=5))
    assert set(out) == {"va"} and out["va"].shape == (B, 2)
    model = tiny(name, ["clip"], tasks=["expr", "au"], n_expr=7, n_au=8)
    out = model(make_batch(["clip"], t=1))
    assert out["expr"].shape == (B, 7) and out["au"].shape == (B, 8)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("masked", [["clip"], ["frame"], list(MODALITIES)])
def test_fully_masked_branches_are_finite(name: str, masked: list[str]) -> None:
    torch.manual_seed(0)
    model = tiny(name, list(MODALITIES))
    batch = make_batch(list(MODALITIES))
    for m in masked:
        batch[f"mask_{m}"][:2] = False  # samples 0, 1: the whole window masked
        batch[m][:2] = float("nan")  # garbage behind the mask must not leak
    batch["mask_speech"][2, middle_index(T)] = False  # a partly masked window too
    out = model(batch)
    for v in out.values():
        assert torch.isfinite(v).all()
    mtl_loss(out, targets_from(make_batch(list(MODALITIES)), list(MODALITIES))).backward()
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
    model.eval()
    with torch.no_grad():
        for v in model(batch).values():
            assert torch.isfinite(v).all()


@pytest.mark.parametrize("name", MODELS)
def test_rebuild_from_hparams(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, ["frame", "clip", "word"], n_expr=7)
    rebuilt = create_model(name, **model.hparams)
    assert rebuilt.hparams == model.hparams
    assert rebuilt.modalities == model.modalities
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    batch = make_batch(["frame", "clip", "word"])
    batch["mask_clip"][0] = False
    with torch.no_grad():
        a, b = model(batch), rebuilt(batch)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_temporal_ensemble_weights_and_many_to_many() -> None:
    model = tiny("temporal_ensemble", ["frame"], ensemble_weights=[2, 1, 1], learn_weights=False)
    torch.testing.assert_close(model.ensemble_weights(), torch.tensor([0.5, 0.25, 0.25]))
    assert not any(n == "weight_logits" for n, _ in model.named_parameters())
    batch = make_batch(["frame"])
    seq = model(batch, many_to_many=True)
    assert seq["expr"].shape == (B, T, N_EXPR) and seq["va"].shape == (B, T, 2)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["au"], model(batch, many_to_many=True)["au"][:, 4])
    learned = tiny("temporal_ensemble", ["frame"])
    assert any(n == "weight_logits" for n, _ in learned.named_parameters())
    with pytest.raises(InputError):
        tiny("temporal_ensemble", ["frame"], ensemble_weights=[1, 1])
