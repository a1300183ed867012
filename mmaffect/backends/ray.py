"""The Ray backend: each video of the batch is a call to a Ray actor (a worker process with its
models loaded once) that runs the local code path on it (:mod:`mmaffect.backends.worker`).

The driver (this process):

* connects to the cluster (``--address``, else ``RAY_ADDRESS``, else a local Ray instance that
  lives as long as the run) and sizes the workers from its resources: ``--worker-cpus`` CPUs
  each, plus ``--worker-gpus`` of a GPU when the device is CUDA;
* hands out one video at a time per worker (a free worker takes the next video, so long and
  short videos balance), polls the workers for one progress display, and sums their stage
  times;
* retries a video whose worker was lost (killed, out of memory, node gone; Ray restarts the
  actor) up to :data:`RETRIES` times; a video that fails for its own reasons comes back as a
  failure with its message and is not retried;
* calls ``on_video`` in input order, so ``predict`` writes each video's outputs here;
* on Ctrl-C asks every busy worker to stop (each removes its temporary entries), then ends the
  workers.

Entries are written by the workers with the local atomic writes into the cache path they are
given, which must be storage every node sees at the same path (a shared filesystem; object
stores such as S3 are not supported yet).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmaffect.errors import InputError

# A video whose worker is lost this many times more is failed (a video that kills every
# worker it runs on must not take the whole cluster down with it).
RETRIES = 2
# How long cancelled workers get to remove their temporaries before they are ended.
CANCEL_SECONDS = 15.0
POLL_SECONDS = 0.5  # the driver's loop: results, then the workers' progress
# Environment variables that choose models and tools: the driver's values go to the workers.
PASSED_ENV = ("MMAFFECT_MODELS", "MMAFFECT_FFMPEG", "MMAFFECT_OFFLINE", "OMP_WAIT_POLICY")


def worker_device_name(device: str) -> str:
    """``auto``, ``cpu`` or ``cuda`` for a ``--device`` given with ``--backend ray``."""
    text = str(device).strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    if re.fullmatch(r"cuda:\d+", text):
        raise InputError(
            f"--device {device} names a GPU of this machine, but with --backend ray Ray "
            "gives each worker its GPU",
            hint="use --device cuda, and --worker-gpus for the fraction of a GPU per worker",
        )
    raise InputError(f"unknown device {device!r}", hint="choose auto, cpu or cuda")


@dataclass
class _Plan:
    """How the batch uses the cluster."""

    address: str
    device: str
    workers: int
    cpus: float
    gpus: float  # per worker; 0 on the CPU
    nodes: int
    cluster: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        gpu = f" + {self.gpus:g} GPU" if self.gpus else ""
        return (
            f"ray: {self.workers} worker(s) of {self.cpus:g} CPU{gpu} on {self.address} "
            f"({self.nodes} node(s), {self.cluster.get('CPU', 0):g} CPUs, "
            f"{self.cluster.get('GPU', 0):g} GPUs), device {self.device}"
        )


def _connect(backend, debug: bool) -> tuple[bool, str]:
    """Connect to the cluster (or start a local instance); (whether this run started it and
    must stop it, where it is)."""
    import ray

    if ray.is_initialized():  # the caller's own session (Python API, tests)
        if backend.address is not None:
            raise InputError(
                f"this process is already connected to a Ray cluster; it cannot also connect "
                f"to {backend.address}",
                hint="leave the address out to use that cluster, or call ray.shutdown() first",
            )
        return False, "the Ray session of this process"
    address = backend.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {
        "log_to_driver": debug,  # the workers' own output (MediaPipe, ffmpeg) only with --debug
        "logging_level": logging.INFO if debug else logging.ERROR,
    }
    if address == "local":
        kwargs["include_dashboard"] = False
    else:
        _check_reachable(address)  # ray.init would retry an unreachable address for minutes
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError…
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"cannot reach the Ray cluster at {address}: {reason}",
            hint="start one with `ray start --head` and pass its address, or leave --address "
            "out for a local Ray instance",
        ) from None
    if address == "local":
        return True, "a local Ray instance"
    return True, f"the Ray cluster at {ray.get_runtime_context().gcs_address}"


def _check_reachable(address: str) -> None:
    """:class:`InputError` when ``HOST:PORT`` (or ``ray://HOST:PORT``) does not answer."""
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return  # "auto" and other forms: ray.init says what is wrong
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise InputError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or type(e).__name__}",
            hint="start one with `ray start --head` and pass its address, or leave --address "
            "out for a local Ray instance",
        ) from None


