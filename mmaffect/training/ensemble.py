"""``mmaffect ensemble``: trained checkpoints combined into one self-describing checkpoint.

:func:`build_ensemble` loads the members (checkpoints of ``mmaffect train``), runs each on the
validation split (image members on its face crops with flip averaging, as ``predict`` runs
them; window members on the windows of the cached features), chooses per task the weights of
the weighted sum of their outputs (:mod:`mmaffect.models.ensemble`) and writes an ``ensemble``
checkpoint that ``predict --checkpoint`` and ``extract --frame-model`` use like any other.

Weighting:

* ``fit`` (default): the weights on a grid over the simplex (steps of 0.1 for up to 4 members,
  coarser beyond, at most about 1,000 points) that give the highest score of the task on the
  validation split: macro-F1 over the classes (EXPR), mean F1 of the AUs at probability 0.5
  (AU), mean CCC of valence and arousal (VA); ties go to the weights closest to equal. A task
  without validation labels keeps equal weights.
* ``equal``: soft voting (DAN's bagging); the validation split, when given, is only scored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmaffect.errors import InputError

__all__ = ["EnsembleResult", "ValidationData", "build_ensemble", "fit_weights", "task_score"]

WEIGHTINGS = ("fit", "equal")


@dataclass
class ValidationData:
    """Where the validation split is: class folders (``val_images``, image members), or ABAW
    labels (``annotations``) with Aff-Wild2 frame folders (``frames``) or a feature cache
    (``cache``: the faces of videos for image members, the features for window members)."""

    val_images: str | Path | None = None
    annotations: str | Path | None = None
    frames: str | Path | None = None
    cache: str | Path | None = None
    videos: str | Path | None = None
    crop_cache: str | Path | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.val_images, self.annotations, self.frames))


@dataclass
class EnsembleResult:
    """What :func:`build_ensemble` wrote: the checkpoint, the weights and the validation
    scores (``{task: {"members": [...], "ensemble": s}}``, empty without validation data)."""

    out: Path
    weights: dict[str, list[float]]
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int = 0


def task_score(task: str, pred: np.ndarray, true: np.ndarray, n_expr: int = 8) -> float:
    """The task's ABAW3+ score of combined outputs: macro-F1 (EXPR, arg-max), mean F1 (AU,
    probability ≥ 0.5), mean CCC (VA)."""
    from mmaffect import metrics

    if task == "expr":
        return float(metrics.expr_scores(pred.argmax(-1), true, n_expr).score)
    if task == "au":
        return float(metrics.au_scores((pred >= 0.5).astype(np.int64), true).score)
    return float(metrics.va_scores(pred, true).score)


def _labelled(task: str, true: np.ndarray) -> bool:
    if task == "expr":
        return bool((true >= 0).any())
    if task == "au":
        return bool((true != -1).any(axis=0).all())
    return bool((true != -5).all(axis=-1).any())


def _simplex(k: int, max_points: int = 1000) -> np.ndarray:
    """Weights on a regular grid over the k-simplex, ``(P, k)``."""
    steps = max([n for n in range(1, 11) if math.comb(n + k - 1, k - 1) <= max_points] or [1])
    points = []
    for bars in itertools.combinations(range(steps + k - 1), k - 1):
        edges = (-1, *bars, steps + k - 1)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(points, np.float64) / steps


def fit_weights(
    parts: Sequence[np.ndarray], score: Callable[[np.ndarray], float]
) -> tuple[list[float], float]:
    """The grid weights whose weighted sum of ``parts`` (each ``(N, C)``) scores highest by
    ``score(combined)``; ties go to the weights closest to equal."""
    k = len(parts)
    stack = np.stack(parts)  # (k, N, C)
    best: tuple[float, float, np.ndarray] | None = None
    for w in _simplex(k):
        s = score(np.tensordot(w, stack, axes=1))
        closeness = -float(np.square(w - 1 / k).sum())
        if best is None or (s, closeness) > (best[0], best[1]):
            best = (s, closeness, w)
    return [round(float(x), 6) for x in best[2]], best[0]


def _load(path: Path, device: str) -> Any:
    from mmaffect.training.module import AffectModule

    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        return AffectModule.load_from_checkpoint(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 - torch/lightning raise many kinds
        raise InputError(f"{path}: not a checkpoint written by mmaffect train ({e})") from None


def _agreed(members: list[Any], key: str, keys: set[str] | None = None) -> dict[str, Any]:
    """``hparams[key]`` merged over the members; entries (of ``keys``) must agree."""
    out: dict[str, Any] = {}
    for m in members:
        for k, v in (m.hparams.get(key) or {}).items():
            if keys is not None and k not in keys:
                continue
            if k in out and out[k] != v:
                raise InputError(
                    f"the members were trained on different {k} settings ({key})",
                    hint="combine members trained on the same features",
                )
            out[k] = v
    return out


def ensemble_module(paths: Sequence[Path], members: list[Any]) -> Any:
    """The ensemble's :class:`AffectModule` (equal weights), the members' weights loaded."""
    from mmaffect.training.module import AffectModule

    heads = [set(m.heads) for m in members]
    tasks = [t for t in ("expr", "au", "va") if all(t in h for h in heads)]
    if not tasks:
        raise InputError("the members have no task in common", hint="combine models of one task")
    for kind in ("expr", "au"):
        if kind in tasks:
            names = [tuple(m.hparams["label_names"].get(kind, ())) for m in members]
            if len(set(names)) > 1:
                raise InputError(f"the members' {kind} labels differ: {names}")
    specs = [
        {"model": m.hparams["model_name"], "hparams": dict(m.model.hparams),
         "window": int(m.hparams["window"]), "task": m.hparams["task"], "checkpoint": str(p)}
        for p, m in zip(paths, members, strict=True)
    ]  # fmt: skip
    image = all(list(m.hparams["modalities"]) == ["image"] for m in members)
    used = {"faces", *(x for m in members for x in m.hparams["modalities"])}
    first = members[0].hparams
    module = AffectModule(
        model_name="ensemble",
        model_hparams={"members": specs},
        task="mtl" if len(tasks) == 3 else tasks[0],  # training tasks give 1 or 3 heads
        modalities=["image"] if image else _union(members),
        edition=first["edition"],
        window=max(s["window"] for s in specs),
        label_names={k: v for k, v in first["label_names"].items() if k in tasks},
        feature_configs={} if image else _agreed(members, "feature_configs", used),
        feature_settings={} if image else _agreed(members, "feature_settings", used),
    )
    for target, member in zip(module.model.members, members, strict=True):
        target.load_state_dict(member.model.state_dict())
    return module.eval()


def _union(members: list[Any]) -> list[str]:
    from mmaffect.models import MODALITIES

    used = {x for m in members for x in m.hparams["modalities"]}
    return [x for x in MODALITIES if x in used]


def _validation_dataset(module: Any, data: ValidationData, root: Path) -> Any:
    """The validation split the members are run on (crops or feature windows)."""
    from mmaffect.training.crops import ImageDataset, class_folder_crops
    from mmaffect.training.train import TrainConfig, label_splits

    image = module.modalities == ("image",)
    if data.val_images is not None:
        if not image:
            raise InputError("class folders (--val-images) serve image members only")
        return ImageDataset(class_folder_crops(data.val_images, root, module.model.input_size))
    if data.annotations is None or (data.frames is None and data.cache is None):
        raise InputError(
            "the validation split needs --val-images, or --annotations with --frames or --cache",
            hint="or --weighting equal to combine without validation",
        )
    config = TrainConfig(
        task=module.task, edition=module.edition, annotations=str(data.annotations)
    )
    labels = label_splits(config)[0]["validation"]
    if not image:
        from mmaffect.training.dataset import WindowDataset

        configs = dict(module.hparams["feature_configs"]) or None
        return WindowDataset(
            data.cache, labels, module.modalities, window=module.hparams["window"], configs=configs
        )
    return ImageDataset(_labelled_crops(module, data, labels, root))


def _labelled_crops(module: Any, data: ValidationData, labels: Any, root: Path) -> Any:
    from mmaffect.faces.crops import FaceCrop
    from mmaffect.training.crops import frame_folder_crops, video_crops

    size = module.model.input_size
    if data.frames is not None:
        return frame_folder_crops(data.frames, labels, root, size, name="validation")
    crop = FaceCrop.from_dict(module.model.hparams["crop"])
    return video_crops(data.cache, labels, root, size, crop, videos=data.videos, name="validation")


def member_outputs(
    module: Any, dataset: Any, batch_size: int = 64, device: str = "cpu"
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Each member's own outputs on ``dataset`` (image members: flip-averaged ``embed``, as
    ``predict`` uses them) and the targets, ``({task: (N, C)} per member, {task: (N, …)})``."""
    import torch

    from mmaffect.training.dataset import make_loader
    from mmaffect.training.module import model_inputs

    model = module.model.to(device).eval()
    parts: list[dict[str, list]] = [{t: [] for t in model.tasks} for _ in model.members]
    true: dict[str, list] = {t: [] for t in model.tasks}
    with torch.inference_mode():
        for batch in make_loader(dataset, batch_size=batch_size, shuffle=False):
            if model.image:
                images = batch["feat_image"].to(device)
                outs = [m.embed(images, flip=True)[1] for m in model.members]
            else:
                inputs = {k: v.to(device) for k, v in model_inputs(batch, model.modalities).items()}
                outs = model.member_probabilities(inputs)
            for part, out in zip(parts, outs, strict=True):
                for t in model.tasks:
                    part[t].append(out[t].float().cpu().numpy())
            for t in model.tasks:
                true[t].append(batch[t].numpy())
    joined = [{t: np.concatenate(v) for t, v in p.items()} for p in parts]
    return joined, {t: np.concatenate(v) for t, v in true.items()}


