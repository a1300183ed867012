"""Training runs: :class:`TrainConfig` (YAML round trip) and :func:`train` (Lightning Trainer)."""

from __future__ import annotations

import csv
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmaffect.errors import InputError

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_datasets",
    "check_edition",
    "image_datasets",
    "image_model",
    "label_splits",
    "prepare",
    "train",
]

CONFIG_NAME = "config.yaml"
LAST_NAME = "last.ckpt"


@dataclass
class TrainConfig:
    """Everything one training run needs; ``to_yaml``/``from_yaml`` round-trip.

    Attributes
    ----------
    task
        ``expr``, ``va``, ``au`` or ``mtl``.
    edition
        ABAW edition whose official metric is ``val/score`` (``abaw3``, as ``predict``); it
        must have the task's track (MTL: ABAW3, 4 and 7).
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
        Continue from ``out/last.ckpt`` when it exists; False starts over in ``out`` (the
        previous run's checkpoints there are replaced).
    optimizer, scheduler, losses, loss_weights, expr_confidence
        Passed to :class:`~mmaffect.training.module.AffectModule`.
    features
        Named feature sets as the inputs instead of ``modalities`` (``face_cnn``,
        ``imagenet``, ``blendshapes``, …: :data:`~mmaffect.training.feature_sets.FEATURE_SETS`;
        seed 001's several visual feature sets; model ``affine_transformer``). The entry
        behind each is found in the cache (``feature_configs: {set: hash}`` chooses one where
        several hold it); the model's widths come from the data.
    many_to_many
        Train on the targets of every frame of each window (a model whose ``forward`` takes
        ``many_to_many``: ``temporal_ensemble``; seed 004's GRU); validation stays on the
        middle frame.
    feature_configs
        ``{modality: config hash}`` choosing cache entries.
    images, val_images
        Image-level training (an image model: ``face_cnn``, ``dan``,
        ``hybrid_cnn_transformer``): class folders ``<class>/<image>`` of the
        training and validation images (FER2013, AffectNet, RAF-DB layout).
    frames
        Image-level training on Aff-Wild2 ``cropped_aligned/<video>/00001.jpg`` frame folders,
        labelled by ``annotations`` (the model records the organisers' crop, template × 1.0).
    videos
        Image-level training on videos (``annotations`` and ``cache``): the faces ``extract``
        found, cut with the model's crop; this folder holds the videos (default: the path each
        faces entry recorded).
    crop_cache
        Where face crops are cached for image-level training (default ``OUT/crops``).
    models_dir
        Where the pretrained weights an image model starts from are looked up (else
        ``MMAFFECT_MODELS``, the user cache and installed weight packages).
    """

    task: str = "expr"
    edition: str = "abaw3"
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
    many_to_many: bool = False
    features: list[str] = field(default_factory=list)
    expr_confidence: float = 0.9
    feature_configs: dict[str, str] = field(default_factory=dict)
    images: str | None = None
    val_images: str | None = None
    crop_cache: str | None = None
    models_dir: str | None = None
    frames: str | None = None
    videos: str | None = None

    @property
    def image_level(self) -> bool:
        """Whether this run trains an image model on face crops."""
        return self.modalities == ["image"] or self.images is not None or self.frames is not None

    def __post_init__(self) -> None:
        for name in (
            "annotations",
            "cache",
            "out",
            "images",
            "val_images",
            "crop_cache",
            "models_dir",
            "frames",
            "videos",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(value))
        if isinstance(self.modalities, str):
            self.modalities = [m for m in self.modalities.replace(",", " ").split() if m]
        self.modalities = [str(m) for m in self.modalities]
        if isinstance(self.features, str):
            self.features = [f for f in self.features.replace(",", " ").split() if f]
        self.features = [str(f) for f in self.features or []]
        self.task = str(self.task).lower()
        self.edition = str(self.edition).lower()

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (YAML-safe values)."""
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written (atomically) to ``path`` when given."""
        from mmaffect.atomic import atomic_write_text

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
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
    from mmaffect.training.dataset import WindowDataset

    if config.image_level:
        return image_datasets(config)
    if not config.annotations or not config.cache:
        raise InputError("training needs an annotations folder and a feature cache folder")
    splits, names = label_splits(config)
    common = dict(
        modalities=config.modalities, window=config.window, configs=config.feature_configs or None
    )
    train_cls = WindowDataset
    if config.many_to_many:  # the targets of every frame of each window
        from mmaffect.training.many_to_many import FrameTargetWindows as train_cls
    if config.features:  # named feature sets, several from one branch
        return (*_feature_set_datasets(config, splits, train_cls), names)
    train_ds = train_cls(config.cache, splits["train"], stride=config.stride, **common)
    val_ds = WindowDataset(config.cache, splits["validation"], **common)
    return train_ds, val_ds, names


