"""Encryption at rest: message content, summaries, usage details and the identifiers derived
from content (idempotency keys, pending tool calls, response ids), never in plaintext.

``Encryption(keys)`` encrypts with the first key (Fernet: AES-128-CBC with HMAC-SHA256) and
decrypts with any of them, so a key is rotated by putting the new key first and calling
``ledger.rotate_encryption()``. Token counts, seqs and roles stay in the clear: that is what
lets a window be planned without decrypting the history, and they reveal no content.
Encrypted values carry the prefix ``enc1:``; a value without it is plaintext written before
encryption was enabled, still readable, and encrypted by the next rotation.

Values looked up by equality (idempotency keys, through their unique indexes) cannot be
encrypted, since Fernet is randomised: they are stored as a keyed hash (HMAC-SHA256, prefix
``hk1:``). Its key must never change, or a retry would no longer find what it stored, so it
is not the newest key: it is ``hash_key``, by default derived from the oldest key of the list
(the first one configured, when new keys are put first). Retire that key from ``keys`` by
passing it as ``hash_key=``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatledger.errors import ChatLedgerError, InvalidArgumentError, MissingDependencyError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

__all__ = [
    "PLAIN",
    "Codec",
    "DecryptionError",
    "Encryption",
    "EncryptionMismatchError",
    "RotationFailure",
    "RotationReport",
    "TableRotation",
    "is_keyed_hash",
]

PREFIX = "enc1:"
HASH_PREFIX = "hk1:"
_HASH = re.compile(r"hk1:[A-Za-z0-9_-]{43}")
_HASH_LABEL = b"chatledger keyed hash v1"


def is_keyed_hash(value: str) -> bool:
    """Whether ``value`` is a keyed hash as :meth:`Encryption.keyed_hash` writes it."""
    return _HASH.fullmatch(value) is not None


class DecryptionError(ChatLedgerError):
    """Stored data cannot be decrypted: a wrong or missing key, or a damaged value."""


class EncryptionMismatchError(DecryptionError):
    """The ledger's encryption does not match what the database records
    (``chatledger_settings``): a ledger without keys on an encrypted database, or one with keys
    on a plaintext database. Raised before anything is read or written."""


class Codec:
    """No encryption: values are stored as they are (the default)."""

    encrypted = False

    def encode(self, text: str) -> str:
        return text

    def encode_opt(self, text: str | None) -> str | None:
        return None if text is None else self.encode(text)

    def decode(self, text: str) -> str:
        # never decrypts: the database's recorded setting (checked when the ledger starts), not
        # a prefix a user could type, says that stored values are plaintext
        return text

    def decode_opt(self, text: str | None) -> str | None:
        return None if text is None else self.decode(text)

    def keyed_hash(self, value: str) -> str:
        """What an identifier looked up by equality is stored as."""
        return value

    def keyed_hash_opt(self, value: str | None) -> str | None:
        return None if value is None else self.keyed_hash(value)

    def encode_id(self, value: str, limit: int) -> str:
        """An identifier shown back to the caller (a response id), stored in ``limit``
        characters: encrypted when that fits, else its keyed hash."""
        return value

    def encode_id_opt(self, value: str | None, limit: int) -> str | None:
        return None if value is None else self.encode_id(value, limit)

    def rotate(self, text: str) -> str:
        return text

    def rotated(self, text: str) -> str | None:
        """``text`` encrypted with the newest key, or None when it already is."""
        return None

    def rehashed(self, value: str) -> str | None:
        """The keyed hash of an identifier stored before encryption, or None when it is one."""
        return None

    def rotated_id(self, value: str, limit: int) -> str | None:
        """:meth:`rotated` for a value written by :meth:`encode_id`."""
        return None


PLAIN = Codec()


def _plaintext_read() -> None:
    """Flag plaintext found in an encrypted database, with what to do about it."""
    logging.getLogger("chatledger").warning(
        "read an unencrypted value from an encrypted chatledger database (written before "
        "encryption was on, or not by chatledger); run ledger.rotate_encryption() to encrypt "
        "such values"
    )


def _fernet_module() -> Any:
    """``cryptography.fernet``, or the error that says how to install it."""
    try:
        from cryptography import fernet
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "cryptography", "Encryption") from None
    return fernet


def _fernet_key(key: str | bytes, name: str) -> Fernet:
    try:
        fernet: Fernet = _fernet_module().Fernet(key)
        return fernet
    except (ValueError, TypeError):
        raise InvalidArgumentError(name, "must be a 32-byte url-safe base64 Fernet key") from None


class Encryption(Codec):
    """Fernet encryption with rotation: ``Encryption(["new-key", "old-key"])``.

    Keys are 32-byte url-safe base64 strings, as ``Encryption.generate_key()`` makes them.
    ``hash_key`` (same format) keys the hashes of idempotency keys; it defaults to the last
    (oldest) key and must stay the same for the life of the database.
    Needs the ``cryptography`` package (``pip install 'chatledger[encryption]'``); without it,
    :class:`~chatledger.errors.MissingDependencyError` says so.
    """

    encrypted = True
    _plaintext_flagged = False

    def __init__(self, keys: Sequence[str | bytes], *, hash_key: str | bytes | None = None) -> None:
        multi = _fernet_module().MultiFernet
        if isinstance(keys, (str, bytes)) or not keys:
            raise InvalidArgumentError("keys", "must be a non-empty list of keys, newest first")
        fernets = [_fernet_key(key, f"keys[{i}]") for i, key in enumerate(keys)]
        self._newest = fernets[0]
        self._fernet: MultiFernet = multi(fernets)
        secret = keys[-1] if hash_key is None else hash_key
        _fernet_key(secret, "hash_key")
        raw = base64.urlsafe_b64decode(secret)
        self._hash_key = hmac.new(raw, _HASH_LABEL, hashlib.sha256).digest()

    @staticmethod
    def generate_key() -> str:
        key: bytes = _fernet_module().Fernet.generate_key()
        return key.decode("ascii")

    def encode(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decode(self, text: str) -> str:
        if not text.startswith(PREFIX):
            if not self._plaintext_flagged:  # once per Encryption: a line per row would flood
                self._plaintext_flagged = True
                _plaintext_read()  # written before encryption was on, or not by chatledger
            return text
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(text[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise DecryptionError(
                "stored data does not decrypt with any configured key (wrong key, or a damaged "
                "value)"
            ) from None

    def keyed_hash(self, value: str) -> str:
        mac = hmac.new(self._hash_key, value.encode("utf-8"), hashlib.sha256).digest()
        return HASH_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def encode_id(self, value: str, limit: int) -> str:
        encoded = self.encode(value)
        return encoded if len(encoded) <= limit else self.keyed_hash(value)

    def rotate(self, text: str) -> str:
        """The value encrypted with the newest key (plaintext values are encrypted)."""
        if not text.startswith(PREFIX):
            return self.encode(text)
        from cryptography.fernet import InvalidToken

        try:
            token = self._fernet.rotate(text[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            raise DecryptionError(
                "a stored value does not decrypt with any configured key"
            ) from None
        return PREFIX + token.decode("ascii")

    def rotated(self, text: str) -> str | None:
        if text.startswith(PREFIX):
            from cryptography.fernet import InvalidToken

            try:
                self._newest.decrypt(text[len(PREFIX) :].encode("ascii"))
                return None  # already under the newest key: a re-run skips it
            except InvalidToken:
                pass
        return self.rotate(text)

    def rehashed(self, value: str) -> str | None:
        return None if is_keyed_hash(value) else self.keyed_hash(value)

    def rotated_id(self, value: str, limit: int) -> str | None:
        if is_keyed_hash(value):
            return None
        if value.startswith(PREFIX):
            return self.rotated(value)  # the same length: it still fits
        return self.encode_id(value, limit)


@dataclass(slots=True)
class TableRotation:
    """One table's rows: rewritten under the newest key, already under it, or failed."""

    rotated: int = 0
    current: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class RotationFailure:
    """A row :meth:`~chatledger.Ledger.rotate_encryption` could not rotate, left as it was."""

    table: str
    key: tuple[Any, ...]
    reason: str


@dataclass(slots=True)
class RotationReport:
    """What a rotation did, per table; ``failures`` name the rows left as they were (a row
    under an unknown key, say). A re-run rotates only what is not yet under the newest key."""

    tables: dict[str, TableRotation] = field(default_factory=dict)
    failures: list[RotationFailure] = field(default_factory=list)
    vacuumed: bool = False

    @property
    def rotated(self) -> int:
        return sum(t.rotated for t in self.tables.values())

    @property
    def complete(self) -> bool:
        """Every row is now under the newest key."""
        return not self.failures

    def add(
        self, table: str, rotated: int, current: int, failures: Sequence[RotationFailure]
    ) -> None:
        counts = self.tables.setdefault(table, TableRotation())
        counts.rotated += rotated
        counts.current += current
        counts.failed += len(failures)
        self.failures.extend(failures)
