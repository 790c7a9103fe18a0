"""What every command shares: the database it opens, and the owner it acts for."""

from __future__ import annotations

import argparse
import os

from chatledger.ledger import Ledger

__all__ = ["DEFAULT_DB", "db_url", "open_ledger"]

DEFAULT_DB = "sqlite:///chatledger.db"


def db_url(args: argparse.Namespace) -> str:
    """--db, else $CHATLEDGER_URL, else a SQLite file in the current directory."""
    return str(getattr(args, "db", None) or os.environ.get("CHATLEDGER_URL") or DEFAULT_DB)


def open_ledger(args: argparse.Namespace) -> Ledger:
    return Ledger(db_url(args))
