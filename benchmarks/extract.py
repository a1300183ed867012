"""Feature-extraction speed: frames/s per stage and end to end, peak memory, decode floor.

Usage::

    python benchmarks/extract.py [VIDEO] [--repeat-clip 4] [--device cpu|cuda]
                                 [--modalities frame,clip,speech,word] [--json out.json]

Without VIDEO it concatenates ``--repeat-clip`` copies of a RAVDESS clip from
``../shared/data`` (``MMAFFECT_TEST_DATA``) into one video (stream copy, no re-encoding). Every
phase runs in its own process so that its peak memory (max RSS, ffmpeg included) is its own:

1. ``decode``: frames streamed as RGB at full size (the floor of any per-frame pipeline);
2. ``extract``: a cold ``mmaffect.extract`` of every asked modality into an empty cache;
3. ``cached``: the same again (everything reused).

Printed: each stage's time and throughput (from the extract report), end-to-end frames/s,
x real time, and the ratio end-to-end / decode-only. Weights come from ``MMAFFECT_MODELS``
(default ``../shared/models``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMAFFECT_TEST_DATA", REPO.parent / "shared" / "data"))
MODELS = Path(os.environ.get("MMAFFECT_MODELS", REPO.parent / "shared" / "models"))


def concat_clip(clip: Path, copies: int, out: Path) -> Path:
    from mmaffect.media.ffmpeg import run

    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{clip}'\n" for _ in range(copies)))
    run(
        [
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(out),
        ],
        media=clip,
    )
    return out


def phase(name: str, video: Path, args) -> dict:
    """Run one phase in a child process; return its figures plus its peak memory."""
    cmd = [
        sys.executable,
        __file__,
        str(video),
        "--phase",
        name,
        "--device",
        args.device,
        "--modalities",
        args.modalities,
        "--cache",
        str(args.cache),
        "--detect-size",
        str(args.detect_size),
        *(["--frame-crop", str(args.frame_crop)] if args.frame_crop else []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"phase {name} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def run_phase(name: str, video: Path, args) -> dict:
    import torch

    from mmaffect.media import iter_frames, probe

    info = probe(video)
    frames = info.require_video().frames
    start = time.perf_counter()
    if name == "decode":
        n = sum(len(c) for c in iter_frames(video, info=info))
        assert n == frames
        return {"frames": frames, "seconds": time.perf_counter() - start}
    import mmaffect
    from mmaffect.features.vision import FaceConfig, FrameConfig

    report = mmaffect.extract(
        [video],
        cache=args.cache,
        models_dir=MODELS,
        device=args.device,
        modalities=args.modalities,
        progress=False,
        face=FaceConfig(max_side=args.detect_size),
        frame=FrameConfig(crop_size=args.frame_crop),
    )
    assert report.exit_code == 0
    return {
        "frames": frames,
        "seconds": time.perf_counter() - start,
        "stages": report.stages,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", nargs="?", type=Path)
    parser.add_argument("--repeat-clip", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modalities", default="frame,clip,speech,word")
    parser.add_argument("--detect-size", type=int, default=640)
    parser.add_argument("--frame-crop", type=int, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the mmaffect CLI does
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.video, args)))
        return

    from mmaffect.media import probe

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or concat_clip(
            DATA / "video/ravdess_av_actor05/01-01-03-01-01-02-05.mp4",
            args.repeat_clip,
            Path(tmp) / "ravdess_x.mp4",
        )
        info = probe(video)
        v = info.require_video()
        args.cache = Path(tmp) / "cache"
        decode = phase("decode", video, args)
        cold = phase("extract", video, args)
        cached = phase("cached", video, args)
    seconds = v.frames / float(v.fps)
    figures = {
        "video": f"{video.name} {v.width}x{v.height} {float(v.fps):.2f} fps, {v.frames} frames, "
        f"{seconds:.1f} s",
        "device": args.device,
        "modalities": args.modalities,
        "detect_size": args.detect_size,
        "frame_crop": args.frame_crop or "backbone default",
        "cpus": os.cpu_count(),
        "torch_threads": cold["torch_threads"],
        "machine": platform.machine(),
        "decode_fps": round(decode["frames"] / decode["seconds"], 1),
        "decode_peak_rss_mb": decode["peak_rss_mb"],
        "extract_seconds": round(cold["seconds"], 2),
        "extract_fps": round(v.frames / cold["seconds"], 2),
        "extract_x_realtime": round(seconds / cold["seconds"], 3),
        "extract_vs_decode": round(
            (v.frames / cold["seconds"]) / (decode["frames"] / decode["seconds"]), 4
        ),
        "extract_peak_rss_mb": cold["peak_rss_mb"],
        "cached_rerun_seconds": round(cached["seconds"], 2),
        "stages": cold["stages"],
    }
    for key, value in figures.items():
        if key != "stages":
            print(f"{key:<22} {value}")
    print(f"\n{'stage':<28} {'seconds':>8} {'items':>6} {'items/s':>8}")
    for stage, s in sorted(cold["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
        rate = f"{s['items'] / s['seconds']:.1f}" if s["items"] and s["seconds"] else "-"
        print(f"{stage:<28} {s['seconds']:>8.2f} {s['items'] or '-':>6} {rate:>8}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
