"""Training runs: :class:`TrainConfig` (YAML round trip) and :func:`train` (Lightning Trainer)."""

from __future__ import annotations

import csv
import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmaffect.errors import InputError

__all__ = ["TrainConfig", "TrainResult", "build_datasets", "train"]

CONFIG_NAME = "config.yaml"


@dataclass
class TrainConfig:
    """Everything one training run needs; ``to_yaml``/``from_yaml`` round-trip.

    Attributes
    ----------
    task
        ``expr``, ``va``, ``au`` or ``mtl``.
    edition
        ABAW edition whose official metric is ``val/score`` (``abaw5``).
    annotations
        Uni-task: the folder holding ``Train_Set``/``Validation_Set`` of that track. MTL: the
        folder holding the MTL split files (``train_set.txt``, ``validation_set.txt``, …).
    cache
        Feature cache root.
    model, model_hparams
        Registry model name and its constructor arguments.
    modalities
        Input modalities among ``frame``, ``clip``, ``speech``, ``word``.
    window, stride
        Window length ``T`` and the stride over labelled frames (training split only).
    batch_size, epochs, lr, seed
        As named (batch 80, lr 0.002 as in the fusion paper).
    balanced
        Class-balanced sampling (EXPR classes for ``expr``/``mtl``, AUs for ``au``).
    num_workers
        DataLoader workers.
    precision
        Lightning precision; ``auto``: ``16-mixed`` on GPU, ``32-true`` on CPU.
    device
        ``auto``, ``cpu`` or ``gpu``.
    out
        Run folder (checkpoints, ``config.yaml``, ``metrics.csv``).
    resume
        Continue from ``out/last.ckpt`` when it exists.
    optimizer, scheduler, losses, loss_weights, expr_confidence
        Passed to :class:`~mmaffect.training.module.AffectModule`.
    feature_configs
        ``{modality: config hash}`` choosing cache entries.
    """

    task: str = "expr"
    edition: str = "abaw5"
    annotations: str | None = None
    cache: str | None = None
    model: str = "fusion"
    model_hparams: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: ["frame", "clip", "speech", "word"])
    window: int = 60
    stride: int = 1
    batch_size: int = 80
    epochs: int = 20
    lr: float = 0.002
    seed: int = 0
    balanced: bool = False
    num_workers: int = 0
    precision: str = "auto"
    device: str = "auto"
    out: str | None = None
    resume: bool = True
    optimizer: dict[str, Any] = field(
        default_factory=lambda: {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0}
    )
    scheduler: dict[str, Any] = field(
        default_factory=lambda: {"name": "cosine_warm_restarts", "T_0": 10, "T_mult": 1}
    )
    losses: dict[str, str] = field(default_factory=dict)
    loss_weights: dict[str, float] = field(default_factory=dict)
    expr_confidence: float = 0.9
    feature_configs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("annotations", "cache", "out"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(value))
        if isinstance(self.modalities, str):
            self.modalities = [m for m in self.modalities.replace(",", " ").split() if m]
        self.modalities = [str(m) for m in self.modalities]
        self.task = str(self.task).lower()
        self.edition = str(self.edition).lower()

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (YAML-safe values)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown training config key(s): {', '.join(unknown)}",
                hint=f"valid keys: {', '.join(sorted(known))}",
            )
        return cls(**data)

    @classmethod
    def from_yaml(cls, source: str | Path) -> TrainConfig:
        """Read a YAML file (a path) or YAML text (a string containing a newline)."""
        if isinstance(source, Path) or "\n" not in str(source):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"{path}: no such training config file")
            text = path.read_text()
        else:
            text = str(source)
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise InputError("a training config must be a YAML mapping")
        return cls.from_dict(data)


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    out: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    best_score: float | None
    epochs: int
    metrics_csv: Path | None
    module: Any = field(repr=False, default=None)
    val_dataset: Any = field(repr=False, default=None)


def _label_names(space: Any) -> list[str]:
    return [str(n) for n in space.names]


