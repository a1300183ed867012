"""Expression accuracy on real faces and clips: the ``baseline`` predictor and trained checkpoints.

Usage::

    python benchmarks/expression_accuracy.py [--work DIR] [--json F] [--skip-ravdess]
                                             [--train-speech] [--checkpoint CKPT ...]

1. **FER2013 PrivateTest** (``../shared/data/images/fer2013_privatetest``, 3,589 faces): the
   mini-Xception probabilities of each face go through the baseline's own mapping
   (:func:`mmaffect.predict.baseline.baseline_outputs`, FER2013 → ABAW classes); reported:
   accuracy and macro-F1 over the 7 classes against the folder labels.
2. **RAVDESS** (``../shared/data/video/ravdess_av_actor05``, 14 clips of actor 05): the real
   command ``mmaffect predict CLIPS --out WORK --no-words``; per clip the majority vote of the
   per-frame expression (frames with a face) against the emotion in the file name
   (:func:`mmaffect.annotations.ravdess_label`). Also the frame-level accuracy.
3. **Trained checkpoints on the same RAVDESS clips** (``--checkpoint``, repeatable): the same
   command with ``--checkpoint``; the vote is over the frames the model predicted itself (not
   filled). ``--train-speech`` first trains one, as a user would: ``mmaffect extract
   --modalities speech`` over the RAVDESS speech recordings of actors 01 and 02
   (``audio/ravdess_speech``, 120 utterances, other speakers than actor 05), ABAW EXPR label
   files from the file names, ``mmaffect train --config pipelines/fusion_expr.yaml
   --modalities speech`` (``--epochs``, ``--stride``). Actor 02's second repetitions (30) are
   the validation split, only logged: the last checkpoint is scored, and nothing of actor 05
   is seen before the test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import DATA, MODELS, REPO, extract_speech, last_checkpoint, mmaffect, n_frames


def macro_f1(pred: np.ndarray, true: np.ndarray, classes: list[int]) -> float:
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (true == c))
        denom = np.sum(pred == c) + np.sum(true == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def fer2013(limit: int | None = None) -> dict:
    from PIL import Image

    from mmaffect.annotations import EXPR_8
    from mmaffect.predict.baseline import FER_TO_EXPR

    root = DATA / "images" / "fer2013_privatetest"
    paths = sorted(root.glob("*/*.jpg")) + sorted(root.glob("*/*.png"))
    if limit:
        paths = paths[:: max(1, len(paths) // limit)]
    model = load_fer_model()
    names = [str(n) for n in EXPR_8.names]
    true = np.array([names.index(FER_TO_EXPR[p.parent.name]) for p in paths])
    started = time.perf_counter()
    expr = np.concatenate(
        [
            mini_xception_expr(model, [np.asarray(Image.open(p).convert("L")) for p in batch])
            for batch in (paths[i : i + 256] for i in range(0, len(paths), 256))
        ]
    )
    pred = expr.argmax(1)
    classes = sorted(set(true.tolist()))
    return {
        "faces": len(paths),
        "accuracy": round(float(np.mean(pred == true)), 4),
        "macro_f1": round(macro_f1(pred, true, classes), 4),
        "chance_macro_f1": round(1 / len(classes), 3),
        "seconds": round(time.perf_counter() - started, 1),
    }


def load_fer_model():
    """mini-Xception with its FER2013 weights (the models folder, else the model store)."""
    from mmaffect.nets.mini_xception import load_mini_xception
    from mmaffect.store import resolve

    return load_mini_xception(resolve("fer2013_mini_xception", MODELS if MODELS.is_dir() else None))


def mini_xception_expr(model, faces, flip: bool = False) -> np.ndarray:
    """The baseline's EXPR probabilities ``(N, 8)`` of faces (grey or RGB, values 0-255): its
    preprocessing, mini-Xception, and its FER2013 → ABAW mapping (``Other`` is 0); ``flip``
    averages the logits of each face and its mirror image."""
    import torch

    from mmaffect.nets.mini_xception import FER2013_CLASSES, preprocess_faces

    x = preprocess_faces(faces)
    with torch.inference_mode():
        logits = model(x)
        if flip:
            logits = (logits + model(torch.flip(x, dims=[-1]))) / 2
        probs = torch.softmax(logits, -1).numpy()
    return _baseline_expr(probs, [f"p_{c}" for c in FER2013_CLASSES])


def _blendshapes() -> list[str]:
    from mmaffect.predict.baseline import AU_FROM_BLENDSHAPES

    return sorted({s for shapes in AU_FROM_BLENDSHAPES.values() for s in shapes})


def _baseline_expr(fer_probs: np.ndarray, fer_columns: list[str]) -> np.ndarray:
    """The baseline's EXPR output for clip rows that hold only these FER probabilities."""
    from mmaffect.predict.baseline import baseline_outputs

    shapes = [f"bs_{s}" for s in _blendshapes()]
    rows = np.concatenate([fer_probs, np.zeros((len(fer_probs), len(shapes)), np.float32)], 1)
    return baseline_outputs(rows, fer_columns + shapes)["expr"]