def _feature_set_datasets(config: TrainConfig, splits: dict[str, Any], train_cls: type) -> tuple:
    from mmaffect.training.feature_sets import FeatureSetWindows

    common = dict(sets=config.features, window=config.window, configs=config.feature_configs)
    train_ds = FeatureSetWindows(
        config.cache, splits["train"], stride=config.stride, dataset_class=train_cls, **common
    )
    return train_ds, FeatureSetWindows(config.cache, splits["validation"], **common)


def label_splits(config: TrainConfig) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The labels of the ``train`` and ``validation`` splits of ``config.annotations`` for
    ``config.task`` (uni-task: ``{video: VideoLabels}``; MTL: ``MtlLabels``) and the label
    names of the heads."""
    from mmaffect.annotations import AU_12, EXPR_8, read_split_folders

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
    return splits, names


def image_datasets(config: TrainConfig) -> tuple[Any, Any, dict[str, list[str]]]:
    """The train and validation :class:`~mmaffect.training.crops.ImageDataset` of an image
    model, and the label names: class folders (``images`` / ``val_images``), Aff-Wild2 frame
    folders (``frames``) or videos through their faces entries (``cache``), the last two
    labelled by ``annotations``."""
    from mmaffect.annotations import EXPR_8
    from mmaffect.training.crops import ImageDataset, class_folder_crops

    size = image_model(config).input_size
    root = Path(config.crop_cache or Path(config.out or ".") / "crops")
    if not (config.images or config.val_images):
        return _labelled_image_datasets(config, root, size)
    if config.task != "expr":
        raise InputError("class folders label expressions only", hint="use --task expr")
    if not config.images or not config.val_images:
        raise InputError(
            "image-level training needs training and validation images",
            hint="--images TRAIN_FOLDER --val-images VALIDATION_FOLDER (<class>/<image> each)",
        )
    train_ds = ImageDataset(class_folder_crops(config.images, root, size))
    val_ds = ImageDataset(class_folder_crops(config.val_images, root, size))
    return train_ds, val_ds, {"expr": _label_names(EXPR_8)}


def image_model(config: TrainConfig) -> Any:
    """A fresh image model of ``config`` (``face_cnn``, ``dan``, ``hybrid_cnn_transformer``);
    an :class:`InputError` when the model is not one."""
    from mmaffect.models import create_model, image_models

    names = image_models()
    if config.model not in names or config.modalities != ["image"]:
        raise InputError(
            "image-level training trains an image model",
            hint=f"pass --model {'|'.join(names)} --modalities image "
            "(pipelines/face_expr_fer2013.yaml)",
        )
    return create_model(config.model, **{**config.model_hparams, "modalities": ["image"]})


def _labelled_image_datasets(
    config: TrainConfig, root: Path, size: int
) -> tuple[Any, Any, dict[str, list[str]]]:
    """Image datasets of ABAW-labelled frames: Aff-Wild2 frame folders or video crops."""
    from functools import partial

    from mmaffect.faces.crops import FaceCrop
    from mmaffect.models.face_cnn import DEFAULT_CROP
    from mmaffect.training.crops import (
        ORGANISER_CROP,
        ImageDataset,
        frame_folder_crops,
        video_crops,
    )

    if not config.annotations or not (config.frames or config.cache):
        raise InputError(
            "image-level training needs face images and their labels",
            hint="--images/--val-images (class folders), or --annotations LABELS with "
            "--frames CROPPED_ALIGNED (Aff-Wild2 frame folders) or --cache FEATURE_CACHE "
            "(videos, through the faces extract found)",
        )
    report = partial(print, flush=True)
    splits, names = label_splits(config)
    if config.frames:
        crop = config.model_hparams.get("crop")
        if crop and dict(crop) != ORGANISER_CROP:  # e.g. a recipe made for class folders
            report(f"frame folders hold the organisers' aligned crops: the model records crop "
                   f"{ORGANISER_CROP}, not {dict(crop)}")  # fmt: skip
        config.model_hparams = {**config.model_hparams, "crop": dict(ORGANISER_CROP)}
        make = partial(frame_folder_crops, config.frames, cache_root=root, size=size)
    else:
        crop = FaceCrop.from_dict(config.model_hparams.get("crop") or DEFAULT_CROP)
        make = partial(
            video_crops, config.cache, cache_root=root, size=size, crop=crop,
            videos=config.videos, faces_config=config.feature_configs.get("faces"),
        )  # fmt: skip
    datasets = []
    for split, stride in (("train", config.stride), ("validation", 1)):
        crops = make(labels=splits[split], stride=stride, name=split, report=report)
        report(f"{split}: {crops.describe()}")
        datasets.append(ImageDataset(crops))
    return datasets[0], datasets[1], names


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
    import io

    from mmaffect.atomic import atomic_write_text

    keys: list[str] = []
    for row in kept + new:
        keys += [k for k in row if k not in keys]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(kept + new)
    atomic_write_text(path, text.getvalue())


def _accelerator(device: str) -> tuple[str, list[int] | int]:
    """Lightning's ``(accelerator, devices)`` for a ``--device`` value (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``; ``gpu``, the old spelling, is ``cuda``), checked up front."""
    from mmaffect.devices import resolve_device

    text = str(device).strip().lower()
    resolved = resolve_device("cuda" if text == "gpu" else text)
    if resolved == "cpu":
        return "cpu", 1
    _, _, index = resolved.partition(":")
    return "gpu", [int(index)] if index else 1