def build_datasets(config: TrainConfig) -> tuple[Any, Any, dict[str, list[str]]]:
    """The train and validation :class:`WindowDataset` of a config and the label names.

    Returns
    -------
    tuple
        ``(train_dataset, val_dataset, {"expr": class names, "au": AU names})``.
    """
    from mmaffect.annotations import AU_12, EXPR_8, read_split_folders
    from mmaffect.training.dataset import WindowDataset

    if not config.annotations or not config.cache:
        raise InputError("training needs an annotations folder and a feature cache folder")
    if config.task == "mtl":
        splits = _mtl_splits(Path(config.annotations))
        names = {"expr": _label_names(EXPR_8), "au": _label_names(AU_12)}
    else:
        splits = read_split_folders(config.annotations, track=config.task.upper())
        first = next(iter(splits["train" if "train" in splits else "validation"].values()))
        check_edition_layout(config.task, config.edition, first.space, config.annotations)
        names = {config.task: _label_names(first.space)} if config.task != "va" else {}
    for need in ("train", "validation"):
        if need not in splits:
            raise InputError(f"{config.annotations}: no {need} split found")
    common = dict(
        modalities=config.modalities, window=config.window, configs=config.feature_configs or None
    )
    train_ds = WindowDataset(config.cache, splits["train"], stride=config.stride, **common)
    val_ds = WindowDataset(config.cache, splits["validation"], **common)
    return train_ds, val_ds, names


def _mtl_splits(folder: Path) -> dict[str, Any]:
    """MTL rows per split: the organisers' MTL files, else joined uni-task track folders."""
    from mmaffect.annotations import (
        find_mtl_files,
        find_track_folders,
        mtl_from_tracks,
        read_mtl_file,
        read_split_folders,
    )

    try:
        files = find_mtl_files(folder)
    except InputError as no_files:
        try:
            tracks = find_track_folders(folder)
        except InputError:
            raise InputError(
                f"{folder}: neither MTL split files nor uni-task track folders",
                hint="give the folder holding train_set.txt/validation_set.txt, or the one "
                "holding the EXPR, AU and VA folders (each with Train_Set/Validation_Set); "
                + (no_files.hint or ""),
            ) from None
        per_track = {t: read_split_folders(f, track=t) for t, f in tracks.items()}
        names = {s for splits in per_track.values() for s in splits}
        return {
            split: mtl_from_tracks({t: sp[split] for t, sp in per_track.items() if split in sp})
            for split in sorted(names)
        }
    return {k: read_mtl_file(p) for k, p in files.items()}


def check_edition_layout(task: str, edition: str, space: Any, where: Any = None) -> None:
    """Refuse labels whose layout is not the one ``edition`` scores (7- vs 8-class EXPR, …).

    Raises
    ------
    InputError
        The edition has no such track, or it scores another label space.
    """
    from mmaffect import metrics
    from mmaffect.annotations import label_space_for

    metrics.track_spec(task.upper(), edition)
    digits = "".join(c for c in edition if c.isdigit())
    expected = label_space_for(task, int(digits))
    if space != expected:
        fits = [
            f"abaw{e}"
            for e in range(1, 9)
            if task.upper() in metrics.edition_tracks(f"abaw{e}")
            and label_space_for(task, e) == space
        ]
        raise InputError(
            f"{where or 'the labels'}: the files are {space.describe()} but "
            f"{edition.upper()} scores {expected.describe()}",
            hint=f"pass the edition of these files (--edition {' or '.join(fits) or '?'})",
        )


