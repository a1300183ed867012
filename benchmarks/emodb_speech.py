"""Speech branch alone on EmoDB, speaker-independent: ABAW-format labels, `mmaffect train`.

Usage::

    python benchmarks/emodb_speech.py [--val-speakers 03,08] [--epochs 8] [--work DIR] [--json F]

Steps (each is the normal toolkit path, nothing special-cased for EmoDB):

1. ``mmaffect extract EMODB --modalities speech`` (audio-only inputs: 30 frames per second);
2. per utterance, an ABAW EXPR label file (8-class space; the utterance label on every frame;
   EmoDB letters mapped by :func:`mmaffect.annotations.emodb_label`: boredom → Other) in
   ``Train_Set/`` or ``Validation_Set/`` by speaker (the first two digits of the file name);
3. ``mmaffect train --task expr --modalities speech --model fusion`` with the paper's recipe
   (``pipelines/fusion_expr.yaml``), fewer epochs and every 5th frame as a sample;
4. the best checkpoint predicts every frame of the held-out speakers; reported: frame-level
   macro-F1 over the 7 classes EmoDB has (and the official 8-class value, which counts the
   absent Surprise class as 0), and utterance-level accuracy / macro-F1 from the mean of the
   frame probabilities. Chance: macro-F1 ≈ 0.14 (7 classes); always-"anger" accuracy ≈ 0.24.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMAFFECT_TEST_DATA", REPO.parent / "shared" / "data"))


def write_labels(cache: Path, flac: Path, out: Path, val_speakers: set[str]) -> dict[str, int]:
    from mmaffect.annotations import EXPR_8, VideoLabels, emodb_label, write_video_labels

    counts = {"train": 0, "val": 0}
    for path in sorted(flac.glob("*.flac")):
        meta = next((cache / path.stem).glob("speech-*/meta.json"))
        n = json.loads(meta.read_text())["timing"]["n_frames"]
        split = "val" if path.stem[:2] in val_speakers else "train"
        folder = out / ("Validation_Set" if split == "val" else "Train_Set")
        labels = VideoLabels.from_values(path.stem, EXPR_8, np.full(n, emodb_label(path.name)))
        write_video_labels(folder / f"{path.stem}.txt", labels)
        counts[split] += 1
    return counts


def evaluate(result, names: list[str]) -> dict:
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    from mmaffect.training.dataset import make_loader

    module = type(result.module).load_from_checkpoint(str(result.best_checkpoint))
    module.eval()
    loader = make_loader(result.val_dataset, batch_size=256, shuffle=False)
    probs, true, videos = [], [], []
    with torch.inference_mode():
        for batch in loader:
            out = module(batch)
            probs.append(out["expr"].softmax(-1).numpy())
            true.append(batch["expr"].numpy())
            videos += list(batch["video_id"])
    probs, true = np.concatenate(probs), np.concatenate(true)
    present = sorted(set(true.tolist()))
    pred = probs.argmax(1)
    utt = {}
    for v, p, t in zip(videos, probs, true, strict=True):
        utt.setdefault(v, [[], t])[0].append(p)
    u_true = np.array([t for _, t in utt.values()])
    u_pred = np.array([np.mean(p, axis=0).argmax() for p, _ in utt.values()])
    return {
        "frames": len(true),
        "val_utterances": len(utt),
        "frame_macro_f1_present_classes": round(
            f1_score(true, pred, labels=present, average="macro", zero_division=0), 4
        ),
        "frame_macro_f1_official_8": round(
            f1_score(true, pred, labels=list(range(8)), average="macro", zero_division=0), 4
        ),
        "frame_accuracy": round(accuracy_score(true, pred), 4),
        "utterance_accuracy": round(accuracy_score(u_true, u_pred), 4),
        "utterance_macro_f1": round(
            f1_score(u_true, u_pred, labels=present, average="macro", zero_division=0), 4
        ),
        "classes": [names[c] for c in present],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--val-speakers", default="03,08")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    flac = DATA / "audio" / "emodb" / "flac"
    work = args.work or Path(tempfile.mkdtemp(prefix="emodb_"))
    cache, ann, run = work / "cache", work / "annotations", work / "run"
    start = time.perf_counter()
    extract = [
        sys.executable,
        "-m",
        "mmaffect",
        "extract",
        str(flac),
        "--cache",
        str(cache),
        "--modalities",
        "speech",
        "--no-progress",
    ]
    subprocess.run(extract, check=True, stderr=subprocess.DEVNULL)
    t_extract = time.perf_counter() - start
    counts = write_labels(cache, flac, ann, set(args.val_speakers.split(",")))

    from mmaffect.training.train import TrainConfig, train

    config = TrainConfig.from_yaml(REPO / "pipelines" / "fusion_expr.yaml")
    overrides = dict(
        annotations=ann,
        cache=cache,
        out=run,
        modalities=["speech"],
        epochs=args.epochs,
        stride=args.stride,
        resume=False,
    )
    config = TrainConfig.from_dict(
        {
            **config.to_dict(),
            **{k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()},
        }
    )
    command = (
        f"mmaffect train --config pipelines/fusion_expr.yaml --task expr --modalities "
        f"speech --annotations {ann} --cache {cache} --epochs {args.epochs} --out {run}"
    )
    t0 = time.perf_counter()
    result = train(config)
    t_train = time.perf_counter() - t0
    from mmaffect.annotations import EXPR_8

    figures = {
        "val_speakers": args.val_speakers,
        "utterances": counts,
        "epochs": result.epochs,
        "stride": args.stride,
        "best_val_score": result.best_score,
        **evaluate(result, list(EXPR_8.names)),
        "extract_seconds": round(t_extract, 1),
        "train_seconds": round(t_train, 1),
        "command": command,
        "work": str(work),
    }
    for key, value in figures.items():
        print(f"{key:<32} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