@dataclass
class _Run:
    """A checked training run: everything :func:`train` needs, nothing written yet."""

    config: TrainConfig
    out: Path
    train_ds: Any
    val_ds: Any
    module: Any
    accelerator: str
    devices: list[int] | int
    precision: str
    resume_epoch: int | None  # epoch stored in out/last.ckpt when resuming


def check_edition(task: str, edition: str) -> None:
    """Refuse an edition that has no track for ``task`` (``mtl``: the MTL track).

    Raises
    ------
    InputError
        E.g. ``ABAW5 has no MTL track (…)``, with the editions that ran it.
    """
    from mmaffect import metrics

    metrics.track_spec(task.upper(), edition)


def _checked_out(config: TrainConfig) -> Path:
    if not config.out:
        raise InputError("training needs an output folder (out)")
    out = Path(config.out).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder", hint="give a folder as --out")
    return out


def _precision(config: TrainConfig, accelerator: str) -> str:
    precision = config.precision
    if precision == "auto" or (
        accelerator == "cpu" and "16" in precision and "bf" not in precision
    ):
        precision = _gpu_precision() if accelerator == "gpu" else "32-true"
    return precision


def _gpu_precision() -> str:
    """``bf16-mixed`` where the GPU has bfloat16 (Ampere and newer: no loss scaling), else
    ``16-mixed``."""
    import torch

    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _data_dims(dataset: Any) -> dict[str, int]:
    """``{modality: columns}`` of every ``feat_*`` input of ``dataset``'s first item (read once;
    an image model's ``image`` is its crop's last axis, the 3 colour channels)."""
    item = dataset[0]
    return {k[5:]: int(v.shape[-1]) for k, v in item.items() if k.startswith("feat_")}


def _given_dims(config: TrainConfig) -> dict[str, int]:
    return {k: int(v) for k, v in dict(config.model_hparams.get("dims") or {}).items()}


def _check_dims(module: Any, data_dims: dict[str, int]) -> None:
    """The model's input widths against the cached features (before anything is written)."""
    dims = dict(module.model.hparams.get("dims", {}))
    for m in module.modalities:
        width = data_dims[m]
        if m in dims and int(dims[m]) != width:
            raise InputError(
                f"the cached {m!r} features have {width} columns but the model expects {dims[m]}",
                hint=f"set model_hparams.dims.{m}: {width} in the config, or extract the "
                "features the model was made for",
            )


def _check_features(config: TrainConfig) -> None:
    """Named feature sets feed the affine-module model (any inputs, each its own width)."""
    if not config.features:
        return
    from mmaffect.training.feature_sets import check_feature_sets

    check_feature_sets(config.features)
    if config.model != "affine_transformer" or config.image_level:
        raise InputError(
            f"feature sets ({', '.join(config.features)}) are inputs of the affine_transformer "
            f"model, not of {config.model}",
            hint="--model affine_transformer (pipelines/affine_transformer_mtl.yaml)",
        )