def _entry_hashes(datasets: list[Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``{modality: config hash}`` when every video used entries of one configuration, and
    ``{modality: configuration}`` of those entries (from their ``meta.json``)."""
    import json

    seen: dict[str, set[str]] = {}
    settings: dict[str, Any] = {}
    for ds in datasets:
        for src in ds.videos:
            for m, folder in src.entries.items():
                seen.setdefault(m, set()).add(folder.name.split("-", 1)[-1])
                if m not in settings:
                    settings[m] = json.loads((folder / "meta.json").read_text()).get("config")
    hashes = {m: next(iter(h)) for m, h in seen.items() if len(h) == 1}
    return hashes, {m: settings[m] for m in hashes}


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _merge_csv(path: Path, previous: list[dict[str, str]]) -> None:
    """Put the rows of the epochs before a resume back in front of the resumed run's rows."""
    new = _read_csv(path)
    first_new = min((int(r["epoch"]) for r in new if r.get("epoch")), default=None)
    kept = [r for r in previous if first_new is None or int(r.get("epoch") or 0) < first_new]
    keys: list[str] = []
    for row in kept + new:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(kept + new)


def _accelerator(device: str) -> str:
    import torch

    device = device.lower()
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu"):
        return "gpu"
    if device == "cpu":
        return "cpu"
    raise InputError(f"unknown device {device!r}", hint="auto, cpu or gpu")


def train(config: TrainConfig) -> TrainResult:
    """Train a model as ``config`` says.

    The run folder ``config.out`` gets ``config.yaml``, checkpoints (best ``val/score`` and
    ``last.ckpt``) and ``metrics.csv`` (one ``val/score`` row per epoch). An existing
    ``last.ckpt`` is resumed when ``config.resume`` (the epoch count continues).

    Parameters
    ----------
    config
        The run's settings.

    Returns
    -------
    TrainResult
        Checkpoint paths, best score, epochs done and the in-memory module.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from mmaffect.training.dataset import make_loader
    from mmaffect.training.module import AffectModule, task_heads

    task_heads(config.task)
    if not config.out:
        raise InputError("training needs an output folder (out)")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / CONFIG_NAME)
    L.seed_everything(config.seed, workers=True, verbose=False)

    train_ds, val_ds, names = build_datasets(config)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise InputError("the train or validation split has no labelled frame with features")
    balanced = None
    if config.balanced:
        balanced = {"expr": "expr", "mtl": "expr", "au": "au"}.get(config.task)
    train_loader = make_loader(
        train_ds,
        batch_size=config.batch_size,
        shuffle=True,
        balanced=balanced,
        num_workers=config.num_workers,
        seed=config.seed,
    )
    val_loader = make_loader(
        val_ds, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers
    )
    hashes, settings = _entry_hashes([train_ds, val_ds])
    feature_configs = dict(config.feature_configs) or hashes
    module = AffectModule(
        model_name=config.model,
        model_hparams=config.model_hparams,
        task=config.task,
        modalities=config.modalities,
        edition=config.edition,
        window=config.window,
        losses=config.losses,
        loss_weights=config.loss_weights,
        expr_confidence=config.expr_confidence,
        optimizer={**config.optimizer, "lr": config.lr},
        scheduler=config.scheduler,
        label_names=names,
        feature_configs=feature_configs,
        feature_settings=settings,
    )
    accelerator = _accelerator(config.device)
    precision = config.precision
    if precision == "auto" or (
        accelerator == "cpu" and "16" in precision and "bf" not in precision
    ):
        precision = "16-mixed" if accelerator == "gpu" else "32-true"
    best_cb = ModelCheckpoint(
        dirpath=out,
        filename="best-{epoch:03d}",
        monitor="val/score",
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [best_cb]
    if sys.stdout.isatty():
        callbacks.append(RichProgressBar())
    logger = CSVLogger(save_dir=str(out), name="", version="logs")
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=sys.stdout.isatty(),
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=False,
    )
    last = out / "last.ckpt"
    ckpt_path = str(last) if config.resume and last.is_file() else None
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    previous = _read_csv(metrics_csv) if ckpt_path else []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    if previous:
        _merge_csv(metrics_csv, previous)
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else None
    score = best_cb.best_model_score
    return TrainResult(
        out=out,
        best_checkpoint=best,
        last_checkpoint=last if last.is_file() else None,
        best_score=None if score is None else float(score),
        epochs=int(trainer.current_epoch),
        metrics_csv=metrics_csv if metrics_csv.is_file() else None,
        module=module,
        val_dataset=val_ds,
    )