def _plan(backend, device: str, n_videos: int, where: str) -> _Plan:
    """Workers and their resources; :class:`InputError` when the cluster cannot hold one."""
    import ray

    name = worker_device_name(device)
    cluster = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if name == "auto":
        name = "cuda" if cluster.get("GPU", 0) > 0 else "cpu"
    gpus = backend.gpus if name == "cuda" else 0.0

    def room(node: dict[str, float]) -> int:
        fits = math.floor(node.get("CPU", 0) / backend.cpus + 1e-9)
        if gpus:
            fits = min(fits, math.floor(node.get("GPU", 0) / gpus + 1e-9))
        return fits

    workers = backend.workers or sum(room(n) for n in nodes)
    if workers < 1:
        need = f"{backend.cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        raise InputError(
            f"the Ray cluster has no room for a worker of {need} (its nodes: "
            + "; ".join(f"{n.get('CPU', 0):g} CPUs, {n.get('GPU', 0):g} GPUs" for n in nodes)
            + ")",
            hint="lower --worker-cpus/--worker-gpus, use --device cpu, or pass --ray-workers N "
            "to wait for an autoscaler to add nodes",
        )
    return _Plan(
        address=where, device=name, workers=min(workers, max(1, n_videos)), cpus=backend.cpus,
        gpus=gpus, nodes=len(nodes), cluster=cluster,
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def _actor_class():
    """:class:`VideoWorker` as a Ray actor: ``extract`` one call at a time, ``progress`` and
    ``cancel`` answered while it runs."""
    import ray

    from mmaffect.backends.worker import VideoWorker

    @ray.remote(concurrency_groups={"control": 1})
    class Worker(VideoWorker):
        @ray.method(concurrency_group="control")
        def progress(self):
            return super().progress()

        @ray.method(concurrency_group="control")
        def cancel(self):
            return super().cancel()

    return Worker


def _start_workers(plan: _Plan, cache_root: Path, options, debug: bool) -> list:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env["OMP_NUM_THREADS"] = str(max(1, math.floor(plan.cpus)))  # torch's threads: its CPUs
    actor = _actor_class().options(
        num_cpus=plan.cpus,
        num_gpus=plan.gpus,
        max_restarts=-1,  # a lost worker is started again (elsewhere if its node is gone)
        max_task_retries=0,  # the driver retries the video itself (and says so)
    )
    root = str(Path(cache_root).absolute())
    return [actor.remote(root, options, debug, os.getcwd(), env) for _ in range(plan.workers)]


def run_extract(backend, *, store, options, sources, console, progress, debug, on_video):
    """Every video of ``sources`` on the Ray cluster; the report of the whole batch."""
    import ray

    started = time.perf_counter()
    sources = list(sources)
    owned, where = _connect(backend, debug)
    actors: list = []
    try:
        plan = _plan(backend, options.device, len(sources), where)
        options = replace(options, device=plan.device)
        console.print(plan.describe(), highlight=False)
        if sources:
            actors += _start_workers(plan, store.root, options, debug)
        run = _RayRun(sources, actors, console, on_video, options.stall_seconds)
        with _ClusterProgress(console, progress, len(sources), len(actors)) as bars:
            run.bars = bars
            run.run()
        return run.report(started)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if owned:
            ray.shutdown()


class _RayRun:
    """The driver's loop over one batch."""

    def __init__(self, sources, actors, console, on_video, recover_seconds: float):
        from mmaffect.extraction import VideoSummary

        self.sources, self.actors, self.console, self.on_video = sources, actors, console, on_video
        self.todo: deque[int] = deque(range(len(sources)))
        self.free = list(actors)
        self.busy: dict[Any, tuple[Any, int]] = {}  # call → (worker, video index)
        # workers lost and being restarted by Ray: ping → (worker, since when)
        self.recovering: dict[Any, tuple[Any, float]] = {}
        self.recover_seconds = recover_seconds or math.inf
        # workers starting (process, imports): ping → when it was sent; their start-up time
        # is a stage of the summary ("start workers", summed over the workers)
        self.starting = {actor.where.remote(): time.perf_counter() for actor in actors}
        self.outcomes: list[Any] = [None] * len(sources)
        self.lost = [0] * len(sources)  # times the worker of each video was lost
        self.partial: dict[int, tuple[int, int]] = {}  # video → (frames done, frames)
        self.handed = 0  # videos handed to on_video, in input order
        self.results: list = []
        self.summaries = {s.id: VideoSummary(s.id) for s in sources}
        self.stages: dict[str, dict[str, float]] = {}
        self.interrupted = False
        self.bars: _ClusterProgress | None = None
        self.next_poll = 0.0

    def run(self) -> None:
        try:
            while self.todo or self.busy:
                while self.todo and self.free:
                    i = self.todo.popleft()
                    actor = self.free.pop()
                    self.busy[actor.extract.remote(self.sources[i])] = (actor, i)
                self.wait()
                self.recover()
                self.hand_out()
        except KeyboardInterrupt:
            self.interrupted = True
            self.cancel()
            self.console.print(
                "[yellow]interrupted[/]: finished entries are kept; re-run to resume"
            )

    def wait(self) -> None:
        import ray

        calls = list(self.busy)
        if not calls:  # every worker is being restarted
            time.sleep(POLL_SECONDS)
            return
        ready, rest = ray.wait(calls, num_returns=1, timeout=POLL_SECONDS)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for call in ready:
            self.collect(call)
        self.note_started()
        self.poll_progress()

    def collect(self, call) -> None:
        """A worker's answer for one video: its outcome, or a retry when the worker was lost."""
        import ray
        from ray.exceptions import RayActorError, RayError

        actor, i = self.busy.pop(call)
        self.partial.pop(i, None)
        source = self.sources[i]
        try:
            outcome = ray.get(call)
            self.free.append(actor)
        except RayActorError as e:
            self.recovering[actor.progress.remote()] = (actor, time.monotonic())
            self.lost[i] += 1
            reason = _lost_reason(e)
            if self.lost[i] <= RETRIES:
                self.console.print(
                    f"[yellow]warning[/]: {source.id}: its Ray worker was lost ({reason}); "
                    f"retrying it (attempt {self.lost[i] + 1} of {RETRIES + 1})",
                    highlight=False,
                )
                self.todo.appendleft(i)
                return
            outcome = _failed(
                source, f"its Ray worker was lost {self.lost[i]} times (last: {reason})"
            )
        except RayError as e:  # the worker's own code raised: reported like an unexpected error
            self.free.append(actor)
            cause = getattr(e, "cause", None) or e
            outcome = _failed(
                source,
                f"{type(cause).__name__}: {_first_line(cause)} (unexpected error in a Ray "
                "worker; --debug shows the traceback)",
            )
        self.done(i, outcome)

    def note_started(self) -> None:
        import ray
        from ray.exceptions import RayError

        if self.starting:
            ready, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
            for ping in ready:
                seconds = time.perf_counter() - self.starting.pop(ping)
                with contextlib.suppress(RayError):  # a worker lost before it answered
                    ray.get(ping)
                    self.add_stages({"start workers": {"seconds": seconds, "items": 0}})

    def add_stages(self, stages: dict) -> None:
        for stage, v in stages.items():
            total = self.stages.setdefault(stage, {"seconds": 0.0, "items": 0})
            total["seconds"] = round(total["seconds"] + v["seconds"], 3)
            total["items"] += v["items"]

    def recover(self) -> None:
        """Workers that Ray has restarted since they were lost take videos again; one that
        does not come back within the stall limit is dropped, and with no worker left the
        remaining videos fail."""
        import ray
        from ray.exceptions import RayError

        if self.recovering:
            pings = list(self.recovering)
            ready, _ = ray.wait(pings, num_returns=len(pings), timeout=0)
            for ping in ready:
                actor, since = self.recovering.pop(ping)
                try:
                    ray.get(ping)
                    self.free.append(actor)
                except RayError:  # still restarting: ask again (once per loop)
                    if time.monotonic() - since < self.recover_seconds:
                        self.recovering[actor.progress.remote()] = (actor, since)
        if self.todo and not (self.free or self.busy or self.recovering):
            while self.todo:
                i = self.todo.popleft()
                self.done(i, _failed(self.sources[i], "no Ray worker is left to run it"))

    def done(self, i: int, outcome) -> None:
        from rich.text import Text

        if self.lost[i] and outcome.result is not None and outcome.result.up_to_date:
            # everything was written by the attempt whose worker was lost before it answered
            outcome.result = replace(outcome.result, status="ok", up_to_date=False,
                                     message="written before its worker was lost")  # fmt: skip
        self.outcomes[i] = outcome
        for line in outcome.console.splitlines():
            self.console.print(Text.from_ansi(line), highlight=False, soft_wrap=True)
        self.add_stages(outcome.stages)
        self.bars.video_done(outcome.frames_seen)

    def poll_progress(self) -> None:
        """Frames done of the videos in progress, for the display."""
        import ray
        from ray.exceptions import RayError

        if time.monotonic() < self.next_poll or not self.busy:
            self.bars.show(self.partial)
            return
        # about once a second; less often with hundreds of busy workers (one call each)
        self.next_poll = time.monotonic() + max(1.0, len(self.busy) / 100)
        asked = {actor.progress.remote(): i for actor, i in self.busy.values()}
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=0.2)
        for ref in ready:
            with contextlib.suppress(RayError):
                self.partial[asked[ref]] = ray.get(ref)
        self.partial = {i: p for i, p in self.partial.items() if self.outcomes[i] is None}
        self.bars.show(self.partial)

    def hand_out(self) -> None:
        """``on_video`` for the finished videos, in input order."""
        while self.handed < len(self.sources) and self.outcomes[self.handed] is not None:
            source, outcome = self.sources[self.handed], self.outcomes[self.handed]
            self.handed += 1
            if outcome.result is None:  # stopped by a cancel: not finished
                continue
            self.summaries[source.id] = outcome.summary
            self.results.append(outcome.result)
            if self.on_video is not None:
                failed = outcome.result.status == "failed"
                self.on_video(source, outcome.result.message if failed else None)

    def cancel(self) -> None:
        """Ask every busy worker to stop and wait (a while) until each has cleaned up."""
        import ray

        calls = list(self.busy)
        for actor, _ in self.busy.values():
            with contextlib.suppress(Exception):
                actor.cancel.remote()
        if calls:
            with contextlib.suppress(Exception):
                ray.wait(calls, num_returns=len(calls), timeout=CANCEL_SECONDS)

    def report(self, started: float):
        from mmaffect.batch import BatchReport
        from mmaffect.extraction import ExtractReport

        return ExtractReport(
            batch=BatchReport(results=list(self.results), interrupted=self.interrupted),
            videos=self.summaries,
            stages=self.stages,
            seconds=time.perf_counter() - started,
            workers=len(self.actors),
        )


