"""The library's types, as a user's type checker sees them: ``mypy --strict`` on realistic user
code (tests/typing_cases/user_code.py) finds nothing, ``assert_type`` there pins what each call
returns, and every wrong use in it (marked ``# type: ignore[...]``) must be an error, since an
ignore that suppresses nothing is one under --strict. One mypy run: it is slow."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "typing_cases"


def test_user_code_type_checks_strictly() -> None:
    source = CASES / "user_code.py"
    text = source.read_text()
    # the wrong uses are still there, so this test can fail: passing the explained Window as
    # messages, reading a completion's field on a stream and a chunk's on a completion
    wrong = re.findall(r"# type: ignore\[([a-z-]+)\]", text)
    assert wrong.count("call-overload") >= 3 and wrong.count("attr-defined") >= 2
    assert "assert_type(messages, Messages)" in text

    stdout, stderr, status = api.run(
        [
            "--strict",
            "--warn-unused-ignores",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-error-summary",
            "--hide-error-context",
            str(source),
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 0 and not errors, "\n".join(errors) or stderr
