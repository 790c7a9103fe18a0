"""The ``chatledger`` command: a demo, a terminal chat, and tools to inspect and maintain a
ledger. Every failure is one line on stderr and a non-zero exit status, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from chatledger.errors import ChatLedgerError

__all__ = ["build_parser", "main"]

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from chatledger.cli.parser import build_parser as build

    return build()


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    sys.stderr.write(f"chatledger: {'; '.join(lines) or 'failed'}\n")
    return status


def _quiet_stdout() -> None:
    """After a broken pipe (``chatledger ls | head``) the reader is gone: point stdout at
    /dev/null so that the interpreter's last flush does not complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass


def _described(exc: BaseException) -> str | None:
    """One line for the failures a user can fix (a bad URL, a missing driver), or None."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    if isinstance(exc, ArgumentError):
        return f"bad database URL: {exc}"
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"missing module {exc.name!r}: install the database driver (for example "
            "pip install 'chatledger[postgresql]' or 'chatledger[mysql]')"
        )
    if isinstance(exc, OperationalError):
        return f"database error: {exc.orig or exc}"
    if isinstance(exc, OSError):
        return str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except SystemExit as done:  # argparse: --help, --version, usage errors (already printed)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    except ChatLedgerError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as exc:  # the last resort: one line naming what went wrong
        described = _described(exc)
        if described is not None:
            return _fail(described)
        return _fail(f"unexpected {type(exc).__name__}: {exc}")
