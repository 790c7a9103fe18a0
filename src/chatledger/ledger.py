"""The entry point: a ledger is a database of conversations.

``Ledger`` (sync) and ``AsyncLedger`` are twins over the same statements. A ledger owns its
engine when built from a URL and shares the caller's when given one; either way it keeps no
state beyond its settings, so one ledger serves every request and worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy import URL, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger._core import DEFAULT_MAX_MESSAGE_BYTES, LedgerConfig, check_id
from chatledger.budgets import Budget
from chatledger.conversation import AsyncConversation, Conversation, db_errors
from chatledger.encryption import PLAIN, Codec
from chatledger.errors import ConversationExistsError, InvalidArgumentError
from chatledger.pricing import PriceTable
from chatledger.records import ConversationInfo, UsageTotals
from chatledger.store import ops
from chatledger.store.engine import DEFAULT_URL, make_async_engine, make_sync_engine

__all__ = ["AsyncLedger", "Ledger"]

DEFAULT_MODEL = "gpt-4o"


def _check_owner(owner: str | None) -> None:
    if owner is not None:
        check_id(owner, "owner")


def _check_codec(encryption: Codec | None) -> Codec:
    if encryption is None:
        return PLAIN
    if not isinstance(encryption, Codec):
        raise InvalidArgumentError("encryption", "must be a chatledger.Encryption")
    return encryption


def _check_age(older_than: timedelta) -> datetime:
    if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
        raise InvalidArgumentError("older_than", "must be a positive timedelta")
    return ops.utcnow() - older_than


def _check_page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidArgumentError("limit", "must be an integer from 1 to 10000")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgumentError("offset", "must be a non-negative integer")


def _opening(system: str | None) -> list[object]:
    if system is None:
        return []
    return [{"role": "system", "content": system}]


class Ledger:
    """Durable conversations in any SQLAlchemy database, used from synchronous code.

    ``url`` is a SQLAlchemy URL (``sqlite:///chat.db``, ``postgresql://...``,
    ``mysql://...``) or an ``Engine`` you already have. ``create_tables`` creates the schema if
    it is missing; with it off, a database without the schema is an error, as in production
    where migrations own the schema.
    """

    def __init__(
        self,
        url: str | URL | Engine = DEFAULT_URL,
        *,
        create_tables: bool = True,
        default_model: str = DEFAULT_MODEL,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prices: PriceTable | None = None,
        budgets: Sequence[Budget] = (),
        encryption: Codec | None = None,
        lock_timeout: float = 30.0,
        **engine_options: Any,
    ) -> None:
        self._config = LedgerConfig(
            default_model,
            max_message_bytes,
            prices if prices is not None else PriceTable.default(),
            tuple(budgets),
        )
        self._config.check_model(default_model)
        codec = _check_codec(encryption)
        if isinstance(url, Engine):
            base, self._owns_engine = url, False
        else:
            base = make_sync_engine(url, lock_timeout=lock_timeout, **engine_options)
            self._owns_engine = True
        self._base_engine = base
        # the codec travels with every connection of this ledger, to the statements that
        # read and write content (and to no other ledger sharing the same pool)
        self._engine = base.execution_options(chatledger_codec=codec)
        self._create = create_tables
        self._ready = False
        self._ready_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        self._ensure_schema()
        return self._engine

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with db_errors(), self._engine.begin() as conn:
                ops.ensure_schema(conn, create=self._create)
            self._ready = True

    # conversations ------------------------------------------------------------------------

    def conversation(
        self,
        id: str | None = None,
        *,
        owner: str | None = None,
        model: str | None = None,
        system: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation:
        """Get the conversation ``id``, or create it if it does not exist.

        The other arguments describe a new conversation (its first message is ``system``); an
        existing one is returned as stored, like ``dict.setdefault``. Use
        :meth:`Conversation.update` to change one. Given an ``owner``, a conversation of
        another owner is not found.
        """
        if id is not None:
            check_id(id, "id")
            _check_owner(owner)
            try:
                return self.get(id, owner=owner)
            except LookupError:
                pass
        try:
            return self.create(
                id, owner=owner, model=model, system=system, title=title, metadata=metadata
            )
        except ConversationExistsError:
            # created by another worker since we looked
            return self.get(id or "", owner=owner)

    def create(
        self,
        id: str | None = None,
        *,
        owner: str | None = None,
        model: str | None = None,
        system: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation:
        """Create a conversation (a generated id if none is given); the id must be new."""
        new = self._config.new_conversation(id, owner, model, title, metadata)
        counter = self._config.counter(new.model)
        first, _ = self._config.prepare(_opening(system), counter)
        try:
            with db_errors(), self.engine.begin() as conn:
                loaded = ops.create_conversation(conn, new, first)
        except sa_exc.IntegrityError:
            raise ConversationExistsError(new.id) from None
        return Conversation(self, loaded)

    def get(self, id: str, *, owner: str | None = None) -> Conversation:
        """The conversation ``id``; :class:`ConversationNotFoundError` if it does not exist or
        belongs to another owner."""
        check_id(id, "id")
        _check_owner(owner)
        with db_errors(), self.engine.connect() as conn:
            loaded = ops.find_conversation(conn, id, owner)
        return Conversation(self, loaded)

    def conversations(
        self, *, owner: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ConversationInfo]:
        """Conversations, most recently updated first; only ``owner``'s when given."""
        _check_owner(owner)
        _check_page(limit, offset)
        with db_errors(), self.engine.connect() as conn:
            return ops.list_conversations(conn, owner, limit, offset)

    def delete(self, id: str, *, owner: str | None = None) -> None:
        """Delete a conversation and everything stored for it."""
        check_id(id, "id")
        _check_owner(owner)
        with db_errors(), self.engine.begin() as conn:
            ops.delete_conversation(conn, id, owner)

    def delete_owner(self, owner: str) -> int:
        """Delete every conversation of ``owner``; returns how many there were."""
        check_id(owner, "owner")
        with db_errors(), self.engine.begin() as conn:
            return ops.delete_owner(conn, owner)

    def delete_idle(self, older_than: timedelta, *, owner: str | None = None) -> int:
        """Delete conversations with no activity for ``older_than`` (a retention policy);
        returns how many."""
        _check_owner(owner)
        cutoff = _check_age(older_than)
        with db_errors(), self.engine.begin() as conn:
            return ops.delete_idle(conn, cutoff, owner)

    def rotate_encryption(self, *, batch: int = 500) -> int:
        """Re-encrypt every stored value with the newest key (and encrypt values written
        before encryption was on); returns how many values were rewritten."""
        done = 0
        for table in ops.ENCRYPTED_TABLES:
            after = None
            while True:
                with db_errors(), self.engine.begin() as conn:
                    n, after = ops.rotate_batch(conn, table, after, batch)
                done += n
                if n < batch:
                    break
        return done

    @property
    def prices(self) -> PriceTable:
        """The price table costs are computed with."""
        return self._config.prices

    def usage(
        self,
        *,
        owner: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageTotals:
        """Usage and cost summed over ``owner``'s conversations (or all), ``since <= t < until``."""
        _check_owner(owner)
        with db_errors(), self.engine.connect() as conn:
            return ops.usage_totals(conn, None, owner, since, until)

    # lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections of an engine the ledger created (not of one passed in)."""
        if self._owns_engine:
            self._base_engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self._engine.url.render_as_string(hide_password=True)}>"


class AsyncLedger:
    """The asyncio twin of :class:`Ledger` (aiosqlite, asyncpg or psycopg, aiomysql or asyncmy).

    A bare URL gets an async driver: ``sqlite:///chat.db`` runs on aiosqlite,
    ``postgresql://`` on asyncpg, ``mysql://`` on aiomysql.
    """

    def __init__(
        self,
        url: str | URL | AsyncEngine = DEFAULT_URL,
        *,
        create_tables: bool = True,
        default_model: str = DEFAULT_MODEL,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prices: PriceTable | None = None,
        budgets: Sequence[Budget] = (),
        encryption: Codec | None = None,
        lock_timeout: float = 30.0,
        **engine_options: Any,
    ) -> None:
        self._config = LedgerConfig(
            default_model,
            max_message_bytes,
            prices if prices is not None else PriceTable.default(),
            tuple(budgets),
        )
        self._config.check_model(default_model)
        codec = _check_codec(encryption)
        if isinstance(url, AsyncEngine):
            base, self._owns_engine = url, False
        else:
            base = make_async_engine(url, lock_timeout=lock_timeout, **engine_options)
            self._owns_engine = True
        self._base_engine = base
        # the codec travels with every connection of this ledger, to the statements that
        # read and write content (and to no other ledger sharing the same pool)
        self._engine = base.execution_options(chatledger_codec=codec)
        self._create = create_tables
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def _ensure_schema(self) -> None:
        if self._ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._ready:
                return
            with db_errors():
                async with self._engine.begin() as conn:
                    await conn.run_sync(ops.ensure_schema, create=self._create)
            self._ready = True

    async def conversation(
        self,
        id: str | None = None,
        *,
        owner: str | None = None,
        model: str | None = None,
        system: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncConversation:
        """Get the conversation ``id``, or create it if it does not exist (see
        :meth:`Ledger.conversation`)."""
        if id is not None:
            check_id(id, "id")
            _check_owner(owner)
            try:
                return await self.get(id, owner=owner)
            except LookupError:
                pass
        try:
            return await self.create(
                id, owner=owner, model=model, system=system, title=title, metadata=metadata
            )
        except ConversationExistsError:
            return await self.get(id or "", owner=owner)

    async def create(
        self,
        id: str | None = None,
        *,
        owner: str | None = None,
        model: str | None = None,
        system: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncConversation:
        """Create a conversation (a generated id if none is given); the id must be new."""
        new = self._config.new_conversation(id, owner, model, title, metadata)
        counter = self._config.counter(new.model)
        first, _ = self._config.prepare(_opening(system), counter)
        await self._ensure_schema()
        try:
            with db_errors():
                async with self._engine.begin() as conn:
                    loaded = await conn.run_sync(ops.create_conversation, new, first)
        except sa_exc.IntegrityError:
            raise ConversationExistsError(new.id) from None
        return AsyncConversation(self, loaded)

    async def get(self, id: str, *, owner: str | None = None) -> AsyncConversation:
        """The conversation ``id``; :class:`ConversationNotFoundError` if it does not exist or
        belongs to another owner."""
        check_id(id, "id")
        _check_owner(owner)
        await self._ensure_schema()
        with db_errors():
            async with self._engine.connect() as conn:
                loaded = await conn.run_sync(ops.find_conversation, id, owner)
        return AsyncConversation(self, loaded)

    async def conversations(
        self, *, owner: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ConversationInfo]:
        """Conversations, most recently updated first; only ``owner``'s when given."""
        _check_owner(owner)
        _check_page(limit, offset)
        await self._ensure_schema()
        with db_errors():
            async with self._engine.connect() as conn:
                return await conn.run_sync(ops.list_conversations, owner, limit, offset)

    async def delete(self, id: str, *, owner: str | None = None) -> None:
        """Delete a conversation and everything stored for it."""
        check_id(id, "id")
        _check_owner(owner)
        await self._ensure_schema()
        with db_errors():
            async with self._engine.begin() as conn:
                await conn.run_sync(ops.delete_conversation, id, owner)

    async def delete_owner(self, owner: str) -> int:
        """Delete every conversation of ``owner``; returns how many there were."""
        check_id(owner, "owner")
        await self._ensure_schema()
        with db_errors():
            async with self._engine.begin() as conn:
                return await conn.run_sync(ops.delete_owner, owner)

    async def delete_idle(self, older_than: timedelta, *, owner: str | None = None) -> int:
        """Delete conversations with no activity for ``older_than``; returns how many."""
        _check_owner(owner)
        cutoff = _check_age(older_than)
        await self._ensure_schema()
        with db_errors():
            async with self._engine.begin() as conn:
                return await conn.run_sync(ops.delete_idle, cutoff, owner)

    async def rotate_encryption(self, *, batch: int = 500) -> int:
        """Re-encrypt every stored value with the newest key; returns how many."""
        await self._ensure_schema()
        done = 0
        for table in ops.ENCRYPTED_TABLES:
            after = None
            while True:
                with db_errors():
                    async with self._engine.begin() as conn:
                        n, after = await conn.run_sync(ops.rotate_batch, table, after, batch)
                done += n
                if n < batch:
                    break
        return done

    @property
    def prices(self) -> PriceTable:
        """The price table costs are computed with."""
        return self._config.prices

    async def usage(
        self,
        *,
        owner: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageTotals:
        """Usage and cost summed over ``owner``'s conversations (or all), ``since <= t < until``."""
        _check_owner(owner)
        await self._ensure_schema()
        with db_errors():
            async with self._engine.connect() as conn:
                return await conn.run_sync(ops.usage_totals, None, owner, since, until)

    async def close(self) -> None:
        """Release the connections of an engine the ledger created (not of one passed in)."""
        if self._owns_engine:
            await self._base_engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncLedger {self._engine.url.render_as_string(hide_password=True)}>"
