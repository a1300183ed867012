"""Frames/s per stage and end to end on a CUDA GPU, with the GPU's utilisation.

Usage::

    python benchmarks/gpu.py [VIDEO ...] [--seconds 120] [--device cuda:0] [--json F]

Without VIDEO it makes the same two test videos as ``benchmarks/speed.py`` (the RAVDESS clip
repeated to ``--seconds``, at 1280x720 and 640x360). Per video it runs ``speed.py``'s
``decode`` and ``pipeline`` phases (extract of all four branches into an empty cache +
predict with the baseline, then the fusion network over every frame) with ``--device`` in
child processes, while ``nvidia-smi`` samples the GPU's utilisation and memory every 200 ms.
It prints the figures of ``speed.py`` plus the mean and peak utilisation and the peak GPU
memory during the pipeline phase.

On a machine without CUDA (or without ``nvidia-smi``) it stops with a message: its figures
only mean something on a GPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import RAVDESS_CLIP, child, data_path, machine, write_json

SPEED = Path(__file__).with_name("speed.py")


class GpuSampler:
    """``nvidia-smi`` in the background: utilisation (%) and memory used (MiB) every 200 ms."""

    def __init__(self, index: int):
        self.samples: list[tuple[float, float]] = []
        cmd = ["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu,memory.used",
               "--format=csv,noheader,nounits", "-lms", "200"]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._proc.stdout or ():
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    def stop(self) -> dict[str, float]:
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=5)
        if not self.samples:
            return {}
        utils = [u for u, _ in self.samples]
        return {
            "gpu_util_mean": round(sum(utils) / len(utils), 1),
            "gpu_util_max": max(utils),
            "gpu_mem_peak_mib": max(m for _, m in self.samples),
            "samples": len(utils),
        }


def check_cuda(device: str) -> int:
    """The CUDA device index, or exit with why this benchmark cannot run here."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here (torch.cuda.is_available() is False): benchmarks/gpu.py "
            "measures a GPU; use benchmarks/speed.py on a CPU"
        )
    if shutil.which("nvidia-smi") is None:
        raise SystemExit("nvidia-smi not found: it samples the GPU's utilisation")
    return int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()


def measure(video: Path, device: str, index: int, tmp: Path) -> dict:
    common = ["--device", device]
    decode = child(SPEED, [video, "--phase", "decode", *common])
    sampler = GpuSampler(index)
    start = time.perf_counter()
    cache, out = tmp / f"{video.stem}-cache", tmp / f"{video.stem}-out"
    p = child(SPEED, [video, "--phase", "pipeline", "--cache", cache, "--out", out, *common])
    wall = time.perf_counter() - start
    gpu = sampler.stop()
    frames = decode["frames"]
    end_to_end = p["extract_seconds"] + p["predict_seconds"]
    return {
        "video": video.name,
        "frames": frames,
        "decode_fps": round(frames / decode["seconds"], 1),
        "extract_seconds": round(p["extract_seconds"], 2),
        "predict_seconds": round(p["predict_seconds"], 2),
        "end_to_end_fps": round(frames / end_to_end, 1),
        "fusion_fps": round(p["fusion"]["frames"] / p["fusion"]["seconds"], 1),
        "stages_fps": {
            k: round(s["items"] / s["seconds"], 1) if s["items"] and s["seconds"] else None
            for k, s in p["stages"].items()
        },
        "stages_seconds": {k: s["seconds"] for k, s in p["stages"].items()},
        "phase_wall_seconds": round(wall, 1),
        "peak_rss_mb": p["peak_rss_mb"],
        **gpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    index = check_cuda(args.device)
    from _common import repeat_clip

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        videos = args.videos or [
            repeat_clip(data_path(RAVDESS_CLIP), args.seconds, tmp / "ravdess_720p.mp4"),
            repeat_clip(data_path(RAVDESS_CLIP), args.seconds, tmp / "ravdess_360p.mp4",
                        scale="640:360"),
        ]  # fmt: skip
        results = [measure(v, args.device, index, tmp) for v in videos]
    for r in results:
        print(f"\n{r['video']}")
        for key, value in r.items():
            if key not in ("video", "stages_fps", "stages_seconds"):
                print(f"  {key:<22} {value}")
        for stage, fps in sorted(r["stages_fps"].items()):
            print(f"    {stage:<45} {r['stages_seconds'][stage]:>8.2f} s  {fps or '-'} items/s")
    total = round(time.perf_counter() - start, 1)
    print(f"\ntotal_seconds {total}")
    write_json(args.json, {"device": args.device, **machine(), "videos": results,
                           "total_seconds": total})  # fmt: skip


if __name__ == "__main__":
    main()
