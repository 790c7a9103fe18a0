"""``chatledger db``: the schema revision a database is at, upgrades to a newer one, and the
encryption of stored values (turning it on, rotating to a new key)."""

from __future__ import annotations

import argparse

from chatledger.cli.common import KEYS_VARIABLE, db_url, encryption, open_ledger
from chatledger.cli.output import emit_json, fail, note, say, working
from chatledger.encryption import RotationReport

__all__ = ["cmd_db"]


def _rotation(args: argparse.Namespace, what: str, report: RotationReport) -> int:
    for f in report.failures:
        note(f"chatledger: {f.table} {f.key}: {f.reason}")
    if args.json:
        emit_json(
            {
                "rotated": report.rotated,
                "tables": {
                    name: {"rotated": t.rotated, "current": t.current, "failed": t.failed}
                    for name, t in report.tables.items()
                },
                "failures": [
                    {"table": f.table, "key": list(f.key), "reason": f.reason}
                    for f in report.failures
                ],
            }
        )
    else:
        say(f"{what}: {report.rotated} values rewritten under the newest key")
    if not report.complete:
        note(f"chatledger: {len(report.failures)} rows failed; run the command again to retry")
    return 0 if report.complete else 1


def cmd_db(args: argparse.Namespace) -> int:
    from chatledger import migrate

    url = db_url(args)
    if args.action in ("encrypt", "rotate-keys"):
        codec = encryption()
        if codec is None:
            return fail(f"{args.action} needs the keys in ${KEYS_VARIABLE} (newest first)")
        with working(f"{args.action} on {url}"):
            if args.action == "encrypt":
                report = migrate.encrypt(url, codec)
            else:
                with open_ledger(args) as ledger:
                    report = ledger.rotate_encryption()
        return _rotation(args, args.action, report)
    before = migrate.current(url)
    heads = migrate.heads()
    now = before
    if args.action == "upgrade":
        with working(f"upgrading the chatledger schema of {url}"):
            now = migrate.upgrade(url, args.revision)
    if args.json:
        upgraded = {"before": before} if args.action == "upgrade" else {}
        emit_json({**upgraded, "current": now, "heads": heads})
    elif args.action == "upgrade":
        say(f"chatledger schema: {before or 'none'} -> {now}")
    else:
        say(f"chatledger schema: {before or 'none'} (this version: {', '.join(heads)})")
    return 0
