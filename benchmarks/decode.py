"""Decode speed: frames/s at full size and at 224 px, and audio seconds decoded per second.

Usage::

    python benchmarks/decode.py [VIDEO] [--seconds 60] [--repeat 3] [--json out.json]

Without VIDEO it generates a 640x360 H.264 + AAC test video of ``--seconds`` seconds (ffmpeg's
testsrc2 pattern and a tone) in a temporary folder. Every figure is the best of ``--repeat`` runs
(machines here are shared; the best run is the least disturbed one). Figures:

* ``decode_null``: ffmpeg decoding to nothing (no RGB conversion, no pipe): the floor.
* ``rgb_full``: :func:`mmaffect.media.iter_frames` at full size (RGB uint8 through the pipe).
* ``rgb_224``: the same resized to 224 px on the longest side.
* ``audio``: :func:`mmaffect.media.load_audio` to 16 kHz mono float32, in x real time.
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

from mmaffect.media import iter_frames, load_audio, probe
from mmaffect.media.ffmpeg import ffmpeg_binary
from mmaffect.media.probe import count_frames_decoded


def make_test_video(path: Path, seconds: int) -> Path:
    subprocess.run(
        [
            ffmpeg_binary(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=640x360:rate=30:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    return path


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(video: Path, repeat: int) -> dict:
    info = probe(video)
    v = info.require_video()
    frames = v.frames
    seconds = frames / float(v.fps)

    def stream(resize):
        n = sum(len(c) for c in iter_frames(video, info=info, resize=resize))
        assert n == frames, (n, frames)

    results = {
        "video": str(video),
        "size": f"{v.width}x{v.height}",
        "codec": v.codec,
        "frames": frames,
        "seconds": round(seconds, 3),
        "ffmpeg": ffmpeg_binary(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
    }
    t_null = best_of(repeat, lambda: count_frames_decoded(video))
    t_full = best_of(repeat, lambda: stream(None))
    t_224 = best_of(repeat, lambda: stream(224))
    results["decode_null_fps"] = round(frames / t_null, 1)
    results["rgb_full_fps"] = round(frames / t_full, 1)
    results["rgb_224_fps"] = round(frames / t_224, 1)
    if info.has_audio:
        t_audio = best_of(repeat, lambda: load_audio(video, info=info))
        results["audio_x_realtime"] = round(seconds / t_audio, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", nargs="?", type=Path)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or make_test_video(Path(tmp) / "test_640x360.mp4", args.seconds)
        results = run(video, args.repeat)
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
