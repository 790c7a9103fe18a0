"""What the command prints, and where: rich tables (colour on a terminal, plain columns when
piped, ids never cut), JSON on stdout and nothing else, and progress on stderr only when
stderr is a terminal, so that scripts reading stdout see data and nothing but data."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

__all__ = [
    "Column",
    "emit_json",
    "emit_json_line",
    "fail",
    "note",
    "progress",
    "say",
    "stdout_console",
    "table",
    "usd",
    "working",
]

# piped output is never wrapped or cut: one row a line, however long
_PIPED_WIDTH = 100_000


def stdout_console() -> Console:
    """A console on the current ``sys.stdout`` (tests swap it): styled on a terminal, plain
    and unbounded in width when piped."""
    out = sys.stdout
    if out.isatty():
        return Console(file=out, highlight=False)
    return Console(
        file=out,
        width=_PIPED_WIDTH,
        no_color=True,
        color_system=None,
        highlight=False,
        emoji=False,
        markup=False,
    )


def say(text: str) -> None:
    """A line of plain text on stdout (the command's answer, when it is not a table)."""
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """A line on stderr: what is not data (notices, summaries of work done)."""
    sys.stderr.write(text + "\n")


def emit_json(document: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")


def emit_json_line(record: Any) -> None:
    """One record of a JSON lines stream on stdout, flushed so a reader sees it at once."""
    sys.stdout.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def usd(micros: int | None) -> str:
    return "n/a" if micros is None else f"${Decimal(micros) / 1_000_000:.6f}"


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` columns (ids) are never wrapped or shortened."""

    name: str
    right: bool = False
    key: bool = False
    style: str | None = None


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], title: str = "") -> None:
    """Rows as a table on stdout."""
    console = stdout_console()
    terminal = console.is_terminal
    grid = Table(
        title=title or None,
        box=box.SIMPLE_HEAD if terminal else None,
        show_edge=False,
        pad_edge=terminal,
        header_style="bold" if terminal else "",
    )
    for i, col in enumerate(columns):
        widest = max((len(str(r[i])) for r in rows), default=0)
        grid.add_column(
            col.name,
            justify="right" if col.right else "left",
            no_wrap=col.key,
            min_width=max(widest, len(col.name)) if col.key else None,
            overflow="fold",
            style=col.style if terminal else None,
        )
    for r in rows:
        grid.add_row(*(str(cell) for cell in r))
    if terminal:
        needed = Measurement.get(console, console.options.update_width(_PIPED_WIDTH), grid).minimum
        if needed > console.width:  # a narrow terminal: let lines wrap rather than cut ids
            console = Console(file=sys.stdout, width=needed, force_terminal=True, highlight=False)
        console.print(grid)
        return
    with console.capture() as captured:
        console.print(grid)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Any]:
    """A progress bar on stderr, shown only when stderr is a terminal. Yields a callback
    taking the count done so far (what the library's ``progress=`` arguments call)."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn() if total is not None else TextColumn("{task.completed}"),
        console=Console(file=sys.stderr),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        yield advance


@contextmanager
def working(label: str) -> Iterator[None]:
    """A spinner on stderr (on a terminal) for one long call with nothing to count."""
    if not sys.stderr.isatty():
        yield
        return
    with Console(file=sys.stderr).status(label):
        yield


def fail(message: str, status: int = 1) -> int:
    """Say why the command failed, in one line on stderr; returns the exit status."""
    note(f"chatledger: {message}")
    return status