def _check_many_to_many(config: TrainConfig) -> None:
    """Many-to-many training needs windows and a model that predicts every frame of them."""
    import inspect

    from mmaffect.models import model_class

    if not config.many_to_many:
        return
    takes = "many_to_many" in inspect.signature(model_class(config.model).forward).parameters
    if config.image_level or not takes:
        raise InputError(
            f"many_to_many training needs a model over feature windows that predicts every "
            f"frame; {config.model} does not",
            hint="use model temporal_ensemble (e.g. members: [gru]), or many_to_many: false",
        )


def prepare(config: TrainConfig) -> _Run:
    """Check every setting of ``config`` and build the datasets and the module; writes nothing.

    Raises
    ------
    InputError
        Any bad setting, missing data, or a run folder that cannot be resumed with ``config``.
    """
    import lightning as L

    from mmaffect.training.feature_settings import collect_feature_settings
    from mmaffect.training.module import AffectModule, au_loss_weights, check_losses, task_heads

    heads = task_heads(config.task)
    check_losses(config.losses)
    _check_many_to_many(config)
    _check_features(config)
    check_edition(config.task, config.edition)
    out = _checked_out(config)
    accelerator, devices = _accelerator(config.device)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_ds, val_ds, names = build_datasets(config)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise InputError("the train or validation split has no labelled frame with features")
    hashes, settings = collect_feature_settings([train_ds, val_ds])
    model_hparams = dict(config.model_hparams)
    data_dims = _data_dims(train_ds)
    if config.features:  # each set's width from the data, each set's entry by its hash
        model_hparams["dims"] = train_ds.widths()
        hashes = {**hashes, **train_ds.hashes}
    elif "image" not in config.modalities:  # window models: the widths the config does not set
        widths = {m: data_dims[m] for m in config.modalities if m in data_dims}
        model_hparams["dims"] = {**widths, **_given_dims(config)}
    module = AffectModule(
        model_name=config.model,
        model_hparams=model_hparams,
        task=config.task,
        modalities=config.features or config.modalities,
        features=config.features or None,
        edition=config.edition,
        window=config.window,
        losses=config.losses,
        loss_weights=config.loss_weights,
        # a weighted AU loss: its per-AU weights from the training labels
        au_weights=au_loss_weights(config.losses, train_ds.au) if "au" in heads else None,
        many_to_many=config.many_to_many,
        expr_confidence=config.expr_confidence,
        optimizer={**config.optimizer, "lr": config.lr},
        scheduler=config.scheduler,
        label_names=names,
        feature_configs=dict(config.feature_configs) or hashes,
        feature_settings=settings,
    )
    _check_dims(module, data_dims)
    last = out / LAST_NAME
    resume_epoch = (
        check_resumable(last, module.hparams) if config.resume and last.is_file() else None
    )
    if config.image_level and resume_epoch is None:
        from mmaffect.nets.registry import load_pretrained

        # a fresh image model starts from the weights its backbone has (ImageNet, FER2013)
        load_pretrained(module.model.backbone, module.model.spec.name, config.models_dir)
    return _Run(
        config, out, train_ds, val_ds, module, accelerator, devices,
        _precision(config, accelerator),
        resume_epoch,
    )  # fmt: skip


#: Hyperparameters a resumed run must share with the run folder's ``last.ckpt``.
RESUME_KEYS = ("model_name", "model_hparams", "task", "modalities", "label_names", "edition")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise InputError(
            f"{path}: not a readable checkpoint ({type(e).__name__}: {e})",
            hint=f"use another --out, or --no-resume to start over in {path.parent}",
        ) from None