def build_ensemble(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    *,
    validation: ValidationData | None = None,
    weighting: str = "fit",
    device: str = "cpu",
    batch_size: int = 64,
    report: Callable[[str], None] | None = None,
) -> EnsembleResult:
    """Combine ``checkpoints`` into one ensemble checkpoint at ``out``.

    Parameters
    ----------
    checkpoints
        Two or more checkpoints of ``mmaffect train``: image models, or models over cached
        features (not both); they must share a task and its labels.
    out
        The ``.ckpt`` to write (atomically).
    validation
        The validation split (needed by ``weighting="fit"``).
    weighting
        ``fit`` (weights chosen on the validation split) or ``equal`` (soft voting).
    device, batch_size
        Where and how the members run on the validation split.
    report
        Called with one line per task (member scores, weights, ensemble score).

    Returns
    -------
    EnsembleResult

    Raises
    ------
    InputError
        Fewer than 2 members, members that do not fit together, a missing validation split.
    """
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown weighting {weighting!r}", hint="fit or equal")
    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise InputError("an ensemble needs at least 2 checkpoints", hint="give 2 or more")
    validation = validation or ValidationData()
    if weighting == "fit" and not validation.given:
        raise InputError(
            "--weighting fit chooses the weights on the validation split",
            hint="give --val-images, or --annotations with --frames or --cache "
            "(or --weighting equal)",
        )
    module = ensemble_module(paths, [_load(p, "cpu") for p in paths])
    weights = dict(module.model.weights)
    scores: dict[str, dict[str, Any]] = {}
    samples = 0
    if validation.given:
        root = Path(validation.crop_cache or Path(out).parent / "crops")
        dataset = _validation_dataset(module, validation, root)
        if len(dataset) == 0:
            raise InputError("the validation split has no labelled sample")
        samples = len(dataset)
        parts, true = member_outputs(module, dataset, batch_size, device)
        weights, scores = _choose(module, parts, true, weighting, weights)
        module = module.cpu()
    _set_weights(module, weights, {"weighting": weighting, "samples": samples, "scores": scores})
    _write(module, Path(out))
    for task, s in scores.items():
        if report is not None:
            members = ", ".join(f"{x:.4f}" for x in s["members"])
            w = ", ".join(f"{x:.3g}" for x in weights[task])
            report(f"{task}: members {members}; weights {w}; ensemble {s['ensemble']:.4f}")
    return EnsembleResult(Path(out), weights, scores, samples)


