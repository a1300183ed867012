"""Cost growth: time and peak memory of extract + predict on videos of 1, 5 and 20 minutes.

Usage::

    python benchmarks/growth.py [--minutes 1,5,20] [--scale 640:360] [--detect-size 640]
                                [--detect-every 4] [--frame-backbone NAME [--frame-crop N]]
                                [--device cpu|cuda]
                                [--modalities frame,clip,speech,word] [--json F]

Each video is the RAVDESS clip of ``../shared/data`` repeated to the length (stream copy; with
``--scale`` re-encoded to that size), and each length runs the ``pipeline`` phase of
``benchmarks/speed.py`` in its own process: ``mmaffect.extract`` of all four modalities into
an empty cache, ``mmaffect.predict`` (baseline) and the fusion network over every frame. The
time per minute of video should stay flat and the peak memory (max RSS of the process and
the ffmpeg it waited for) should not grow with the length. With a subset of ``--modalities``
only those branches are extracted (no predict), to see which side's memory grows.

This is the long benchmark: it runs a little longer than the videos last (26 minutes of
video) at the toolkit's defaults on 2 CPU cores (``benchmarks/speed.py``: about real time).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import RAVDESS_CLIP, child, data_path, machine, print_table, repeat_clip, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", default="1,5,20")
    parser.add_argument("--scale", help="re-encode the test videos to this size, e.g. 640:360")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detect-size", type=int, default=640)
    parser.add_argument("--detect-every", type=int)
    parser.add_argument("--frame-backbone", help="a registry backbone instead of the face model")
    parser.add_argument("--frame-crop", type=int, default=None, help="with --frame-backbone")
    parser.add_argument(
        "--modalities",
        default="frame,clip,speech,word",
        help="a subset measures the extraction of those branches alone (no predict)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mmaffect.media import probe

    clip = data_path(RAVDESS_CLIP)
    speed = Path(__file__).with_name("speed.py")
    common = ["--device", args.device, "--detect-size", args.detect_size]
    common += ["--modalities", args.modalities]
    for option in ("detect_every", "frame_backbone", "frame_crop"):
        if getattr(args, option) is not None:
            common += ["--" + option.replace("_", "-"), getattr(args, option)]
    start = time.perf_counter()
    rows = []
    for minutes in (float(m) for m in args.minutes.split(",")):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            video = repeat_clip(clip, minutes * 60, tmp / f"ravdess_{minutes:g}min.mp4", args.scale)
            v = probe(video).require_video()
            seconds = v.frames / float(v.fps)
            r = child(speed, [video, "--phase", "pipeline", "--cache", tmp / "cache",
                              "--out", tmp / "out", *common])  # fmt: skip
            words = sum(
                len(json.loads(t.read_text())["words"])
                for t in (tmp / "cache").rglob("transcript-*.json")
            )
        predict_s = r.get("predict_seconds", 0.0)
        fusion_s = r.get("fusion", {}).get("seconds", 0.0)
        total = r["extract_seconds"] + predict_s + fusion_s
        rows.append(
            {
                "minutes": round(seconds / 60, 2),
                "size": f"{v.width}x{v.height}",
                "frames": v.frames,
                "extract_s": round(r["extract_seconds"], 1),
                "predict_s": round(predict_s, 1),
                "fusion_s": round(fusion_s, 1),
                "load_models_s": round(r["stages"].get("load models", {}).get("seconds", 0), 1),
                # the audio side's two long steps (they read the soundtrack piece by piece)
                "asr_s": round(r["stages"].get("ASR (Whisper)", {}).get("seconds", 0), 1),
                "speech_s": round(r["stages"].get("speech features", {}).get("seconds", 0), 1),
                "words": words,  # in the ASR transcript
                "total_s": round(total, 1),
                "s_per_video_minute": round(total / (seconds / 60), 1),
                "x_realtime": round(seconds / total, 3),
                "peak_rss_mb": r["peak_rss_mb"],
                # at the end of the run: anonymous vs file-backed (mapped) resident memory
                "end_anon_mb": r.get("memory", {}).get("RssAnon"),
                "end_file_mb": r.get("memory", {}).get("RssFile"),
            }
        )
        print(f"{rows[-1]['minutes']} min: {rows[-1]}", flush=True)
    columns = list(rows[0])
    print()
    print_table(rows, columns)
    figures = {
        "device": args.device,
        "detect_size": args.detect_size,
        "detect_every": args.detect_every or "the default",
        "frame_branch": args.frame_backbone or "the shipped face model",
        "frame_crop": args.frame_crop or "the network's own",
        "modalities": args.modalities,
        **machine(),
        "runs": rows,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    print(f"\ntotal_seconds {figures['total_seconds']}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