def train_speech(work: Path, epochs: int, stride: int) -> Path:
    """A speech-only EXPR checkpoint trained on RAVDESS actors 01 and 02 (not actor 05)."""
    from mmaffect.annotations import EXPR_8, VideoLabels, ravdess_label, write_video_labels

    files = sorted((DATA / "audio" / "ravdess_speech").glob("Actor_0[12]/*.*"))
    files = [p for p in files if p.suffix in (".flac", ".wav")]
    cache = extract_speech(files, work)
    for p in files:  # validation (only logged): actor 02's second repetition of each trial
        split = "Validation_Set" if p.stem.endswith("-02-02") else "Train_Set"
        values = np.full(n_frames(cache, p.stem), ravdess_label(p.name))
        labels = VideoLabels.from_values(p.stem, EXPR_8, values)
        write_video_labels(work / "annotations" / split / f"{p.stem}.txt", labels)
    # fmt: off
    mmaffect(
        "train", "--config", REPO / "pipelines" / "fusion_expr.yaml", "--task", "expr",
        "--modalities", "speech", "--annotations", work / "annotations", "--cache", cache,
        "--out", work / "run", "--epochs", epochs, "--stride", stride, "--device", "cpu",
    )
    # fmt: on
    return last_checkpoint(work / "run")


def ravdess(work: Path, checkpoint: Path | None = None) -> dict:
    from mmaffect.annotations import EXPR_8, ravdess_label
    from mmaffect.predict import load_prediction

    clips = DATA / "video" / "ravdess_av_actor05"
    args = ["predict", clips, "--out", work, "--no-words", "--no-progress"]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    started = time.perf_counter()
    mmaffect(*args)
    seconds = time.perf_counter() - started
    names = [str(n) for n in EXPR_8.names]
    rows, frame_hits, frame_total = [], 0, 0
    for npz in sorted((work / "predictions").glob("*.npz")):
        pred = load_prediction(npz)
        truth = ravdess_label(pred.video_id + ".mp4")
        labels = pred.expr_labels[~pred.filled]  # the frames the predictor saw
        vote = Counter(labels.tolist()).most_common(1)[0][0]
        frame_hits += int(np.sum(labels == truth))
        frame_total += len(labels)
        rows.append({"clip": pred.video_id, "truth": names[truth], "vote": names[vote]})
    correct = sum(r["truth"] == r["vote"] for r in rows)
    return {
        "clips": len(rows),
        "clip_accuracy": round(correct / len(rows), 4),
        "correct": correct,
        "frame_accuracy": round(frame_hits / max(1, frame_total), 4),
        "per_clip": rows,
        "seconds": round(seconds, 1),
        "command": "mmaffect " + " ".join(map(str, args)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-ravdess", action="store_true")
    ap.add_argument("--fer-limit", type=int, default=None, help="use about this many faces")
    ap.add_argument("--checkpoint", type=Path, action="append", default=[])
    ap.add_argument("--train-speech", action="store_true", help="train a speech checkpoint")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--stride", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    work = args.work or Path(tempfile.mkdtemp(prefix="mmaffect_expression_"))
    result = {"fer2013": fer2013(args.fer_limit)}
    if not args.skip_ravdess:
        result["ravdess"] = ravdess(work / "baseline")
    checkpoints = list(args.checkpoint)
    if args.train_speech:
        started = time.perf_counter()
        checkpoints.append(train_speech(work / "speech", args.epochs, args.stride))
        result["speech_training_seconds"] = {"seconds": round(time.perf_counter() - started, 1)}
    for i, ckpt in enumerate(checkpoints):
        result[f"ckpt{i}"] = {"checkpoint": str(ckpt), **ravdess(work / f"ckpt{i}", ckpt)}
    for part, values in result.items():
        for k, v in values.items():
            if k != "per_clip":
                print(f"{part:8s} {k:18s} {v}")
        for row in values.get("per_clip", []):
            print(f"{part:8s} {row['clip']:24s} truth {row['truth']:10s} vote {row['vote']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
