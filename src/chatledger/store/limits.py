"""Server limits checked before writing: a value the server cannot take fails with a typed,
non-retryable error that says why, instead of a dropped connection ("server has gone away")
that reads as retryable and never succeeds.

The one limit that depends on the server is MySQL/MariaDB's ``max_allowed_packet``: a
statement larger than it is refused by closing the connection. It is read once per engine
(per connection pool). PostgreSQL and SQLite take values up to 1 GB, beyond any message.
"""

from __future__ import annotations

from collections.abc import Sequence
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, text
from sqlalchemy.pool import Pool

from chatledger.encryption import Codec
from chatledger.errors import InvalidArgumentError, InvalidMessageError, Problem
from chatledger.rows import Prepared
from chatledger.store.mapping import codec_of

__all__ = ["check_messages", "check_value", "fits", "packet_limit", "stored_size"]

_PACKETS: WeakKeyDictionary[Pool, int] = WeakKeyDictionary()
# what a statement carries besides the large values: column names, other values, framing
_STATEMENT = 4096
_ROW = 256
# the MySQL drivers' multi-row INSERT stops adding rows past this many bytes (max_stmt_length)
_MULTI_ROW = 1_024_000
# characters the MySQL drivers escape with a backslash: one more byte each
_ESCAPED = ("\\", "'", '"', "\n", "\r", "\x00", "\x1a")


def packet_limit(conn: Connection) -> int | None:
    """The server's ``max_allowed_packet`` (MySQL/MariaDB), read once per engine; None
    elsewhere."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return None
    pool = conn.engine.pool
    limit = _PACKETS.get(pool)
    if limit is None:
        limit = _PACKETS[pool] = int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())
    return limit


def stored_size(value: str, codec: Codec) -> int:
    """Bytes ``value`` takes in a statement: UTF-8 plus one per escaped character, or the
    length of its Fernet token (base64 of 57 bytes of framing and the AES-padded payload)."""
    n = len(value.encode("utf-8"))
    if codec.encrypted:
        return 64 + 4 * ((57 + (n // 16 + 1) * 16 + 2) // 3)
    return n + sum(value.count(ch) for ch in _ESCAPED)


def _size(values: Sequence[str | None], codec: Codec, limit: int) -> int:
    chars = sum(len(v) for v in values if v is not None)
    if chars * 8 + _STATEMENT < limit:  # the most UTF-8 and escaping can make of it
        return chars
    return sum(stored_size(v, codec) for v in values if v is not None)


def fits(conn: Connection, *values: str | None) -> bool:
    """Whether one row holding ``values`` fits in a statement the server accepts."""
    limit = packet_limit(conn)
    return limit is None or _size(values, codec_of(conn), limit) + _STATEMENT <= limit


def _refused(size: int, limit: int) -> str:
    return (
        f"is {size} bytes as stored, over the database server's max_allowed_packet of {limit} "
        "(a MySQL/MariaDB setting; raise it, or lower max_message_bytes)"
    )


def check_messages(conn: Connection, batch: Sequence[Prepared]) -> None:
    """Refuse (InvalidMessageError, nothing written) messages the server would not take."""
    limit = packet_limit(conn)
    if limit is None:
        return
    codec = codec_of(conn)
    sizes = [_size((p.data, p.meta), codec, limit) + _ROW for p in batch]
    problems = [
        Problem(i, "", _refused(size, limit))
        for i, size in enumerate(sizes)
        if size + _STATEMENT > limit
    ]
    total = sum(sizes)
    if not problems and total + _STATEMENT > limit and limit <= _MULTI_ROW + _STATEMENT:
        problems.append(Problem(None, "", f"the batch {_refused(total, limit)}"))
    if problems:
        raise InvalidMessageError(problems)


def check_value(conn: Connection, field: str, value: str | None) -> None:
    """Refuse (InvalidArgumentError) a value, such as metadata, the server would not take."""
    limit = packet_limit(conn)
    if limit is not None and value is not None and not fits(conn, value):
        raise InvalidArgumentError(field, _refused(stored_size(value, codec_of(conn)), limit))
