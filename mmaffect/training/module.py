"""Lightning module wrapping a registry model: task losses, optimiser, epoch-level ABAW metrics.

Dataset items (``feat_<m>``, ``mask_<m>``, ``expr``/``au``/``va`` with sentinels) are mapped to
the model's input keys (``<m>``, ``mask_<m>``); see ``mmaffect.training.dataset``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from mmaffect import losses as L_
from mmaffect import metrics
from mmaffect.errors import InputError, TrainingDiverged
from mmaffect.models import create_model

__all__ = [
    "TASK_CHOICES",
    "AffectModule",
    "au_loss_weights",
    "check_losses",
    "make_optimization",
    "model_inputs",
    "parse_losses",
    "task_heads",
]

TASK_CHOICES = ("expr", "va", "au", "mtl")

#: Loss names per head; each is ``fn(output, target, mask) -> scalar``.
LOSSES: dict[str, dict[str, Callable[..., Tensor]]] = {
    "expr": {
        "smoothed_ce": L_.smoothed_cross_entropy,
        "ce": partial(L_.smoothed_cross_entropy, confidence=1.0),
        "focal": L_.focal_loss,
    },
    "au": {
        "circle_bce": L_.circle_bce_loss,
        "bce": L_.bce_loss,
        "circle": L_.multilabel_circle_loss,
        "asymmetric": L_.asymmetric_loss,
        # weighted by per-AU weights from the training labels (``au_weights``)
        "weighted_bce": L_.bce_loss,
        "weighted_asymmetric": L_.asymmetric_loss,
    },
    "va": {"ccc": L_.ccc_loss, "mse_ccc": L_.mse_ccc_loss},
}
DEFAULT_LOSSES = {"expr": "smoothed_ce", "au": "circle_bce", "va": "ccc"}
#: AU losses weighted per AU from the training labels: the weights' function and the argument
#: of the loss that takes them (the hybrid CNN-Transformer's weighted BCE, the affine-module
#: model's weighted asymmetric loss).
AU_WEIGHTINGS: dict[str, tuple[Callable[..., Tensor], str]] = {
    "weighted_bce": (L_.au_pos_weight, "pos_weight"),
    "weighted_asymmetric": (L_.au_inverse_frequency_weights, "weight"),
}
DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "sgd", "lr": 0.002, "momentum": 0.9}
DEFAULT_SCHEDULER: dict[str, Any] = {"name": "cosine_warm_restarts", "T_0": 10, "T_mult": 1}


def task_heads(task: str) -> tuple[str, ...]:
    """The model heads a training task needs (``mtl``: all three)."""
    task = task.lower()
    if task not in TASK_CHOICES:
        raise InputError(f"unknown task {task!r}", hint=f"choose among {', '.join(TASK_CHOICES)}")
    return ("expr", "au", "va") if task == "mtl" else (task,)


def model_inputs(batch: Mapping[str, Any], modalities: Sequence[str]) -> dict[str, Tensor]:
    """Map dataset keys ``feat_<m>``/``mask_<m>`` to the model's ``<m>``/``mask_<m>``."""
    out: dict[str, Tensor] = {}
    for m in modalities:
        out[m] = batch[f"feat_{m}"]
        if f"mask_{m}" in batch:
            out[f"mask_{m}"] = batch[f"mask_{m}"]
    return out


def check_losses(losses: Mapping[str, str]) -> dict[str, str]:
    """``{head: loss name}`` checked against :data:`LOSSES` (heads expr, au, va).

    Raises
    ------
    InputError
        An unknown head or loss name (the message lists the valid ones).
    """
    out = {}
    for head, name in losses.items():
        head = str(head).lower()
        if head not in LOSSES:
            raise InputError(
                f"unknown loss head {head!r}", hint=f"heads: {', '.join(LOSSES)} (e.g. au=bce)"
            )
        if name not in LOSSES[head]:
            raise InputError(
                f"unknown {head} loss {name!r}", hint=f"choose among {', '.join(LOSSES[head])}"
            )
        out[head] = str(name)
    return out


