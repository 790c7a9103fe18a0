"""The command line: global options (accepted before or after the command), every command
with its options, and help that shows each default."""

from __future__ import annotations

import argparse
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from chatledger.cli import chat, demo, history, inspection, retention, schema, transfer
from chatledger.cli.common import DEFAULT_DB

__all__ = ["build_parser"]

DESCRIPTION = (
    "Store chat conversations in SQL and see the windows they send. "
    "'chatledger demo' runs offline; every other command works on the database given by "
    f"--db, $CHATLEDGER_URL or {DEFAULT_DB}; an encrypted one needs its keys in "
    "$CHATLEDGER_KEYS (comma-separated, newest first). Errors are one line on stderr with a "
    "non-zero "
    "exit status (1: the command failed, 2: bad usage, 130: interrupted)."
)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default unless it says nothing (None, a flag's False): those options explain
    their default in their help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _package_version() -> str:
    try:
        return version("chatledger")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "unknown"


def _globals(suppress: bool) -> argparse.ArgumentParser:
    """The global options. Subcommands get them with suppressed defaults, so a value given
    before the command is not reset by the subcommand's parser."""
    p = argparse.ArgumentParser(add_help=False)
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--db",
        metavar="URL",
        default=default,
        help=f"SQLAlchemy database URL (default: $CHATLEDGER_URL, else {DEFAULT_DB})",
    )
    p.add_argument(
        "--owner",
        default=default,
        help="the owner whose conversations to act on (default: the conversations with no "
        "owner; for ls, stats, export and delete-idle every owner's; import keeps each line's)",
    )
    return p


def _json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print JSON only: {what}")


