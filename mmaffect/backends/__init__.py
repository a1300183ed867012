"""Where the videos of an ``extract`` or ``predict`` batch run.

* ``local`` (the default): this process, the pipelined batch of :mod:`mmaffect.extraction`.
* ``ray``: a Ray cluster (``pip install "mmaffect[ray]"``). Each worker is a Ray actor that runs
  the local code path on one video at a time with its models loaded once; the driver (this
  process) hands out videos, retries those whose worker died, shows one progress display and
  calls ``on_video`` in input order, so the report, the summary, the exit codes and the outputs
  are the local backend's. Cache and outputs go to a path every worker sees (a shared
  filesystem); object stores are not supported yet. See ``docs/scale.md``.

A backend is chosen with :class:`Backend`, checked before any work starts
(:meth:`Backend.check`), and runs a batch with :func:`run_extract`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmaffect.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from mmaffect.extraction import ExtractOptions, ExtractReport
    from mmaffect.features.cache import FeatureCache
    from mmaffect.media import MediaSource

__all__ = [
    "BACKENDS",
    "Backend",
    "as_backend",
    "driver_device",
    "extract_device",
    "run_extract",
]

BACKENDS = ("local", "ray")
RAY_INSTALL = 'pip install "mmaffect[ray]"'


@dataclass(frozen=True)
class Backend:
    """Where a batch runs, and for Ray how the cluster is used."""

    name: str = "local"
    # Ray cluster address (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None: RAY_ADDRESS,
    # else a local Ray instance started for the run and stopped after it.
    address: str | None = None
    workers: int | None = None  # Ray workers (actors); None: as many as the cluster holds
    cpus: float = 1.0  # CPUs declared per worker (decoding, audio side, vision on the CPU)
    gpus: float = 0.25  # GPU fraction declared per worker when the device is CUDA

    def check(self) -> Backend:
        """This backend, or :class:`~mmaffect.errors.InputError` for an unknown name, Ray
        settings given to the local backend, or Ray not installed."""
        if self.name not in BACKENDS:
            raise InputError(f"unknown backend {self.name!r}", hint="choose local or ray")
        if self.name == "local":
            given = [
                option
                for option, value, default in (
                    ("--address", self.address, None),
                    ("--ray-workers", self.workers, None),
                    ("--worker-cpus", self.cpus, 1.0),
                    ("--worker-gpus", self.gpus, 0.25),
                )
                if value != default
            ]
            if given:
                verb = "is" if len(given) == 1 else "are"
                raise InputError(
                    f"{', '.join(given)} {verb} only for --backend ray", hint="add --backend ray"
                )
            return self
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be at least 1, not {self.workers}")
        if not self.cpus > 0:
            raise InputError(f"--worker-cpus must be more than 0, not {self.cpus:g}")
        if not 0 < self.gpus <= 1:
            raise InputError(
                f"--worker-gpus must be a fraction of one GPU in (0, 1], not {self.gpus:g}",
                hint="a worker runs its vision networks on one GPU",
            )
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError(
                "--backend ray needs Ray, which is not installed", hint=RAY_INSTALL
            ) from None
        return self


def as_backend(value: Backend | str | None) -> Backend:
    """``value`` (a :class:`Backend`, a backend's name, or None for the local one), checked."""
    if value is None:
        value = Backend()
    return (Backend(value) if isinstance(value, str) else value).check()


def extract_device(device: str, backend: Backend) -> str:
    """The extraction device for ``--device``: resolved here for the local backend; with Ray
    checked (``auto``, ``cpu`` or ``cuda``) and resolved against the cluster once reached."""
    from mmaffect.devices import resolve_device

    if backend.name == "local":
        return resolve_device(device)
    from mmaffect.backends.ray import worker_device_name

    return worker_device_name(device)


def driver_device(device: str, backend: Backend) -> str:
    """The device of work done in this process (``predict``'s model step) for ``--device``.

    Locally it is ``--device`` itself. With Ray, ``--device`` is the workers' (checked against
    the cluster when it is reached); this process uses its own CUDA device when it has one and
    the CPU otherwise.
    """
    from mmaffect.devices import resolve_device

    if backend.name == "local":
        return resolve_device(device)
    from mmaffect.backends.ray import worker_device_name

    worker_device_name(device)  # a misspelt device is refused before any work
    return "cpu" if device.strip().lower() == "cpu" else resolve_device("auto")


def run_extract(
    backend: Backend | str,
    *,
    store: FeatureCache,
    options: ExtractOptions,
    sources: Sequence[MediaSource],
    console: Console,
    progress: bool,
    debug: bool,
    on_video: Callable[[MediaSource, str | None], None] | None,
) -> ExtractReport:
    """Extract ``sources`` into ``store`` on ``backend`` (a :class:`Backend` or its name); the
    report of the whole batch."""
    backend = as_backend(backend)
    if backend.name == "ray":
        from mmaffect.backends.ray import run_extract as run
    else:
        from mmaffect.backends.local import run_extract as run
    return run(
        backend, store=store, options=options, sources=sources, console=console,
        progress=progress, debug=debug, on_video=on_video,
    )  # fmt: skip
