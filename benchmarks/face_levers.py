"""What the face-detection speed levers cost in accuracy, on the real clips.

Usage::

    python benchmarks/face_levers.py [--configs every1@640,every4@640,every1@320,...]
                                     [--sets ravdess,talking_heads,...] [--json F]

Each configuration (``everyN@SIZE``: detection on every N-th frame, interpolated between
agreeing key frames, at SIZE px on the longest side; see ``mmaffect/faces/keyframes.py``)
extracts the ``faces`` entry and the shipped face model's ``frame`` entry (the baseline's
expression probabilities) of every clip of the chosen sets in ``../shared/data/video`` into a
cache of its own. The first configuration is the reference (today's default: every frame at
640 px). Against it, per set:

* ``found``: share of frames with a face; ``found agree``: share of frames where both agree
  on whether there is one;
* ``NME``: mean landmark distance to the reference's, over the frames where both found the
  face, divided by the reference's distance between the eyes;
* ``|dp|``: mean absolute difference of the 8 expression probabilities; ``arg-max agree``:
  share of those frames with the same most likely expression;
* ``detect s``: the face-detection stage's seconds (from the extraction report), and the
  share of frames the detector saw.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import MODELS, data_path, machine, print_table, write_json

SETS = {
    "ravdess": "video/ravdess_av_actor05",
    "grid": "video/grid",
    "talking_heads": "video/talking_heads",
    "hamilton": "video/hamilton",
    "street_multiface": "video/street_multiface",
}
VIDEO_EXT = (".mp4", ".mpg", ".avi", ".mov", ".mkv")
DEFAULT_CONFIGS = "every1@640,every2@640,every4@640,every8@640,every1@320,every4@320"


def parse_config(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"every(\d+)@(\d+)", text)
    if not m:
        raise SystemExit(f"bad configuration {text!r}: write everyN@SIZE, e.g. every4@640")
    return int(m.group(1)), int(m.group(2))


def run_config(videos: list[Path], every: int, size: int, cache: Path) -> dict:
    """Extract faces + the face model's frame entry; per video: found, landmarks, p(expr)."""
    from rich.console import Console

    import mmaffect
    from mmaffect.features.vision import FaceConfig, face_config_dict, vision_keys
    from mmaffect.predict.compute import BaselinePredictor, face_model_outputs

    face = FaceConfig(max_side=size, detect_every=every)
    frame = BaselinePredictor.frame_config()
    start = time.perf_counter()
    rep = mmaffect.extract(
        videos, cache=cache, modalities=("faces", "frame"), face=face, frame=frame,
        models_dir=MODELS, device="cpu", progress=False, console=Console(quiet=True),
    )  # fmt: skip
    wall = time.perf_counter() - start
    if rep.exit_code:
        raise SystemExit(f"extraction failed ({every}@{size})")
    from mmaffect.features.cache import FeatureCache
    from mmaffect.features.vision import ClipConfig

    store = FeatureCache(cache)
    per_video = {}
    for v in videos:
        key = vision_keys(v.stem, face_config_dict(face, False), frame, ClipConfig())["faces"][0]
        faces = store.load(key)
        expr = face_model_outputs(store, v.stem, frame, ["expr"])["expr"]
        per_video[v.name] = {
            "found": np.asarray(faces["found"]).copy(),
            "landmarks": np.asarray(faces["landmarks"]).copy(),
            "expr": expr,
        }
    detection = rep.stages.get("face detection", {"seconds": 0.0, "items": 0})
    return {"videos": per_video, "detect_seconds": detection["seconds"], "wall": wall}


def compare(ref: dict, run: dict) -> dict:
    """The figures of one configuration against the reference, over a set's videos."""
    found = agree = both = total = 0
    nme, dp, same = [], [], []
    for name, r in ref["videos"].items():
        o = run["videos"][name]
        total += len(r["found"])
        found += int(o["found"].sum())
        agree += int((r["found"] == o["found"]).sum())
        m = r["found"] & o["found"]
        both += int(m.sum())
        if not m.any():
            continue
        eyes = np.linalg.norm(r["landmarks"][m, 0] - r["landmarks"][m, 1], axis=1)
        dist = np.linalg.norm(r["landmarks"][m] - o["landmarks"][m], axis=2).mean(axis=1)
        nme.append(dist / np.maximum(eyes, 1e-6))
        dp.append(np.abs(r["expr"][m] - o["expr"][m]).mean(axis=1))
        same.append(r["expr"][m].argmax(1) == o["expr"][m].argmax(1))
    cat = np.concatenate if nme else (lambda x: np.zeros(0))
    return {
        "frames": total,
        "found": round(found / total, 4),
        "found_agree": round(agree / total, 4),
        "nme": round(float(cat(nme).mean()), 4) if nme else None,
        "mean_abs_dp": round(float(cat(dp).mean()), 4) if dp else None,
        "argmax_agree": round(float(cat(same).mean()), 4) if same else None,
        "detect_seconds": round(run["detect_seconds"], 2),
    }


def set_videos(name: str) -> list[Path]:
    folder = data_path(SETS[name])
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = [parse_config(c) for c in args.configs.split(",")]
    start, rows, figures = time.perf_counter(), [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets.split(","):
            videos = set_videos(set_name)
            runs = [run_config(videos, e, s, Path(tmp) / f"{set_name}-{e}-{s}") for e, s in configs]
            for (e, s), run in zip(configs, runs, strict=True):
                fig = compare(runs[0], run)
                figures[f"{set_name} every{e}@{s}"] = fig
                rows.append({"set": set_name, "config": f"every{e}@{s}", **fig})
    print_table(rows, list(rows[0]))
    total = round(time.perf_counter() - start, 1)
    print(f"\ntotal_seconds {total}")
    write_json(args.json, {**machine(), "reference": args.configs.split(",")[0],
                           "figures": figures, "total_seconds": total})  # fmt: skip


if __name__ == "__main__":
    main()
