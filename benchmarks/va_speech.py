"""Valence and arousal from speech: mmaffect's VA head (speech branch) vs openSMILE + ridge, by CV.

Usage::

    python benchmarks/va_speech.py [--folds 5] [--epochs 20] [--work DIR] [--json F]

Data: ``audio/va_speech`` (47 utterances, 16 kHz, one valence and one arousal value in [-1, 1]
per utterance in ``valence.csv`` / ``arousal.csv``). The utterances are split into ``--folds``
folds (shuffled with a fixed seed); both systems train on the same folds:

* **mmaffect**: ``mmaffect extract --modalities speech``; per fold, ABAW VA label files with the
  utterance's values on every frame; ``mmaffect train --config pipelines/fusion_va.yaml
  --task va --modalities speech``; ``mmaffect predict --checkpoint last.ckpt`` on the held-out
  utterances; the utterance's prediction is the mean over its frames. The last checkpoint is
  scored, so held-out utterances never pick the model.
* **reference**: openSMILE eGeMAPSv02 functionals (88), standardised, ridge regression per
  dimension with the penalty chosen by leave-one-out on the training folds only (``RidgeCV``).

Reported: the concordance correlation coefficient (CCC) of valence and arousal over all 47
out-of-fold utterance predictions (pooled; a fold of 9 utterances is too small for a stable
CCC), and the mean ± std of the per-fold CCCs. Needs the benchmark extra for openSMILE.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    data_path,
    extract_speech,
    machine,
    mean_std,
    n_frames,
    opensmile_functionals,
    print_table,
    train_and_predict,
    write_json,
)


def read_targets(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The utterances and their (valence, arousal), in file-name order."""
    values: dict[str, list[float]] = {}
    for column, name in enumerate(("valence.csv", "arousal.csv")):
        with (folder / name).open(newline="") as f:
            for row in csv.reader(f):
                if len(row) == 2 and not row[0].startswith("#"):
                    values.setdefault(row[0], [np.nan, np.nan])[column] = float(row[1])
    files = sorted(folder / n for n in values)
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise SystemExit(f"{folder}: labelled files missing: {', '.join(missing[:5])}")
    va = np.array([values[p.name] for p in files])
    if np.isnan(va).any():
        raise SystemExit(f"{folder}: a file has valence but no arousal or the other way round")
    return files, va


def reference_fold(x: np.ndarray, va: np.ndarray, train: np.ndarray, test: np.ndarray):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    model.fit(x[train], va[train])
    return np.clip(model.predict(x[test]), -1, 1)


def mmaffect_fold(fold_dir: Path, cache: Path, files, va, test, args) -> np.ndarray:
    from mmaffect.annotations import VA, VideoLabels, write_video_labels

    for i, path in enumerate(files):
        folder = fold_dir / "annotations" / ("Validation_Set" if test[i] else "Train_Set")
        values = np.tile(va[i], (n_frames(cache, path.stem), 1))
        write_video_labels(
            folder / f"{path.stem}.txt", VideoLabels.from_values(path.stem, VA, values)
        )
    held_out = [f for f, t in zip(files, test, strict=True) if t]
    preds, _ = train_and_predict(fold_dir, cache, "va", held_out, args, recipe=args.config)
    return np.stack([preds[p.stem].va.mean(axis=0) for p in held_out])


def ccc_pair(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from mmaffect.metrics import ccc

    return {
        "ccc_valence": round(ccc(pred[:, 0], true[:, 0]), 4),
        "ccc_arousal": round(ccc(pred[:, 1], true[:, 1]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stride", type=int, default=2, help="train on every Nth frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--speech-features", default="prosody", help="mmaffect extract --speech-features"
    )
    parser.add_argument("--config", type=Path, help="recipe [pipelines/fusion_va.yaml]")
    parser.add_argument("--limit", type=int, help="only the first N utterances (tests)")
    parser.add_argument("--work", type=Path, help="keep the cache and runs here (resumable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from sklearn.model_selection import KFold

    files, va = read_targets(data_path("audio/va_speech"))
    if args.limit:
        files, va = files[: args.limit], va[: args.limit]
    work = args.work or Path(tempfile.mkdtemp(prefix="va_speech_"))
    start = time.perf_counter()
    cache = extract_speech(files, work, args.speech_features)
    t_extract = time.perf_counter() - start
    x = opensmile_functionals(files, work / "egemaps.npz")

    ours, ref = np.zeros_like(va), np.zeros_like(va)
    per_fold: list[dict] = []
    folds = KFold(args.folds, shuffle=True, random_state=args.seed).split(files)
    for k, (_, test_idx) in enumerate(folds):
        test = np.zeros(len(files), bool)
        test[test_idx] = True
        t0 = time.perf_counter()
        ours[test] = mmaffect_fold(work / f"fold{k}", cache, files, va, test, args)
        seconds = round(time.perf_counter() - t0, 1)
        ref[test] = reference_fold(x, va, ~test, test)
        fold = {
            "fold": k,
            "test_utterances": int(test.sum()),
            "mmaffect": ccc_pair(ours[test], va[test]),
            "reference": ccc_pair(ref[test], va[test]),
            "mmaffect_seconds": seconds,
        }
        per_fold.append(fold)
        print(f"fold {k}: mmaffect {fold['mmaffect']}, reference {fold['reference']}")

    pooled = {"mmaffect": ccc_pair(ours, va), "reference": ccc_pair(ref, va)}
    spread = {
        f"{system}_{dim}": mean_std([f[system][dim] for f in per_fold])
        for system in ("mmaffect", "reference")
        for dim in ("ccc_valence", "ccc_arousal")
    }
    rows = [
        {
            "system": name,
            "ccc_valence": pooled[system]["ccc_valence"],
            "ccc_arousal": pooled[system]["ccc_arousal"],
            "per_fold_valence": "{:.3f} ± {:.3f}".format(*spread[f"{system}_ccc_valence"]),
            "per_fold_arousal": "{:.3f} ± {:.3f}".format(*spread[f"{system}_ccc_arousal"]),
        }
        for system, name in (("mmaffect", "mmaffect speech VA"), ("reference", "eGeMAPS + ridge"))
    ]
    figures = {
        "utterances": len(files),
        "folds": args.folds,
        "epochs": args.epochs,
        "stride": args.stride,
        "pooled_ccc": pooled,
        "per_fold_mean_std": spread,
        "per_fold": per_fold,
        "extract_seconds": round(t_extract, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        **machine(),
        "work": str(work),
    }
    print()
    print_table(
        rows, ["system", "ccc_valence", "ccc_arousal", "per_fold_valence", "per_fold_arousal"]
    )
    print(f"\nCCC over the {len(files)} out-of-fold predictions; per fold: mean ± std")
    print(f"total_seconds {figures['total_seconds']}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
