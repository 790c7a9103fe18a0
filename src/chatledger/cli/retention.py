"""Deleting: ``rm`` (by id, or everything of an owner) and ``delete-idle`` (retention).
Nothing to delete is said on stderr and exits 0; an id that does not exist is an error."""

from __future__ import annotations

import argparse
from datetime import timedelta

from chatledger.cli.common import open_ledger
from chatledger.cli.output import emit_json, note, say
from chatledger.errors import InvalidArgumentError

__all__ = ["cmd_delete_idle", "cmd_rm"]

EXIT_USAGE = 2


def cmd_rm(args: argparse.Namespace) -> int:
    if args.all_of_owner and args.ids:
        raise InvalidArgumentError("rm", "give ids or --all-of-owner, not both")
    if not args.all_of_owner and not args.ids:
        note("chatledger: nothing to delete: give conversation ids, or --all-of-owner OWNER")
        return EXIT_USAGE
    if args.all_of_owner:
        if not args.yes:
            note("chatledger: this deletes every conversation of the owner: add --yes")
            return EXIT_USAGE
        with open_ledger(args) as ledger:
            n = ledger.delete_owner(args.all_of_owner)
        if args.json:
            emit_json({"owner": args.all_of_owner, "deleted": n})
        elif n:
            say(f"deleted {n} conversations of {args.all_of_owner!r}")
        if not n:
            note(f"chatledger: nothing to delete: {args.all_of_owner!r} has no conversations")
        return 0
    deleted: list[str] = []
    with open_ledger(args) as ledger:
        for cid in args.ids:
            ledger.delete(cid, owner=args.owner)
            deleted.append(cid)
            if not args.json:
                say(f"deleted {cid}")
    if args.json:
        emit_json({"owner": args.owner, "deleted": deleted})
    return 0


def cmd_delete_idle(args: argparse.Namespace) -> int:
    if not args.days > 0:
        raise InvalidArgumentError("--days", "must be more than 0")
    with open_ledger(args) as ledger:
        n = ledger.delete_idle(timedelta(days=args.days), owner=args.owner)
    if args.json:
        emit_json({"owner": args.owner, "older_than_days": args.days, "deleted": n})
    elif n:
        say(f"deleted {n} conversations idle for more than {args.days:g} days")
    if not n:
        note(f"chatledger: nothing to delete: no conversation idle for {args.days:g} days")
    return 0
