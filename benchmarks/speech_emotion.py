"""Speech emotion on EmoDB, speaker-independent folds: mmaffect's speech branch vs openSMILE + LR.

Usage::

    python benchmarks/speech_emotion.py [--folds 03+08,10+09,11+13,12+14,15+16] [--epochs 8]
                                        [--stride 15] [--work DIR] [--json F]

Every fold holds out whole speakers (default: 5 folds of one male and one female speaker) and
both systems see exactly the same training and test utterances:

* **mmaffect**, through the toolkit's own commands: ``mmaffect extract --modalities speech``
  over the 535 utterances; per fold, ABAW EXPR label files from the utterance labels
  (``Train_Set`` = the other speakers, ``Validation_Set`` = the held-out ones; EmoDB letters
  mapped by :func:`mmaffect.annotations.emodb_label`, boredom → Other); ``mmaffect train
  --config pipelines/fusion_expr.yaml --task expr --modalities speech``; then ``mmaffect
  predict --checkpoint last.ckpt`` on the held-out utterances. The utterance's class is the
  arg-max of its mean frame probabilities. The *last* checkpoint is scored, so the held-out
  speakers never pick the model (the validation score ``train`` prints is only logged).
* **reference**: openSMILE eGeMAPSv02 functionals (88 per utterance), standardised on the
  training speakers, multinomial logistic regression (C = 1, no tuning).

Reported per system: unweighted average recall (UAR, the mean of the per-class recalls) and
macro-F1 over the classes of the held-out speakers (EmoDB's 7), per fold and as mean ±
standard deviation over the folds; for mmaffect also the frame-level macro-F1. Chance UAR is
1/7 ≈ 0.14. Needs the benchmark extra (``pip install -e '.[bench]'``) for openSMILE.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    REPO,
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

DEFAULT_FOLDS = "03+08,10+09,11+13,12+14,15+16"  # one male + one female speaker per fold


def scores(true: np.ndarray, pred: np.ndarray, labels: list[int]) -> dict[str, float]:
    from sklearn.metrics import f1_score, recall_score

    return {
        "uar": round(
            float(recall_score(true, pred, labels=labels, average="macro", zero_division=0)), 4
        ),
        "macro_f1": round(
            float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)), 4
        ),
    }


def reference_fold(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    model.fit(x[train], y[train])
    return model.predict(x[test])


def write_fold_labels(ann: Path, cache: Path, files: list[Path], y: np.ndarray, split) -> None:
    """ABAW EXPR label files: ``split[i]`` ``"train"`` → ``Train_Set``, ``"val"`` →
    ``Validation_Set``; the test utterances (``""``) get none."""
    from mmaffect.annotations import EXPR_8, VideoLabels, write_video_labels

    for i, path in enumerate(files):
        if not split[i]:
            continue
        folder = ann / ("Validation_Set" if split[i] == "val" else "Train_Set")
        n = n_frames(cache, path.stem)
        labels = VideoLabels.from_values(path.stem, EXPR_8, np.full(n, y[i]))
        write_video_labels(folder / f"{path.stem}.txt", labels)


def mmaffect_fold(fold_dir: Path, cache: Path, files, y, test, val, args) -> dict:
    """Train on the training speakers but ``val``, choose the epoch on ``val``, predict the
    ``test`` speakers (who never choose anything)."""
    split = np.where(test, "", np.where(val, "val", "train"))
    write_fold_labels(fold_dir / "annotations", cache, files, y, split)
    held_out = [f for f, t in zip(files, test, strict=True) if t]
    t0 = time.perf_counter()
    preds, t_train = train_and_predict(
        fold_dir, cache, "expr", held_out, args, recipe=args.config, pick="best"
    )
    utt_pred, frame_true, frame_pred = [], [], []
    for path, label in zip(held_out, y[test], strict=True):
        probs = preds[path.stem].expr_probs
        utt_pred.append(int(probs.mean(axis=0).argmax()))
        frame_pred.append(probs.argmax(axis=1))
        frame_true.append(np.full(len(probs), label))
    return {
        "utterance_pred": np.array(utt_pred),
        "frame_true": np.concatenate(frame_true),
        "frame_pred": np.concatenate(frame_pred),
        "train_seconds": round(t_train, 1),
        "predict_seconds": round(time.perf_counter() - t0 - t_train, 1),
    }


def encoder_cost(files, speech_features: str, minutes: float = 5.0) -> dict | None:
    """Seconds the Whisper states add per minute of audio: ``whisper_frames`` against
    ``speech_features`` (MFCC, pitch, energy) on one soundtrack of ``minutes`` of real speech
    (the utterances one after another, as in a video), on a 30 fps grid, after a warm-up
    (the model load is not counted). ``None`` without ``whisper``."""
    if "whisper" not in speech_features:
        return None
    from mmaffect.features.speech import speech_features as prosody
    from mmaffect.features.timing import FrameTiming
    from mmaffect.features.whisper_states import whisper_frames
    from mmaffect.media.audio import AudioTrack, load_audio

    parts, n = [], 0
    for p in files:
        parts.append(load_audio(p).samples)
        n += parts[-1].size
        if n >= minutes * 60 * 16_000:
            break
    track = AudioTrack(np.concatenate(parts), 16_000, 0.0, files[0])
    timing = FrameTiming(fps=30.0, n_frames=int(track.samples.size / 16_000 * 30))
    models = os.environ.get("MMAFFECT_MODELS")
    warm = AudioTrack(track.samples[:16_000], 16_000, 0.0, files[0])
    whisper_frames(warm, timing, model="whisper-tiny.en", models_dir=models)
    seconds = {}
    for name, run in (
        ("whisper", lambda: whisper_frames(track, timing, model="whisper-tiny.en",
                                           models_dir=models)),
        ("prosody", lambda: prosody(track, timing)),
    ):  # fmt: skip
        t0 = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - t0
    audio_min = track.samples.size / 16_000 / 60
    return {
        "audio_minutes": round(audio_min, 2),
        "whisper_seconds_per_audio_minute": round(seconds["whisper"] / audio_min, 2),
        "prosody_seconds_per_audio_minute": round(seconds["prosody"] / audio_min, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", default=DEFAULT_FOLDS, help="held-out speakers per fold")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--stride", type=int, default=10, help="train on every Nth frame")
    parser.add_argument(
        "--speech-features", default="prosody,whisper", help="mmaffect extract --speech-features"
    )
    parser.add_argument(
        "--config", type=Path, default=REPO / "pipelines" / "speech_utterance_expr.yaml"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="at most N utterances per speaker (tests)")
    parser.add_argument("--work", type=Path, help="keep the cache and runs here (resumable)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mmaffect.annotations import EXPR_8, emodb_label

    flac = data_path("audio/emodb/flac")
    files = sorted(flac.glob("*.flac"))
    if args.limit:
        by_speaker: dict[str, list[Path]] = {}
        for p in files:
            by_speaker.setdefault(p.stem[:2], []).append(p)
        files = [p for ps in by_speaker.values() for p in ps[: args.limit]]
    y = np.array([emodb_label(p.name) for p in files])
    present = sorted(set(y.tolist()))
    speakers = np.array([p.stem[:2] for p in files])
    folds = [set(f.split("+")) for f in args.folds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="speech_emotion_"))
    start = time.perf_counter()
    cache = extract_speech(files, work, args.speech_features)
    t_extract = time.perf_counter() - start
    added = encoder_cost(files, args.speech_features)
    t0 = time.perf_counter()
    x = opensmile_functionals(files, work / "egemaps.npz")
    t_smile = time.perf_counter() - t0

    rows, per_fold = [], []
    for k, held in enumerate(folds):
        test = np.isin(speakers, sorted(held))
        val = np.isin(speakers, sorted(folds[(k + 1) % len(folds)])) & ~test
        if not test.any() or not val.any() or (test | val).all():
            raise SystemExit(f"fold {'+'.join(sorted(held))} leaves no test, validation or train")
        ref_pred = reference_fold(x, y, ~test, test)
        mine = mmaffect_fold(work / f"fold{k}", cache, files, y, test, val, args)
        in_fold = sorted(set(y[test].tolist()))  # the classes the held-out speakers have
        ref = scores(y[test], ref_pred, in_fold)
        ours = scores(y[test], mine["utterance_pred"], in_fold)
        frame = scores(mine["frame_true"], mine["frame_pred"], in_fold)
        name = "+".join(sorted(held))
        rows.append(
            {"fold": name, "system": "mmaffect speech", **ours, "frame_f1": frame["macro_f1"]}
        )
        rows.append({"fold": name, "system": "eGeMAPS + LR", **ref, "frame_f1": "-"})
        per_fold.append(
            {
                "held_out": name,
                "validation": "+".join(sorted(folds[(k + 1) % len(folds)])),
                "test_utterances": int(test.sum()),
                "mmaffect": {**ours, "frame_macro_f1": frame["macro_f1"]},
                "reference": ref,
                "train_seconds": mine["train_seconds"],
                "predict_seconds": mine["predict_seconds"],
            }
        )
        print(f"fold {name}: mmaffect UAR {ours['uar']:.3f}, reference UAR {ref['uar']:.3f}")

    summary = {}
    for system in ("mmaffect", "reference"):
        for metric in ("uar", "macro_f1"):
            summary[f"{system}_{metric}"] = mean_std([f[system][metric] for f in per_fold])
    summary["mmaffect_frame_macro_f1"] = mean_std(
        [f["mmaffect"]["frame_macro_f1"] for f in per_fold]
    )
    figures = {
        "utterances": len(files),
        "classes": [str(EXPR_8.names[c]) for c in present],
        "folds": len(folds),
        "epochs": args.epochs,
        "stride": args.stride,
        "speech_features": args.speech_features,
        "recipe": str(args.config),
        "whisper_encoder": added,
        "summary_mean_std": summary,
        "per_fold": per_fold,
        "extract_seconds": round(t_extract, 1),
        "opensmile_seconds": round(t_smile, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        **machine(),
        "work": str(work),
    }
    print()
    print_table(rows, ["fold", "system", "uar", "macro_f1", "frame_f1"])
    print()
    for key, (m, s) in summary.items():
        print(f"{key:<28} {m:.3f} ± {s:.3f}")
    print(f"{'total_seconds':<28} {figures['total_seconds']}")
    write_json(args.json, figures)
    if args.json:
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
