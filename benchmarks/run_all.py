"""Run every benchmark, one after the other, and keep each one's figures in OUT/NAME.json.

Usage::

    python benchmarks/run_all.py [--out bench_results] [--growth] [--only speed,asr_wer]

The benchmarks run one at a time (timings taken side by side would disturb each other), each
in its own process with its defaults; its table goes to the terminal and OUT/NAME.log. The
long cost-growth run (1, 5 and 20-minute videos, over an hour on 2 CPU cores) runs only with
``--growth``; ``face_expression`` trains a face model on FER2013 (about an hour on 2 CPU
cores). A failed benchmark does not stop the others; the exit code is 1 if any failed.
The reference systems need the benchmark extra and ``scale`` the Ray one: ``pip install -e
'.[bench,ray]'``; ``gpu`` runs only where PyTorch sees a CUDA device.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name → extra arguments (besides ``--json``), in the order they run
BENCHMARKS: dict[str, list[str]] = {
    "decode": [],
    "speed": [],
    "face_levers": [],
    "gpu": [],  # only where CUDA is (skipped otherwise)
    "scale": [],  # needs the ray extra
    "expression_accuracy": ["--train-speech"],
    "face_expression": [],
    "speech_emotion": [],
    "va_speech": [],
    "asr_wer": [],
    "growth": [],
}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--growth", action="store_true", help="also the long cost-growth run")
    parser.add_argument("--only", help="comma-separated benchmark names")
    args = parser.parse_args()
    names = [n for n in BENCHMARKS if n != "growth" or args.growth]
    if "gpu" in names and not _has_cuda():
        print("gpu: skipped (no CUDA device here)")
        names.remove("gpu")
    if args.only:
        wanted = args.only.split(",")
        unknown = [n for n in wanted if n not in BENCHMARKS]
        if unknown:
            raise SystemExit(
                f"unknown benchmark(s) {unknown}: choose among {', '.join(BENCHMARKS)}"
            )
        names = [n for n in BENCHMARKS if n in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    times: dict[str, str] = {}
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        cmd = [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]]
        cmd += ["--json", str(args.out / f"{name}.json")]
        start = time.perf_counter()
        with (args.out / f"{name}.log").open("w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            for line in proc.stdout or ():
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
        seconds = time.perf_counter() - start
        times[name] = f"{seconds:.0f} s" + ("" if code == 0 else f" (FAILED, exit {code})")
        if code:
            failed.append(name)
    print("\n=== run times ===")
    for name, text in times.items():
        print(f"{name:<22} {text}")
    print(f"figures: {args.out}/<name>.json")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
