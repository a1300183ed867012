"""Batch behaviour shared by every command that works over many inputs.

Each item runs on its own: an expected failure (:class:`~mmaffect.errors.MmaffectError`) prints
one line with its reason, an unexpected one prints its type and message (``--debug`` shows the
traceback), and the batch goes on. At the end a summary lists every failure, and
:attr:`BatchReport.exit_code` is non-zero when anything failed (or when the run was interrupted).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rich.console import Console
from rich.table import Table

from mmaffect.errors import MmaffectError

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class Skip(Exception):
    """Raised by a work function when an item needs no work (e.g. already done: resume)."""


@dataclass(frozen=True)
class ItemResult:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    message: str = ""
    seconds: float = 0.0


@dataclass
class BatchReport(Generic[T]):
    results: list[ItemResult] = field(default_factory=list)
    interrupted: bool = False

    def _with(self, status: str) -> list[ItemResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> list[ItemResult]:
        return self._with("ok")

    @property
    def skipped(self) -> list[ItemResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[ItemResult]:
        return self._with("failed")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK


def run_batch(
    items: Sequence[T],
    work: Callable[[T], str | None],
    *,
    name: Callable[[T], str],
    console: Console | None = None,
    debug: bool = False,
    title: str = "summary",
) -> BatchReport:
    """Run ``work`` on every item, never letting one failure stop the rest.

    ``work`` returns an optional one-line note for the summary, or raises :class:`Skip`.
    """
    console = console or Console(stderr=True)
    report: BatchReport = BatchReport()
    for item in items:
        label = name(item)
        start = time.perf_counter()
        try:
            note = work(item)
            status, message = "ok", note or ""
        except Skip as e:
            status, message = "skipped", str(e) or "already done"
        except MmaffectError as e:
            status, message = "failed", e.one_line()
            if debug and e.detail:
                console.print(e.detail, markup=False, highlight=False)
        except KeyboardInterrupt:
            report.interrupted = True
            console.print(f"[yellow]interrupted[/] during {label}; re-run to resume")
            break
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            status = "failed"
            message = f"{type(e).__name__}: {e} (unexpected error; --debug shows the traceback)"
            if debug:
                console.print(traceback.format_exc(), markup=False, highlight=False)
        seconds = time.perf_counter() - start
        report.results.append(ItemResult(label, status, message, seconds))
        if status == "failed":
            console.print(f"[red]✗[/] {label}: {message}", markup=True, highlight=False)
    print_summary(report, console, title=title)
    return report


def print_summary(report: BatchReport, console: Console, *, title: str = "summary") -> None:
    n = len(report.results)
    parts = [
        f"{len(report.ok)} ok",
        f"{len(report.skipped)} skipped",
        f"{len(report.failed)} failed",
    ]
    if report.interrupted:
        parts.append("interrupted")
    console.print(f"[bold]{title}[/]: {n} input(s): " + ", ".join(parts), highlight=False)
    if report.failed:
        table = Table(title="failures", show_lines=False, title_justify="left")
        table.add_column("input")
        table.add_column("reason", overflow="fold")
        for r in report.failed:
            table.add_row(r.name, r.message)
        console.print(table)