def _window_options(p: argparse.ArgumentParser, budget: int) -> None:
    p.add_argument("--budget", type=int, default=budget, help="prompt-token budget")
    p.add_argument("--reserve", type=int, default=512, help="tokens kept for the reply")
    p.add_argument(
        "--rounds", type=int, default=None, help="keep at most this many rounds (default: no cap)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatledger", description=DESCRIPTION, formatter_class=_Help, parents=[_globals(False)]
    )
    parser.add_argument("--version", action="version", version=f"chatledger {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _globals(True)

    def command(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=help, formatter_class=_Help, parents=[shared]
        )
        p.set_defaults(func=func)
        return p

    p = command(
        "demo", "offline: a long conversation with tool calls, windowed turn by turn", demo.cmd_demo
    )
    p.add_argument("--turns", type=int, default=16, help="how many turns to play")
    p.add_argument("--model", default="gpt-4o", help="the model whose tokenizer and prices apply")
    p.add_argument("--budget", type=int, default=1500, help="prompt-token budget")
    p.add_argument("--reserve", type=int, default=200, help="tokens kept for the reply")
    p.add_argument("--id", default="demo-trip", help="the conversation the demo writes (replaced)")
    _json(p, "one JSON object a turn (JSON lines), then one with the totals")

    p = command(
        "chat",
        "a persistent terminal chat (uses OPENAI_API_KEY and OPENAI_BASE_URL)",
        chat.cmd_chat,
    )
    p.add_argument("--id", default="terminal", help="the conversation to continue or start")
    p.add_argument(
        "--model",
        default=None,
        help="the model; changes the stored model of an existing conversation (default: the "
        "stored model, for a new one $CHATLEDGER_MODEL or gpt-4o-mini)",
    )
    p.add_argument(
        "--system",
        default="You are a helpful assistant.",
        help="the system prompt of a new conversation",
    )
    p.add_argument(
        "--summarize", action="store_true", help="fold old rounds into a summary (default: off)"
    )
    p.add_argument(
        "--summary-model", default=None, help="the model that writes summaries (default: --model)"
    )
    _window_options(p, 8000)

    p = command("ls", "list conversations, most recently updated first", inspection.cmd_ls)
    p.add_argument("--limit", type=int, default=100, help="list at most this many (1-10000)")
    p.add_argument("--offset", type=int, default=0, help="skip this many first")
    _json(p, "one object a conversation (JSON lines)")

    p = command(
        "show",
        "print a conversation: messages, tool calls and results, lineage",
        inspection.cmd_show,
    )
    p.add_argument("id", help="the conversation id")
    _json(p, "one document with the conversation and its messages")

    p = command("window", "explain the window a conversation would send", inspection.cmd_window)
    p.add_argument("id", help="the conversation id")
    _window_options(p, 8000)
    _json(p, "one document: the account and the messages to send")

    p = command("stats", "usage, cost and token-count drift", inspection.cmd_stats)
    p.add_argument("--id", default=None, help="only this conversation (default: all)")
    p.add_argument(
        "--days",
        type=int,
        default=None,
        help="only the last N days; 0 is an empty period (default: all time)",
    )
    _json(p, "one document")

    p = command("export", "write conversations as JSON lines", transfer.cmd_export)
    p.add_argument(
        "ids",
        nargs="*",
        help="conversations to export (default: every one, or every one of --owner)",
    )
    p.add_argument(
        "--format",
        choices=["backup", "finetune"],
        default="backup",
        help='backup: everything, to import again; finetune: {"messages": [...]}',
    )
    p.add_argument("-o", "--output", default="-", help="file to write, - for stdout")

    p = command("import", "load conversations from JSON lines", transfer.cmd_import)
    p.add_argument("file", help="a JSON lines file, - for stdin (--owner: import into it)")
    p.add_argument(
        "--format",
        choices=["backup", "finetune"],
        default="backup",
        help="the format the file is in",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="repair what can be repaired instead of refusing the line (default: off)",
    )
    _json(p, "one document: the report (refusals are also listed there)")

    p = command(
        "db",
        "schema and encryption: current, upgrade [REVISION], encrypt (a plaintext database), "
        "rotate-keys (rewrite every value under the newest key); keys come from "
        "$CHATLEDGER_KEYS, comma-separated, newest first",
        schema.cmd_db,
    )
    p.add_argument(
        "action", choices=["current", "upgrade", "encrypt", "rotate-keys"], help="what to do"
    )
    p.add_argument("revision", nargs="?", default="head", help="upgrade: the target revision")
    _json(p, "one document: the revisions, or the rotation report")

    p = command("rm", "delete conversations (their usage records stay)", retention.cmd_rm)
    p.add_argument("ids", nargs="*", help="conversation ids")
    p.add_argument(
        "--all-of-owner",
        metavar="OWNER",
        default=None,
        help="delete every conversation and usage record of OWNER (needs --yes)",
    )
    p.add_argument("--yes", action="store_true", help="confirm --all-of-owner")
    _json(p, "one document with what was deleted")

    p = command(
        "delete-idle", "retention: delete conversations idle for N days", retention.cmd_delete_idle
    )
    p.add_argument(
        "--days",
        type=float,
        required=True,
        help="delete conversations with no activity for this many days (> 0)",
    )
    _json(p, "one document with how many were deleted")

    p = command(
        "pop", "remove the newest message (with --rounds, the newest rounds)", history.cmd_pop
    )
    p.add_argument("id", help="the conversation id")
    p.add_argument("--rounds", type=int, default=0, help="remove the newest N rounds instead")
    _json(p, "one document with the removed messages")

    p = command("rewind", "undo turns: remove the newest rounds", history.cmd_rewind)
    p.add_argument("id", help="the conversation id")
    p.add_argument("--rounds", type=int, default=1, help="how many rounds to remove")
    _json(p, "one document with the removed messages")

    p = command("truncate", "keep seq 1..SEQ and remove the rest", history.cmd_truncate)
    p.add_argument("id", help="the conversation id")
    p.add_argument("seq", type=int, help="the last seq to keep")
    _json(p, "one document with the removed messages")

    p = command("fork", "copy a conversation (up to --at) into a new one", history.cmd_fork)
    p.add_argument("id", help="the conversation id")
    p.add_argument(
        "new_id",
        nargs="?",
        default=None,
        help="the new conversation's id (default: a new random id)",
    )
    p.add_argument("--at", type=int, default=None, help="last seq to copy (default: all)")
    _json(p, "one document describing the new conversation")

    p = command("edit", "replace the message at SEQ and remove what followed it", history.cmd_edit)
    p.add_argument("id", help="the conversation id")
    p.add_argument("seq", type=int, help="the seq to replace")
    p.add_argument("text", help="the new message's content")
    p.add_argument("--role", default="user", help="the new message's role")
    p.add_argument(
        "--branch",
        action="store_true",
        help="edit a fork and keep the original as it is (default: edit in place)",
    )
    _json(p, "one document with the edited conversation's id and the new message")
    return parser


def chat_model_default() -> str:
    return os.environ.get("CHATLEDGER_MODEL", "gpt-4o-mini")
