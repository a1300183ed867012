"""What the benchmark scripts share: data locations, the toolkit's CLI, the openSMILE reference.

The scripts run as ``python benchmarks/NAME.py`` (this folder is then first on ``sys.path``).
``MMAFFECT_TEST_DATA`` and ``MMAFFECT_MODELS`` override where the real media and the weights
are (default: ``../shared/data`` and ``../shared/models`` beside the repository).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMAFFECT_TEST_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("MMAFFECT_MODELS", REPO.parent / "shared" / "models"))


def data_path(relative: str) -> Path:
    """A folder or file of the real media; exit with a clear message when it is missing."""
    path = DATA / relative
    if not path.exists():
        raise SystemExit(
            f"benchmark data not found: {path} (set MMAFFECT_TEST_DATA to the folder holding "
            "the shared real media)"
        )
    return path


def mmaffect(*args: str | Path, quiet: bool = True) -> str:
    """Run ``python -m mmaffect ARGS`` in its own process; return its stdout.

    The toolkit's own command line, exactly as a user runs it (each command in a fresh process).
    On failure the command's stderr is shown and the benchmark stops.
    """
    cmd = [sys.executable, "-m", "mmaffect", *map(str, args)]
    env = {**os.environ, "MMAFFECT_MODELS": str(MODELS)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd[2:])}")
    if not quiet:
        sys.stdout.write(proc.stdout)
    return proc.stdout


def last_checkpoint(run: Path) -> Path:
    """The checkpoint of the last epoch that ``mmaffect train --out RUN`` wrote."""
    path = run / "last.ckpt"
    if not path.is_file():
        raise SystemExit(f"mmaffect train wrote no {path}")
    return path


def best_checkpoint(run: Path) -> Path:
    """The checkpoint of the epoch with the best validation score (``best-<epoch>.ckpt``)."""
    found = sorted(run.glob("best-*.ckpt"))
    if not found:
        raise SystemExit(f"mmaffect train wrote no best-*.ckpt in {run}")
    return found[-1]


def extract_speech(files: Sequence[Path], work: Path, speech_features: str = "prosody") -> Path:
    """``mmaffect extract --modalities speech --speech-features …`` over ``files`` into
    ``work/cache`` (``work/cache-<sets>`` for other sets than ``prosody``).

    The files are linked into ``work/inputs`` first, so that only those are extracted.
    """
    sets = speech_features.replace(",", "+")
    inputs, cache = work / "inputs", work / ("cache" if sets == "prosody" else f"cache-{sets}")
    inputs.mkdir(parents=True, exist_ok=True)
    for p in files:
        if not (inputs / p.name).exists():
            (inputs / p.name).symlink_to(p.resolve())
    mmaffect(
        "extract", inputs, "--cache", cache, "--modalities", "speech",
        "--speech-features", speech_features, "--no-progress",
    )  # fmt: skip
    return cache


def train_and_predict(
    fold_dir: Path,
    cache: Path,
    task: str,
    held_out: Sequence[Path],
    args,
    recipe: Path | None = None,
    pick: str = "last",
) -> tuple[dict, float]:
    """One fold, speech branch only: ``mmaffect train`` then ``mmaffect predict``.

    ``fold_dir/annotations`` holds the fold's ABAW label files; the recipe is ``recipe``
    (default ``pipelines/fusion_<task>.yaml``) with ``args.epochs``, ``args.stride`` and
    ``args.seed``. ``pick`` ``last``: the last checkpoint predicts ``held_out``; ``best``: the
    epoch with the best score on the annotations' ``Validation_Set`` (which must then not be
    ``held_out``). Returns ``{file stem: VideoPrediction}`` and the training seconds.
    """
    import time

    from mmaffect.predict.result import load_prediction

    run, pred_dir = fold_dir / "run", fold_dir / "predict"
    start = time.perf_counter()
    # fmt: off
    mmaffect(
        "train", "--config", recipe or REPO / "pipelines" / f"fusion_{task}.yaml", "--task", task,
        "--modalities", "speech", "--annotations", fold_dir / "annotations", "--cache", cache,
        "--out", run, "--epochs", args.epochs, "--stride", args.stride, "--seed", args.seed,
        "--device", "cpu",
    )
    seconds = time.perf_counter() - start
    mmaffect(
        "predict", *held_out, "--checkpoint",
        best_checkpoint(run) if pick == "best" else last_checkpoint(run), "--cache", cache,
        "--out", pred_dir, "--no-words", "--no-progress", "--device", "cpu",
    )
    # fmt: on
    preds = {p.stem: load_prediction(pred_dir / "predictions" / f"{p.stem}.npz") for p in held_out}
    return preds, seconds


def n_frames(cache: Path, stem: str, kind: str = "speech") -> int:
    """Frames on the grid of a cached feature entry (its ``meta.json``)."""
    meta = next((cache / stem).glob(f"{kind}-*/meta.json"))
    return int(json.loads(meta.read_text())["timing"]["n_frames"])


def opensmile_functionals(files: Sequence[Path], store: Path) -> np.ndarray:
    """openSMILE eGeMAPSv02 functionals (88 per file), computed once and kept in ``store``."""
    names = [p.name for p in files]
    if store.exists():
        kept = np.load(store, allow_pickle=False)
        if kept["files"].tolist() == names:
            return kept["features"]
    try:
        import opensmile
    except ImportError:
        raise SystemExit(
            "the openSMILE reference needs the benchmark extra: pip install -e '.[bench]'"
        ) from None
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    features = np.stack([smile.process_file(str(p)).to_numpy()[0] for p in files])
    assert features.shape[1] == 88, features.shape
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_suffix(".tmp.npz")
    np.savez(tmp, files=np.array(names), features=features.astype(np.float64))
    tmp.replace(store)
    return features


RAVDESS_CLIP = "video/ravdess_av_actor05/01-01-03-01-01-02-05.mp4"  # 1280x720, 3.2 s, speech


def repeat_clip(clip: Path, seconds: float, out: Path, scale: str | None = None) -> Path:
    """``clip`` repeated until the video lasts at least ``seconds`` (at most one clip more).

    Stream copy (no re-encoding) unless ``scale`` (e.g. ``"640:360"``) asks for H.264 at that
    size (AAC audio).
    """
    from mmaffect.media import probe
    from mmaffect.media.ffmpeg import run

    copies = max(1, int(np.ceil(seconds / probe(clip).duration)))
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{clip.resolve()}'\n" for _ in range(copies)))
    codec = ["-c", "copy"]
    if scale:
        codec = ["-vf", f"scale={scale}", "-c:v", "libx264", "-preset", "veryfast",
                 "-pix_fmt", "yuv420p", "-c:a", "aac"]  # fmt: skip
    run(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), *codec, str(out)],
        media=clip)  # fmt: skip
    listing.unlink()
    return out


def child(script: Path, args: Sequence[str | Path]) -> dict:
    """Run ``script ARGS`` in a child process; its last stdout line is JSON.

    Returns that JSON plus ``peak_rss_mb``: the child's peak resident memory (of the child and
    the processes it waited for, e.g. ffmpeg).
    """
    cmd = [sys.executable, str(script), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child failed (status {status}): {' '.join(cmd[1:])}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def machine() -> dict[str, object]:
    """The facts a reader needs to compare figures across machines."""
    import torch

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation, rounded to 4 places."""
    a = np.asarray(values, dtype=np.float64)
    return round(float(a.mean()), 4), round(float(a.std()), 4)


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A plain fixed-width table of ``rows`` (dicts) over ``columns``."""

    def cell(v: object) -> str:
        return str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(cell(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def write_json(path: Path | None, figures: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, default=str))