def parse_losses(text: str) -> dict[str, str]:
    """``"au=asymmetric,va=mse_ccc"`` (the ``--loss`` option) → checked ``{head: loss name}``."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in pairs if p.count("=") != 1]
    if bad or not pairs:
        raise InputError(
            f"--loss {text!r}: expected HEAD=LOSS pairs separated by commas",
            hint="e.g. --loss au=weighted_asymmetric,va=mse_ccc",
        )
    return check_losses(dict(tuple(s.strip() for s in p.split("=")) for p in pairs))


def au_loss_weights(losses: Mapping[str, str], au_labels: np.ndarray) -> list[float] | None:
    """Per-AU weights of the chosen AU loss from the training labels ``(N, n_au)`` (-1 unknown),
    or None when the AU loss takes none (:data:`AU_WEIGHTINGS`)."""
    name = {**DEFAULT_LOSSES, **dict(losses)}.get("au")
    if name not in AU_WEIGHTINGS:
        return None
    weights = AU_WEIGHTINGS[name][0](np.asarray(au_labels))
    return [round(float(w), 6) for w in weights]


def _edition_number(edition: str) -> int:
    digits = "".join(c for c in str(edition) if c.isdigit())
    if not digits:
        raise InputError(f"unknown ABAW edition {edition!r}", hint="e.g. abaw5")
    return int(digits)


class AffectModule(L.LightningModule):
    """A registry model trained on one ABAW task (or MTL) with the design's losses.

    Parameters
    ----------
    model_name
        Registry name (``fusion``, ``affine_transformer``, ``temporal_ensemble``; image models
        ``face_cnn``, ``dan``, ``hybrid_cnn_transformer``; ``ensemble``, written by
        ``mmaffect ensemble``).
    model_hparams
        Constructor arguments of the model; ``modalities`` and ``tasks`` are set from the
        arguments below. After construction they are replaced by the model's full ``hparams``
        so that a checkpoint rebuilds the identical architecture.
    task
        ``expr``, ``va``, ``au`` or ``mtl``.
    modalities
        Input modalities (dataset ``feat_<m>`` keys).
    edition
        ABAW edition whose official metric is logged as ``val/score``.
    window
        Window length ``T`` of the training data (kept for prediction).
    losses
        Loss name per head (``expr``: smoothed_ce | ce | focal; ``au``: circle_bce | bce |
        circle | asymmetric | weighted_bce | weighted_asymmetric; ``va``: ccc | mse_ccc);
        defaults smoothed CE, circle + BCE, CCC.
    au_weights
        Per-AU weights of a ``weighted_*`` AU loss (:func:`au_loss_weights` of the training
        labels: ``n_neg / n_pos`` for weighted BCE, inverse positive rate with mean 1 for the
        weighted asymmetric loss); ``train`` computes them.
    many_to_many
        Train on every frame of each window (``model(..., many_to_many=True)`` against the
        dataset's ``<head>_seq`` targets, :mod:`mmaffect.training.many_to_many`): seed 004's
        GRU. Validation and prediction stay on the middle frame.
    features
        The named feature sets the inputs are (``modalities`` then holds the same names;
        :mod:`mmaffect.training.feature_sets`), or None for the modalities.
    loss_weights
        ``λ`` per head for the masked sum (1.0 where not given).
    expr_confidence
        Label-smoothing confidence λ of the smoothed cross-entropy (0.9).
    optimizer
        ``{"name": "sgd" | "adam" | "adamw", "lr": …, **kwargs}`` (default SGD, lr 0.002,
        momentum 0.9).
    scheduler
        ``{"name": "cosine_warm_restarts" | "cosine" | "step" | "multistep" | "none",
        "interval": "epoch" | "step", **kwargs}`` (default warm restarts, ``T_0=10``; ``step``:
        ``step_size``, ``gamma``; ``multistep``: ``milestones``, ``gamma``).
    label_names
        ``{"expr": class names, "au": AU names}`` of the training labels.
    feature_configs
        ``{modality: config hash}`` of the feature cache entries trained on, if known.
    feature_settings
        ``{modality: extractor configuration}`` of those entries (their ``meta.json`` config),
        so that ``predict`` can say which extraction options reproduce them.
    """

    def __init__(
        self,
        model_name: str = "fusion",
        model_hparams: Mapping[str, Any] | None = None,
        task: str = "expr",
        modalities: Sequence[str] = ("frame", "clip", "speech", "word"),
        edition: str = "abaw3",
        window: int = 60,
        losses: Mapping[str, str] | None = None,
        loss_weights: Mapping[str, float] | None = None,
        au_weights: Sequence[float] | None = None,
        many_to_many: bool = False,
        features: Sequence[str] | None = None,
        expr_confidence: float = 0.9,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        label_names: Mapping[str, Sequence[str]] | None = None,
        feature_configs: Mapping[str, str] | None = None,
        feature_settings: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.task = task.lower()
        self.heads = task_heads(self.task)
        self.modalities = tuple(modalities)
        self.edition = str(edition).lower()
        hp = dict(model_hparams or {})
        hp["modalities"] = list(self.modalities)
        hp["tasks"] = list(self.heads)
        names = dict(label_names or {})
        if "expr" in names and "n_expr" not in hp:
            hp["n_expr"] = len(names["expr"])
        if "au" in names and "n_au" not in hp:
            hp["n_au"] = len(names["au"])
        try:
            self.model = create_model(model_name, **hp)
        except TypeError as e:
            raise InputError(
                f"model {model_name!r} does not take these model_hparams ({e})",
                hint="model_hparams must be arguments of the model (docs/models_architectures.md)",
            ) from None
        full_hp = dict(getattr(self.model, "hparams", hp))
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "model_hparams": full_hp,
                "task": self.task,
                "modalities": list(self.modalities),
                "edition": self.edition,
                "window": int(window),
                "losses": {**DEFAULT_LOSSES, **check_losses(losses or {})},
                "loss_weights": dict(loss_weights or {}),
                "au_weights": None if au_weights is None else [float(w) for w in au_weights],
                "many_to_many": bool(many_to_many),
                "features": list(features) if features else None,
                "expr_confidence": float(expr_confidence),
                "optimizer": {**DEFAULT_OPTIMIZER, **dict(optimizer or {})},
                "scheduler": dict(DEFAULT_SCHEDULER if scheduler is None else scheduler),
                "label_names": {k: list(v) for k, v in names.items()},
                "feature_configs": dict(feature_configs or {}),
                "feature_settings": dict(feature_settings or {}),
            }
        )
        self._loss_fns = self._make_losses()
        # a dry run: a bad optimizer or scheduler setting fails here, not after the first epoch
        make_optimization(
            [torch.nn.Parameter(torch.zeros(1))],
            self.hparams["optimizer"],
            self.hparams["scheduler"],
        )
        self._val: list[dict[str, np.ndarray]] = []

    # ------------------------------------------------------------------ losses
    def _make_losses(self) -> dict[str, Callable[..., Tensor]]:
        fns = {}
        for head in self.heads:
            name = self.hparams["losses"][head]
            fn = LOSSES[head][name]
            if head == "expr" and name == "smoothed_ce":
                fn = partial(fn, confidence=self.hparams["expr_confidence"])
            if head == "au" and name in AU_WEIGHTINGS:
                weights = self.hparams["au_weights"]
                n_au = int(self.model.hparams.get("n_au", 12))
                if weights is None or len(weights) != n_au:
                    raise InputError(
                        f"the {name} AU loss needs {n_au} per-AU weights (au_weights), "
                        f"got {'none' if weights is None else len(weights)}",
                        hint="mmaffect train computes them from the training labels",
                    )
                fn = partial(fn, **{AU_WEIGHTINGS[name][1]: torch.tensor(weights)})
            fns[head] = fn
        return fns

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Model outputs (``expr`` logits, ``au`` logits, ``va`` in [-1, 1]) for a dataset batch."""
        return self.model(model_inputs(batch, self.modalities))

    def loss_terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> dict:
        """Weighted per-head loss terms (sentinel targets masked), via :func:`mtl_loss_terms`,
        and the model's own terms (``model.auxiliary_losses``, e.g. DAN's) where it has some."""
        terms = L_.mtl_loss_terms(
            {h: outputs[h] for h in self.heads},
            {h: batch[h] for h in self.heads},
            weights=self.hparams["loss_weights"] or None,
            losses=self._loss_fns,
        )
        own = getattr(self.model, "auxiliary_losses", None)  # e.g. DAN's affinity, partition
        if own is not None:
            terms.update(own(outputs, {h: batch[h] for h in self.heads}))
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        if self.hparams.get("many_to_many"):  # every frame of the window, (B, T, C)
            outputs = self.model(model_inputs(batch, self.modalities), many_to_many=True)
            terms = self.loss_terms(outputs, {h: batch[f"{h}_seq"] for h in self.heads})
        else:
            terms = self.loss_terms(self(batch), batch)
        loss = torch.stack(list(terms.values())).sum()
        self._check_finite(loss, terms)
        bs = len(batch["expr"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        if len(terms) > 1:
            for k, v in terms.items():
                self.log(f"train/loss_{k.lower()}", v, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _check_finite(self, loss: Tensor, terms: Mapping[str, Tensor]) -> None:
        """Stop at the first step whose loss is NaN or infinite, naming the terms that are: a
        diverged run would otherwise go on to write checkpoints of NaN weights."""
        if bool(torch.isfinite(loss)):
            return
        bad = ", ".join(f"{k} {float(v.detach())}" for k, v in terms.items() if not v.isfinite())
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        raise TrainingDiverged(
            f"the training loss is not finite at epoch {self.current_epoch}, step "
            f"{self.global_step} ({bad}); the run stopped, the checkpoints of earlier epochs "
            "are kept",
            hint=f"lower the learning rate (--lr, now {lr:g}) and train again with --no-resume",
        )

    def on_train_epoch_start(self) -> None:
        # the learning rate at the start of the epoch (metrics.csv, the per-epoch lines)
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("lr", torch.tensor(lr, dtype=torch.float64), on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        outputs = self(batch)
        terms = self.loss_terms(outputs, batch)
        loss = torch.stack(list(terms.values())).sum()
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["expr"]))
        part = {}
        for h in self.heads:
            part[f"pred_{h}"] = outputs[h].detach().float().cpu().numpy()
            part[f"true_{h}"] = batch[h].detach().cpu().numpy()
        self._val.append(part)

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        gathered = {k: np.concatenate([p[k] for p in self._val]) for k in self._val[0]}
        self._val = []
        scores = self.score(gathered)
        self.log("val/score", float(scores.score), prog_bar=True)
        for k, v in scores.to_dict().items():
            if k != "score":
                self.log(f"val/{k}", float(v))

    def score(self, gathered: Mapping[str, np.ndarray]) -> metrics.Scores:
        """Official score of ``edition`` from gathered ``pred_<head>``/``true_<head>`` arrays.

        EXPR predictions are the argmax of the logits, AU predictions ``logit >= 0``
        (probability 0.5), VA the outputs. MTL uses the edition's MTL track when it has one,
        otherwise ``P_VA + P_EXPR + P_AU`` (:func:`mmaffect.metrics.mtl_scores`).
        """
        pred: dict[str, Any] = {}
        for h in self.heads:
            p = gathered[f"pred_{h}"]
            if h == "expr":
                p = p.argmax(axis=-1)
            elif h == "au":
                p = (p >= 0).astype(np.int64)
            pred[h.upper()] = p
        true = {h.upper(): gathered[f"true_{h}"] for h in self.heads}
        if self.task != "mtl":
            t = self.task.upper()
            return metrics.official_score(t, self.edition, pred[t], true[t])
        if "MTL" in metrics.edition_tracks(self.edition):
            return metrics.official_score("MTL", self.edition, pred, true)
        n = len(self.hparams["label_names"].get("expr", [])) or 8
        return metrics.mtl_scores(pred, true, n_classes=n)

    # ------------------------------------------------------------------ prediction
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Outputs of a batch with its ``video_id`` and ``frame`` (for writing predictions)."""
        outputs = {k: v.detach().cpu() for k, v in self(batch).items()}
        outputs["video_id"] = list(batch["video_id"])
        outputs["frame"] = batch["frame"].detach().cpu()
        return outputs

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        return make_optimization(
            self.parameters(),
            self.hparams["optimizer"],
            self.hparams["scheduler"],
            max_epochs=int(self.trainer.max_epochs or 1),
        )


def make_optimization(
    params: Any, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any], max_epochs: int = 1
) -> Any:
    """The optimiser (and scheduler) of :meth:`AffectModule.configure_optimizers`.

    Raises
    ------
    InputError
        An unknown optimiser or scheduler name, or arguments they do not take.
    """
    opt_cfg = dict(optimizer)
    name = str(opt_cfg.pop("name", "sgd")).lower()
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if name not in classes:
        raise InputError(f"unknown optimizer {name!r}", hint=f"choose among {', '.join(classes)}")
    if name != "sgd":
        opt_cfg.pop("momentum", None)
    sch_cfg = dict(scheduler)
    sch_name = str(sch_cfg.pop("name", "none")).lower()
    interval = sch_cfg.pop("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise InputError(f"unknown scheduler interval {interval!r}", hint="epoch or step")
    schedulers = {
        "cosine_warm_restarts": torch.optim.lr_scheduler.CosineAnnealingWarmRestarts,
        "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
        "step": torch.optim.lr_scheduler.StepLR,  # step_size, gamma
        "multistep": torch.optim.lr_scheduler.MultiStepLR,  # milestones, gamma
    }
    if sch_name not in (*schedulers, "none", ""):
        raise InputError(
            f"unknown scheduler {sch_name!r}",
            hint="cosine_warm_restarts, cosine, step, multistep or none",
        )
    if sch_name == "cosine":
        sch_cfg.setdefault("T_max", max(1, max_epochs))
    try:
        opt = classes[name](params, **opt_cfg)
        if sch_name in ("none", ""):
            return opt
        sch = schedulers[sch_name](opt, **sch_cfg)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"optimizer {name!r} / scheduler {sch_name!r}: {e}",
            hint="check the optimizer and scheduler settings of the training config",
        ) from None
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": interval}}
