"""Scaling over Ray: the same batch with the local backend and with 1 and 2 Ray workers.

Usage::

    python benchmarks/scale.py [VIDEO ...] [--clips 4] [--modalities frame,clip,speech,word]
                               [--workers 1,2] [--json F]

Without VIDEO: the first ``--clips`` RAVDESS clips of ``../shared/data`` (1280x720, 29.97 fps,
3.2 s, a speaking face). Every configuration runs in its own process, into an empty cache:

* ``local``: the local backend (one process: the vision side with torch on every core, the
  audio side beside it, the next video decoding ahead);
* ``ray xN``: a local Ray instance over every core of the machine and N workers declaring
  ``cores / N`` CPUs each (torch runs on that many threads in each).

Per configuration: the wall time from the start of the work to the report (with Ray: starting
the instance, the workers and their models), frames/s over it, the time to start Ray, model
loading summed over the workers, and the steady per-video time of one worker (the wall time
without the start of Ray and the loading of the models, times the workers, over the videos):
the figure the expected scaling on a cluster is computed from (``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import MODELS, child, data_path, machine, print_table, write_json

ALL = "frame,clip,speech,word"


def phase(args) -> dict:
    """One configuration, in this process (``--phase local|ray1|ray2…``)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does
    from rich.console import Console

    import mmaffect
    from mmaffect.backends import Backend

    cores = os.cpu_count() or 1
    started = time.perf_counter()
    ray_start, backend = 0.0, Backend("local")
    if args.phase != "local":
        import logging

        import ray

        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)  # fmt: skip
        ray_start = time.perf_counter() - started
        workers = int(args.phase.removeprefix("ray"))
        backend = Backend("ray", workers=workers, cpus=cores / workers)
    report = mmaffect.extract(
        args.videos, cache=args.cache, modalities=args.modalities, models_dir=MODELS,
        backend=backend, progress=False, console=Console(file=io.StringIO()),
    )  # fmt: skip
    wall = time.perf_counter() - started
    if report.exit_code != 0:
        raise SystemExit(f"{args.phase}: extract failed: {report.batch.failed}")
    totals = report.totals()
    call_ms = call_round_trip_ms() if args.phase != "local" else 0.0
    return {
        "config": "local" if args.phase == "local" else f"ray x{report.workers}",
        "workers": report.workers if args.phase != "local" else 0,
        "videos": totals["videos"],
        "frames": totals["frames"],
        "wall_s": round(wall, 2),
        "frames_per_s": round(totals["frames"] / wall, 2),
        "ray_start_s": round(ray_start, 2),
        "start_workers_s": report.stages.get("start workers", {}).get("seconds", 0.0),
        "load_models_s": report.stages.get("load models", {}).get("seconds", 0.0),
        "call_ms": call_ms,
        "stages": report.stages,
    }


def call_round_trip_ms(calls: int = 200) -> float:
    """Milliseconds of one call to an idle worker and its answer: what the driver adds to
    every video (the video's description goes out, a few KB of outcome come back)."""
    import ray

    from mmaffect.backends.ray import _actor_class

    worker = _actor_class().options(num_cpus=0).remote("/nonexistent", None, False, ".", {})
    ray.get(worker.progress.remote())  # started
    start = time.perf_counter()
    for _ in range(calls):
        ray.get(worker.progress.remote())
    seconds = time.perf_counter() - start
    ray.kill(worker)
    return round(1000 * seconds / calls, 2)


def steady_video_seconds(row: dict) -> float:
    """Seconds one worker spends per video once Ray is up and its models are loaded."""
    workers = max(1, row["workers"])
    start = row["ray_start_s"] + (row["start_workers_s"] + row["load_models_s"]) / workers
    busy = row["wall_s"] - start
    return round(busy * workers / row["videos"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--clips", type=int, default=4, help="RAVDESS clips without VIDEO")
    parser.add_argument("--modalities", default=ALL)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    videos = args.videos or sorted(data_path("video/ravdess_av_actor05").glob("*.mp4"))
    videos = videos[: args.clips] if not args.videos else videos
    phases = ["local"] + [f"ray{int(n)}" for n in args.workers.split(",") if n]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmaffect-scale-") as tmp:
        for name in phases:
            cache = Path(tmp) / name
            extra = ["--phase", name, "--cache", cache, "--modalities", args.modalities]
            print(f"{name}: {len(videos)} videos …", file=sys.stderr, flush=True)
            row = child(Path(__file__), [*map(str, videos), *extra])
            row["steady_video_s"] = steady_video_seconds(row)
            if name != "local":  # the Ray workers are not children of this process
                row.pop("peak_rss_mb", None)
            rows.append(row)
    local = rows[0]["wall_s"]
    for row in rows:
        row["vs_local"] = round(local / row["wall_s"], 2)
    print_table(
        rows,
        ["config", "videos", "frames", "wall_s", "frames_per_s", "vs_local", "ray_start_s",
         "start_workers_s", "load_models_s", "steady_video_s", "call_ms"],
    )  # fmt: skip
    write_json(
        args.json,
        {"machine": machine(), "modalities": args.modalities,
         "videos": [str(v) for v in videos], "runs": rows},
    )  # fmt: skip


if __name__ == "__main__":
    main()
