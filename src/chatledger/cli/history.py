"""Editing a conversation's history: ``pop``, ``rewind``, ``truncate``, ``fork``, ``edit``.
Each prints what it removed or made; removing nothing is said, and is not a failure."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from chatledger.cli.common import open_ledger
from chatledger.cli.inspection import conversation_json
from chatledger.cli.output import emit_json, note, say
from chatledger.rows import StoredMessage

__all__ = ["cmd_edit", "cmd_fork", "cmd_pop", "cmd_rewind", "cmd_truncate"]


def _removed(args: argparse.Namespace, removed: Sequence[StoredMessage | None]) -> int:
    gone = [r for r in removed if r is not None]
    if args.json:
        emit_json(
            {
                "id": args.id,
                "removed": [{"seq": r.seq, "role": r.role, "message": r.message} for r in gone],
            }
        )
    for r in [] if args.json else gone:
        say(f"removed seq {r.seq} ({r.role})")
    if not gone:
        note(f"chatledger: nothing to remove from {args.id}")
    return 0


def cmd_pop(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        removed = conv.rewind(args.rounds) if args.rounds else [conv.pop()]
    return _removed(args, removed)


def cmd_rewind(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        removed = ledger.get(args.id, owner=args.owner).rewind(args.rounds)
    return _removed(args, removed)


def cmd_truncate(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        removed = ledger.get(args.id, owner=args.owner).truncate(args.seq)
    return _removed(args, removed)


def cmd_fork(args: argparse.Namespace) -> int:
    with open_ledger(args) as ledger:
        child = ledger.get(args.id, owner=args.owner).fork(args.new_id, at_seq=args.at)
        info = child.info
    if args.json:
        emit_json(conversation_json(info))
    else:
        say(
            f"forked {args.id} at seq {info.forked_at} into {info.id} "
            f"({info.message_count} messages)"
        )
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {"role": args.role, "content": args.text}
    with open_ledger(args) as ledger:
        conv = ledger.get(args.id, owner=args.owner)
        before = conv.info.last_seq
        edited = conv.edit(args.seq, message, branch=args.branch)
        info = edited.info
    if args.json:
        emit_json({**conversation_json(info), "seq": args.seq, "message": message})
        return 0
    dropped = max(0, before - args.seq)
    where = f"a fork {info.id} of {args.id}" if args.branch else args.id
    say(f"replaced seq {args.seq} of {where} ({dropped} later messages dropped)")
    return 0
