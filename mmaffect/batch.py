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
    """Raised by a work function when an item is not processed; the message says why and the
    summary names the item with it."""


class UpToDate(Skip):
    """Raised by a work function when an item's outputs are already there (resume); the summary
    only counts these."""


@dataclass(frozen=True)
class ItemResult:
    name: str
    status: str  # "ok" | "skipped" | "failed"
    message: str = ""
    seconds: float = 0.0
    up_to_date: bool = False  # a skip because the outputs exist already


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


class Batch:
    """Runs the items of a batch one at a time as they become ready (:meth:`run`), never
    letting one failure stop the rest, and collects a :class:`BatchReport`."""

    def __init__(self, console: Console | None = None, *, debug: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.debug = debug
        self.report: BatchReport = BatchReport()

    def run(self, label: str, work: Callable[[], str | None]) -> ItemResult:
        """``work()`` returns an optional one-line note or raises :class:`Skip`; a
        ``KeyboardInterrupt`` marks the batch interrupted and propagates."""
        start = time.perf_counter()
        up_to_date = False
        try:
            status, message = "ok", work() or ""
        except Skip as e:
            status, message = "skipped", str(e) or "already done"
            up_to_date = isinstance(e, UpToDate)
        except MmaffectError as e:
            status, message = "failed", e.one_line()
            if self.debug and e.detail:
                self.console.print(e.detail, markup=False, highlight=False)
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.console.print(f"[yellow]interrupted[/] during {label}; re-run to resume")
            raise
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            status = "failed"
            message = f"{type(e).__name__}: {e} (unexpected error; --debug shows the traceback)"
            if self.debug:
                self.console.print(traceback.format_exc(), markup=False, highlight=False)
        result = ItemResult(label, status, message, time.perf_counter() - start, up_to_date)
        self.report.results.append(result)
        if status == "failed":
            self.console.print(f"[red]✗[/] {label}: {message}", markup=True, highlight=False)
        return result


def run_batch(
    items: Sequence[T],
    work: Callable[[T], str | None],
    *,
    name: Callable[[T], str],
    console: Console | None = None,
    debug: bool = False,
    title: str = "summary",
) -> BatchReport:
    """Run ``work`` on every item, never letting one failure stop the rest; Ctrl-C stops the
    batch (the report says interrupted).

    ``work`` returns an optional one-line note for the summary, or raises :class:`Skip`.
    """
    batch = Batch(console, debug=debug)
    for item in items:
        try:
            batch.run(name(item), lambda item=item: work(item))
        except KeyboardInterrupt:
            break
    print_summary(batch.report, batch.console, title=title)
    return batch.report


def print_summary(report: BatchReport, console: Console, *, title: str = "summary") -> None:
    """Counts, then every input that failed or was not processed, each with its reason."""
    n = len(report.results)
    parts = [
        f"{len(report.ok)} ok",
        f"{len(report.skipped)} skipped",
        f"{len(report.failed)} failed",
    ]
    if report.interrupted:
        parts.append("interrupted")
    console.print(f"[bold]{title}[/]: {n} input(s): " + ", ".join(parts), highlight=False)
    not_processed = [r for r in report.skipped if not r.up_to_date]
    for heading, label, rows in (
        ("skipped", "skipped", not_processed),
        ("failures", "failed", report.failed),
    ):
        if rows:
            _reasons(console, heading, label, rows)


def _reasons(console: Console, heading: str, label: str, rows: list[ItemResult]) -> None:
    if not console.is_terminal:  # logs and pipes: plain lines, never squeezed into columns
        for r in rows:
            line = f"{label}: {r.name}: {r.message}"
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=heading, show_lines=False, title_justify="left")
    table.add_column("input")
    table.add_column("reason", overflow="fold")
    for r in rows:
        table.add_row(r.name, r.message)
    console.print(table)