def check_resumable(last: Path, hparams: Any) -> int:
    """The epoch stored in ``last``; an :class:`InputError` when the run it holds differs
    from ``hparams`` in what a resume cannot change (:data:`RESUME_KEYS`)."""
    import json

    ckpt = _load_checkpoint(last)
    saved = ckpt.get("hyper_parameters") or {}

    def norm(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    diffs = []
    for key in RESUME_KEYS:
        old, new = saved.get(key), hparams.get(key)
        if norm(old) == norm(new):
            continue
        if key == "model_hparams" and isinstance(old, dict) and isinstance(new, dict):
            keys = (set(old) | set(new)) - {"modalities", "tasks"}  # named on their own
            keys = {k for k in keys if norm(old.get(k)) != norm(new.get(k))}
            diffs += [f"{key}.{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(keys)]
        else:
            diffs.append(f"{key} {old!r} there, {new!r} now")
    if diffs:
        raise InputError(
            f"{last.parent} holds a run that cannot be resumed with these settings "
            f"({'; '.join(diffs)})",
            hint=f"use another --out, or --no-resume to start over in {last.parent} "
            "(its checkpoints are replaced)",
        )
    return int(ckpt.get("epoch", 0))


def _start_run_folder(run: _Run) -> None:
    """Create the run folder and write ``config.yaml``; without resume, remove the previous
    run's checkpoints (``last.ckpt``, ``best-*.ckpt``) so that none of them is taken for this
    run's."""
    from mmaffect.atomic import atomic_write_text

    try:
        run.out.mkdir(parents=True, exist_ok=True)
        if not run.config.resume:
            for old in [run.out / LAST_NAME, *run.out.glob("best-*.ckpt")]:
                old.unlink(missing_ok=True)
        atomic_write_text(run.out / CONFIG_NAME, run.config.to_yaml())
    except OSError as e:
        raise InputError(f"{run.out}: cannot write the run folder ({e.strerror or e})") from None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: ``last_checkpoint`` (or None) holds ``epochs_done``
    finished epochs; training again with the same run folder resumes from there."""

    def __init__(self, out: Path, last_checkpoint: Path | None, epochs_done: int, epochs: int):
        self.out, self.last_checkpoint = out, last_checkpoint
        self.epochs_done, self.epochs = epochs_done, epochs
        super().__init__(self.message())

    def message(self) -> str:
        if self.last_checkpoint is None:
            return f"interrupted before the first epoch ended: {self.out} has no checkpoint yet"
        return (
            f"interrupted: {self.last_checkpoint} holds epoch {self.epochs_done}/{self.epochs}; "
            "run the same command again to resume"
        )


def train(config: TrainConfig) -> TrainResult:
    """Train a model as ``config`` says.

    Every setting is checked (:func:`prepare`) before anything is written. The run folder
    ``config.out`` then gets ``config.yaml``, ``best-<epoch>.ckpt`` (best ``val/score``),
    ``last.ckpt`` (the end of the latest finished epoch) and ``logs/metrics.csv`` (per epoch:
    ``train/loss``, ``lr``, ``val/score`` and the edition's other figures). An existing
    ``last.ckpt`` is resumed when ``config.resume`` (the epoch count continues); without
    resume the previous run's checkpoints are replaced. Not on a terminal, one plain line is
    printed per epoch.

    Parameters
    ----------
    config
        The run's settings.

    Returns
    -------
    TrainResult
        Checkpoint paths, best score, epochs done and the in-memory module.

    Raises
    ------
    InputError
        A bad setting (nothing written).
    TrainingInterrupted
        Ctrl-C (a :class:`KeyboardInterrupt`); ``last.ckpt`` keeps the latest finished epoch.
    """
    run = prepare(config)
    _start_run_folder(run)
    return _fit(run)


#: Lightning loggers whose info lines (device summary, tips, "fit stopped") are not shown.
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Drop Lightning's tips, device lines and its deprecation and possible-user warnings
    (about DataLoader workers and the like, settings this toolkit makes); errors and other
    warnings still show."""
    import logging

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings(
                "ignore", category=category, module=r"(lightning|lightning_utilities)(\.|$)"
            )
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)


def _epoch_lines(stream: Any) -> Any:
    """A callback printing one plain line per finished epoch: epoch, train loss, val score, lr.

    It is a ``Checkpoint`` only so that Lightning runs it after the checkpoint callbacks (it
    orders those last): a line is printed once ``last.ckpt`` holds its epoch.
    """
    from lightning.pytorch.callbacks import Checkpoint

    class EpochLines(Checkpoint):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            metrics = trainer.callback_metrics
            parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
            for key in ("train/loss", "val/score", "lr"):
                if key in metrics:
                    parts.append(f"{key} {float(metrics[key]):.6g}")
            print("  ".join(parts), file=stream, flush=True)

    return EpochLines()


def _checkpoints(out: Path) -> tuple[Any, Any]:
    """``best-<epoch>.ckpt`` (highest ``val/score``) and ``last.ckpt``, written at the end of
    every epoch. (``save_last=True`` of the best callback writes last.ckpt only when the score
    improves.) The last one comes second: its file holds the best callback's updated state."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    best = ModelCheckpoint(
        dirpath=out,
        filename="best-{epoch:03d}",
        monitor="val/score",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=out,
        filename=LAST_NAME.removesuffix(".ckpt"),
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    return best, last


def _loaders(run: _Run) -> tuple[Any, Any]:
    from mmaffect.training.dataset import make_loader

    config = run.config
    balanced = (
        {"expr": "expr", "mtl": "expr", "au": "au"}.get(config.task) if config.balanced else None
    )
    loader = dict(
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=run.accelerator == "gpu",  # page-locked batches copy to the GPU faster
        persistent_workers=config.num_workers > 0,  # not forked again every epoch
    )
    train_loader = make_loader(
        run.train_ds, shuffle=True, balanced=balanced, seed=config.seed, **loader
    )
    return train_loader, make_loader(run.val_ds, shuffle=False, **loader)


def _fit(run: _Run) -> TrainResult:
    import lightning as L
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    config, out = run.config, run.out
    train_loader, val_loader = _loaders(run)
    best_cb, last_cb = _checkpoints(out)
    tty = sys.stdout.isatty()
    progress = RichProgressBar() if tty else _epoch_lines(sys.stdout)
    logger = CSVLogger(save_dir=str(out), name="", version="logs")
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.epochs,
            accelerator=run.accelerator,
            devices=run.devices,
            precision=run.precision,
            callbacks=[best_cb, last_cb, progress],
            logger=logger,
            enable_progress_bar=tty,
            enable_model_summary=False,
            log_every_n_steps=1,
            deterministic=False,
        )
    last = out / LAST_NAME
    ckpt_path = str(last) if run.resume_epoch is not None else None
    metrics_csv = Path(logger.log_dir) / "metrics.csv"
    previous = _read_csv(metrics_csv) if ckpt_path else []
    if ckpt_path:
        done = run.resume_epoch + 1
        print(f"resuming from {last}: epoch {done}/{config.epochs} done", flush=True)
    try:
        interrupted = _fit_or_interrupted(trainer, run.module, train_loader, val_loader, ckpt_path)
    finally:  # also when training stops on an error (a diverged loss): the earlier rows stay
        if previous:
            _merge_csv(metrics_csv, previous)
    if interrupted:
        done = int(_load_checkpoint(last).get("epoch", -1)) + 1 if last.is_file() else 0
        raise TrainingInterrupted(out, last if last.is_file() else None, done, config.epochs)
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else None
    score = best_cb.best_model_score
    return TrainResult(
        out=out,
        best_checkpoint=best,
        last_checkpoint=last if last.is_file() else None,
        best_score=None if score is None else float(score),
        epochs=int(trainer.current_epoch),
        metrics_csv=metrics_csv if metrics_csv.is_file() else None,
        module=run.module,
        val_dataset=run.val_ds,
    )


def _fit_or_interrupted(
    trainer: Any, module: Any, train_loader: Any, val_loader: Any, ckpt_path: str | None
) -> bool:
    """``trainer.fit``; True when Ctrl-C stopped it. (Lightning catches the KeyboardInterrupt,
    runs its exception hooks, ignores SIGINT from then on and exits with status 1; the SIGINT
    handler is put back and the interruption reported to the caller instead.)"""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        with _quiet_lightning(), _native_signal_handlers():
            trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    except SystemExit:
        if not trainer.interrupted:
            raise
        return True
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)
    return False


@contextmanager
def _native_signal_handlers() -> Iterator[None]:
    """Put back, after ``fit``, every signal disposition as the C library had it before.

    Lightning's signal connector re-registers on teardown the handler Python *believes* each
    signal has; for a handler a native library installed (MediaPipe or the ASR runtime set one
    for SIGPROF with a CPU-time timer), Python's belief is the stale ``SIG_DFL``, so the next
    tick of that timer killed the process ("Profiling timer expired", seen as extract → train →
    extract in one Python process). The raw ``struct sigaction`` of every signal is saved with
    libc's ``sigaction`` and restored (Linux; elsewhere nothing is done).
    """
    import ctypes
    import ctypes.util
    import signal
    import threading

    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        yield
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = 256  # > sizeof(struct sigaction) (152 bytes on x86-64 and aarch64 glibc)
    saved: dict[int, ctypes.Array] = {}
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        buf = ctypes.create_string_buffer(size)
        if libc.sigaction(int(signum), None, buf) == 0:
            saved[int(signum)] = buf
    try:
        yield
    finally:
        for signum, buf in saved.items():
            libc.sigaction(signum, buf, None)
