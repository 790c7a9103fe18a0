"""Code in the docs runs as printed: the user-written strategies of docs/windows.md and the
walk-through of docs/editing.md."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "windows.md"


def _block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return next(b for b in blocks if marker in b)


def test_folding_strategy_example_runs() -> None:
    """A strategy a user writes folds history into a persisted summary, as Summarize does;
    the block asserts what the window holds."""
    exec(compile(_block("class FoldByRounds"), str(DOC), "exec"), {})


def test_editing_history_example_runs() -> None:
    """docs/editing.md's walk-through runs as printed (it asserts what each edit leaves)."""
    doc = DOC.parent / "editing.md"
    block = next(b for b in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S))
    exec(compile(block, str(doc), "exec"), {})