def _lost_reason(error: BaseException) -> str:
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    if isinstance(error, ActorUnavailableError):
        return "it became unreachable: killed, or its node lost"
    if isinstance(error, ActorDiedError):
        return "its process died"
    return type(error).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "…"


def _failed(source, message: str):
    from mmaffect.backends.worker import VideoOutcome
    from mmaffect.batch import ItemResult
    from mmaffect.extraction import VideoSummary

    line = f"[red]✗[/] {source.id}: {message}"
    return VideoOutcome(
        result=ItemResult(source.id, "failed", message),
        summary=VideoSummary(source.id),
        console=_ansi(line),
    )


def _ansi(markup: str) -> str:
    """``markup`` rendered as a worker's console would (ANSI), for :meth:`_RayRun.done`."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, color_system="standard", width=10_000).print(
        markup, highlight=False
    )
    return buffer.getvalue()


class _ClusterProgress:
    """One display for the whole cluster: videos done, frames/s, elapsed time and ETA."""

    def __init__(self, console, enabled: bool, n_videos: int, n_workers: int):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[videos]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.n_videos, self.done, self.frames = n_videos, 0, 0
        self.started = time.perf_counter()
        self.task = self.bar.add_task(
            f"ray, {n_workers} worker(s)", total=max(1, n_videos), videos="", rate=""
        )
        self.show({})

    def video_done(self, frames: int) -> None:
        self.done += 1
        self.frames += frames

    def show(self, partial: dict[int, tuple[int, int]]) -> None:
        frames = self.frames + sum(d for d, _ in partial.values())
        share = sum(d / t for d, t in partial.values() if t)
        rate = frames / max(1e-6, time.perf_counter() - self.started)
        self.bar.update(
            self.task,
            completed=self.done + share,
            videos=f"{self.done}/{self.n_videos} videos",
            rate=f"{frames} frames, {rate:.1f} frames/s",
        )

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
