"""``chatledger db``: the schema revision a database is at, and upgrades to a newer one."""

from __future__ import annotations

import argparse

from chatledger.cli.common import db_url
from chatledger.cli.output import emit_json, say, working

__all__ = ["cmd_db"]


def cmd_db(args: argparse.Namespace) -> int:
    from chatledger import migrate

    url = db_url(args)
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
