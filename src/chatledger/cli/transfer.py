"""``export`` and ``import``: conversations as JSON lines, through ``chatledger.backup``.
The data goes to stdout or the file; the account (refusals, repairs, the summary line) goes
to stderr, so ``chatledger export | chatledger import -`` carries data only."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import TextIO

from chatledger.cli.common import open_ledger
from chatledger.cli.output import emit_json, fail, note, progress

__all__ = ["cmd_export", "cmd_import"]


def _partial(path: str) -> str:
    """Where a file export is written until it is complete: a failed export leaves the
    previous file (or none) in place, never half a file."""
    return f"{path}.partial"


def _open_target(path: str) -> TextIO:
    return sys.stdout if path == "-" else open(_partial(path), "w", encoding="utf-8")


def _open_source(path: str) -> TextIO:
    if path == "-":
        # strict UTF-8 whatever the locale says: a bad byte is a one-line error, not mojibake
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8")


def _lines_in(path: str) -> int | None:
    if path == "-" or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def cmd_export(args: argparse.Namespace) -> int:
    from chatledger import backup

    ids = list(args.ids) or None
    try:
        target = _open_target(args.output)
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    done = False
    try:
        with open_ledger(args) as ledger, progress("exporting", len(ids) if ids else None) as tick:
            n = backup.export_jsonl(
                ledger, target, ids=ids, owner=args.owner, format=args.format, progress=tick
            )
        done = True
    finally:
        if target is not sys.stdout:
            target.close()
            if done:
                os.replace(_partial(args.output), args.output)
            else:
                os.unlink(_partial(args.output))
    where = "stdout" if args.output == "-" else args.output
    note(f"exported {n} conversations to {where} ({args.format} format)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from chatledger import backup

    name = "stdin" if args.file == "-" else args.file
    lines = _lines_in(args.file)
    # a backup starts with a header line; progress counts conversations
    total = None if lines is None else max(0, lines - (args.format == "backup"))
    try:
        source = _open_source(args.file)
    except OSError as exc:
        return fail(f"cannot read {name}: {exc.strerror or exc}")
    try:
        with open_ledger(args) as ledger, progress("importing", total) as tick:
            report = backup.import_jsonl(
                ledger,
                source,
                owner=args.owner,
                format=args.format,
                repair=args.repair,
                progress=tick,
            )
    except UnicodeDecodeError as exc:
        return fail(f"{name} is not UTF-8 text: {exc.reason} at byte {exc.start}")
    finally:
        if args.file != "-":
            source.close()
    for r in report.refused:
        who = f" {r.conversation_id}" if r.conversation_id else ""
        note(f"{name}:{r.line}: refused{who}: {r.reason}")
    for fixed in report.repaired:
        note(f"{name}:{fixed.line}: repaired {fixed.conversation_id}: {fixed.change}")
    if args.json:
        emit_json(
            {
                "imported": report.imported,
                "unchanged": report.unchanged,
                "refused": [
                    {"line": r.line, "id": r.conversation_id, "reason": r.reason}
                    for r in report.refused
                ],
                "repaired": [
                    {"line": r.line, "id": r.conversation_id, "change": r.change}
                    for r in report.repaired
                ],
            }
        )
    note(
        f"imported {report.imported} conversations, {report.unchanged} unchanged, "
        f"{len(report.refused)} refused, {len(report.repaired)} repaired"
    )
    return 0 if report.ok else 1
