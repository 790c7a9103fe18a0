"""What every command shares: the database it opens, the owner it acts for, and the keys of
an encrypted ledger (from the environment only: arguments show in ``ps`` and shell history)."""

from __future__ import annotations

import argparse
import os

from chatledger.encryption import Encryption
from chatledger.ledger import Ledger

__all__ = ["DEFAULT_DB", "KEYS_VARIABLE", "db_url", "encryption", "open_ledger"]

DEFAULT_DB = "sqlite:///chatledger.db"
KEYS_VARIABLE = "CHATLEDGER_KEYS"
HASH_KEY_VARIABLE = "CHATLEDGER_HASH_KEY"


def db_url(args: argparse.Namespace) -> str:
    """--db, else $CHATLEDGER_URL, else a SQLite file in the current directory."""
    return str(getattr(args, "db", None) or os.environ.get("CHATLEDGER_URL") or DEFAULT_DB)


def encryption() -> Encryption | None:
    """$CHATLEDGER_KEYS (Fernet keys, comma-separated, newest first) and, if the ledger uses
    one, $CHATLEDGER_HASH_KEY; None when no keys are set."""
    keys = [k.strip() for k in os.environ.get(KEYS_VARIABLE, "").split(",") if k.strip()]
    if not keys:
        return None
    return Encryption(keys, hash_key=os.environ.get(HASH_KEY_VARIABLE) or None)


def open_ledger(args: argparse.Namespace) -> Ledger:
    return Ledger(db_url(args), encryption=encryption())