def _choose(
    module: Any, parts: list[dict], true: dict, weighting: str, weights: dict
) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    n_expr = int(module.model.members[0].hparams.get("n_expr", 8))
    chosen, scores = dict(weights), {}
    for task in module.model.tasks:
        if not _labelled(task, true[task]):
            continue  # equal weights
        score = lambda p, t=task: task_score(t, p, true[t], n_expr)  # noqa: E731
        member = [score(p[task]) for p in parts]
        if weighting == "fit":
            chosen[task], best = fit_weights([p[task] for p in parts], score)
        else:
            best = score(sum(w * p[task] for w, p in zip(weights[task], parts, strict=True)))
        scores[task] = {"members": [round(x, 6) for x in member], "ensemble": round(best, 6)}
    return chosen, scores


def _set_weights(module: Any, weights: dict, fitted: dict) -> None:
    """The chosen weights into the model and the hyperparameters the checkpoint keeps."""
    model = module.model
    model.weights = {t: [float(w) / sum(ws) for w in ws] for t, ws in weights.items()}
    model.hparams["weights"] = model.weights
    model.hparams["fitted"] = fitted
    module.hparams["model_hparams"] = dict(model.hparams)


def _write(module: Any, out: Path) -> None:
    import lightning
    import torch

    from mmaffect.atomic import atomic_path

    ckpt = {
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
