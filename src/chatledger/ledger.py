"""The entry point: a ledger is a database of conversations.

``Ledger`` (sync) and ``AsyncLedger`` are thin shells over the same operations
(:mod:`chatledger.operations`), each with its own driver. A ledger owns its
engine when built from a URL and shares the caller's when given one; either way it keeps no
state beyond its settings, so one ledger serves every request and worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from chatledger import operations as op
from chatledger.append_plan import utcnow
from chatledger.budgets import Budget
from chatledger.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RESERVATION_TTL,
    LedgerConfig,
    check_id,
)
from chatledger.conversation import AsyncConversation, Conversation, Meta
from chatledger.drift import Drift
from chatledger.drivers import AsyncDriver, SyncDriver
from chatledger.encryption import PLAIN, Codec, RotationReport
from chatledger.errors import InvalidArgumentError
from chatledger.handle import Handle
from chatledger.pricing import PriceTable
from chatledger.rows import ConversationInfo, UsageTotals
from chatledger.store.engine import DEFAULT_URL, make_async_engine, make_sync_engine
from chatledger.telemetry import Telemetry

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


def _check_telemetry(telemetry: Telemetry | None) -> Telemetry:
    if telemetry is None:
        return Telemetry()
    if not isinstance(telemetry, Telemetry):
        raise InvalidArgumentError("telemetry", "must be a chatledger.telemetry.Telemetry")
    return telemetry


def _check_age(older_than: timedelta) -> datetime:
    if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
        raise InvalidArgumentError("older_than", "must be a positive timedelta")
    return utcnow() - older_than


def _check_page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
        raise InvalidArgumentError("limit", "must be an integer from 1 to 10000")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgumentError("offset", "must be a non-negative integer")


E = TypeVar("E", Engine, AsyncEngine)


class _Shell(Generic[E]):
    """What both twins share: construction from settings, and what needs no I/O.

    ``url`` is a SQLAlchemy URL (``sqlite:///chat.db``, ``postgresql://...``,
    ``mysql://...``) or an engine you already have (an ``Engine`` for :class:`Ledger`, an
    ``AsyncEngine`` for :class:`AsyncLedger`). ``create_tables`` creates the schema if it is
    missing; with it off, a database without the schema is an error, as in production where
    migrations own the schema. ``reservation_ttl``: how long a budgeted request's
    reservation holds when its reply is never recorded (a crashed worker); keep it above the
    client's timeout with retries. ``telemetry``: what the ledger reports to OpenTelemetry's
    global providers when ``opentelemetry-api`` is installed (``docs/telemetry.md``); by
    default spans and metrics without owners. Other keyword arguments go to the engine a URL
    makes.
    """

    _engine_type: ClassVar[type]
    _make_engine: ClassVar[Callable[..., Any]]
    _driver_type: ClassVar[type]

    def __init_subclass__(cls, engine: type, make: Callable[..., Any], driver: type) -> None:
        cls._engine_type, cls._make_engine, cls._driver_type = engine, staticmethod(make), driver

    def __init__(
        self,
        url: str | URL | E = DEFAULT_URL,
        *,
        create_tables: bool = True,
        default_model: str = DEFAULT_MODEL,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prices: PriceTable | None = None,
        budgets: Sequence[Budget] = (),
        encryption: Codec | None = None,
        lock_timeout: float = 30.0,
        reservation_ttl: timedelta = DEFAULT_RESERVATION_TTL,
        telemetry: Telemetry | None = None,
        **engine_options: Any,
    ) -> None:
        self._config = LedgerConfig(
            default_model,
            max_message_bytes,
            prices if prices is not None else PriceTable.default(),
            tuple(budgets),
            reservation_ttl,
        )
        self._config.check_model(default_model)
        codec = _check_codec(encryption)
        if isinstance(url, (Engine, AsyncEngine)) and not isinstance(url, self._engine_type):
            wanted = "an Engine" if self._engine_type is Engine else "an AsyncEngine"
            raise InvalidArgumentError(
                "url", f"{type(self).__name__} takes {wanted} or a URL, got {type(url).__name__}"
            )
        self._owns_engine = not isinstance(url, self._engine_type)
        make = type(self)._make_engine
        made = make(url, lock_timeout=lock_timeout, **engine_options) if self._owns_engine else url
        base = cast(E, made)  # an engine of this twin's kind: given, or made from the URL
        self._base_engine: E = base
        # the codec travels with every connection of this ledger, to the statements that
        # read and write content (and to no other ledger sharing the same pool)
        self._driver = self._driver_type(
            base.execution_options(chatledger_codec=codec),
            create_tables,
            _check_telemetry(telemetry),
        )

    @property
    def engine(self) -> E:
        """The ledger's engine (the schema is checked, or created, by the first call)."""
        engine: E = self._driver.engine
        return engine

    @property
    def prices(self) -> PriceTable:
        """The price table costs are computed with."""
        return self._config.prices

    def __repr__(self) -> str:
        url = self._base_engine.url.render_as_string(hide_password=True)
        return f"<{type(self).__name__} {url}>"


# fmt: off
class Ledger(_Shell[Engine], engine=Engine, make=make_sync_engine, driver=SyncDriver):
    """Durable conversations in any SQLAlchemy database, used from synchronous code.

    ``url`` is a SQLAlchemy URL (``sqlite:///chat.db``, ``postgresql://...``,
    ``mysql://...``) or an ``Engine`` you already have. ``create_tables`` creates the schema if
    it is missing; with it off, a database without the schema is an error, as in production
    where migrations own the schema.
    """

    _driver: SyncDriver


    def _open(self, loaded: Any) -> Conversation:
        return Conversation(self._driver, Handle(self._config, loaded))

    def conversation(self, id: str | None = None, *, owner: str | None = None,
            model: str | None = None, system: str | None = None, title: str | None = None,
            metadata: Meta = None) -> Conversation:
        """Get the conversation ``id``, or create it if it does not exist.

        The other arguments describe a new conversation (its first message is ``system``); an
        existing one is returned as stored, like ``dict.setdefault``, and a ``model`` or
        ``system`` that differs from what is stored is logged as a warning (logger
        ``"chatledger"``). Use :meth:`Conversation.update` to change one. A conversation is
        ``(owner, id)``: owners each have their own ``"default"``, and ``owner=None`` is the
        conversation with no owner.
        """
        how = op.Opening(model, system, title, metadata)
        return self._open(self._driver.run(op.get_or_create(self._config, id, owner, how)))

    def create(self, id: str | None = None, *, owner: str | None = None, model: str | None = None,
            system: str | None = None, title: str | None = None, metadata: Meta = None
            ) -> Conversation:
        """Create a conversation (a generated id if none is given); the id must be new."""
        how = op.Opening(model, system, title, metadata)
        return self._open(self._driver.run(op.create(self._config, id, owner, how)))

    def get(self, id: str, *, owner: str | None = None) -> Conversation:
        """The conversation ``(owner, id)`` (``owner=None``: the one with no owner);
        :class:`ConversationNotFoundError` if there is none, whoever else holds that id."""
        return self._open(self._driver.run(op.get(id, owner)))

    def conversations(self, *, owner: str | None = None, limit: int = 100, offset: int = 0
            ) -> list[ConversationInfo]:
        """Conversations, most recently updated first; only ``owner``'s when given."""
        _check_owner(owner)
        _check_page(limit, offset)
        return self._driver.run(op.list_conversations(owner, limit, offset))

    def delete(self, id: str, *, owner: str | None = None) -> None:
        """Delete the conversation ``(owner, id)`` with its messages and summaries; its usage
        rows stay, counted for the owner (only :meth:`delete_owner` removes them)."""
        self._driver.run(op.delete_by_id(id, owner))

    def delete_owner(self, owner: str) -> int:
        """Delete every conversation of ``owner``, with its usage rows; returns how many.

        It works in short transactions of whole conversations (no lock held long on a large
        owner): interrupted, it leaves whole conversations deleted or kept, and calling it
        again finishes."""
        return self._driver.run(op.delete_owner(owner))

    def delete_idle(self, older_than: timedelta, *, owner: str | None = None) -> int:
        """Delete conversations with no activity for ``older_than`` (a retention policy);
        returns how many. Usage rows stay. Like :meth:`delete_owner`, in short transactions
        of whole conversations: interrupted, calling it again finishes."""
        _check_owner(owner)
        return self._driver.run(op.delete_idle(_check_age(older_than), owner))

    def rotate_encryption(self, *, batch: int = 500, vacuum: bool = False) -> RotationReport:
        """Re-encrypt every stored value with the newest key (and encrypt values written
        before encryption was on), row by row, safe beside live writes; a re-run continues.
        ``vacuum=True`` then rewrites the tables (PostgreSQL: ``VACUUM FULL``) so that old
        ciphertext leaves the files. Returns counts per table and the rows that failed."""
        return self._driver.run(op.rotate_encryption(batch, vacuum))

    def usage(self, *, owner: str | None = None, since: datetime | None = None,
            until: datetime | None = None) -> UsageTotals:
        """Usage and cost summed over ``owner``'s conversations (or all), ``since <= t < until``."""
        _check_owner(owner)
        return self._driver.run(op.ledger_usage(owner, since, until))

    def token_drift(self, *, since: datetime | None = None) -> list[Drift]:
        """How the counts made before sending compared with the prompt tokens billed, per model
        and per feature (tools, images, history calls, ...): the API changes its rules
        without notice, and this is where a deployment sees it first."""
        return self._driver.run(op.token_drift(since))

    def close(self) -> None:
        """Release the connections of an engine the ledger created (not of one passed in)."""
        if self._owns_engine:
            self._base_engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
            tb: TracebackType | None) -> None:
        self.close()



class AsyncLedger(
    _Shell[AsyncEngine], engine=AsyncEngine, make=make_async_engine, driver=AsyncDriver
):
    """The asyncio twin of :class:`Ledger` (aiosqlite, asyncpg or psycopg, aiomysql or asyncmy).

    A bare URL gets an async driver: ``sqlite:///chat.db`` runs on aiosqlite,
    ``postgresql://`` on asyncpg, ``mysql://`` on aiomysql.
    """

    _driver: AsyncDriver


    def _open(self, loaded: Any) -> AsyncConversation:
        return AsyncConversation(self._driver, Handle(self._config, loaded))

    async def conversation(self, id: str | None = None, *, owner: str | None = None,
            model: str | None = None, system: str | None = None, title: str | None = None,
            metadata: Meta = None) -> AsyncConversation:
        """Async :meth:`Ledger.conversation`."""
        how = op.Opening(model, system, title, metadata)
        return self._open(await self._driver.run(op.get_or_create(self._config, id, owner, how)))

    async def create(self, id: str | None = None, *, owner: str | None = None,
            model: str | None = None, system: str | None = None, title: str | None = None,
            metadata: Meta = None) -> AsyncConversation:
        """Async :meth:`Ledger.create`."""
        how = op.Opening(model, system, title, metadata)
        return self._open(await self._driver.run(op.create(self._config, id, owner, how)))

    async def get(self, id: str, *, owner: str | None = None) -> AsyncConversation:
        """Async :meth:`Ledger.get`."""
        return self._open(await self._driver.run(op.get(id, owner)))

    async def conversations(self, *, owner: str | None = None, limit: int = 100, offset: int = 0
            ) -> list[ConversationInfo]:
        """Async :meth:`Ledger.conversations`."""
        _check_owner(owner)
        _check_page(limit, offset)
        return await self._driver.run(op.list_conversations(owner, limit, offset))

    async def delete(self, id: str, *, owner: str | None = None) -> None:
        """Async :meth:`Ledger.delete`."""
        await self._driver.run(op.delete_by_id(id, owner))

    async def delete_owner(self, owner: str) -> int:
        """Async :meth:`Ledger.delete_owner`."""
        return await self._driver.run(op.delete_owner(owner))

    async def delete_idle(self, older_than: timedelta, *, owner: str | None = None) -> int:
        """Async :meth:`Ledger.delete_idle`."""
        _check_owner(owner)
        return await self._driver.run(op.delete_idle(_check_age(older_than), owner))

    async def rotate_encryption(self, *, batch: int = 500, vacuum: bool = False
            ) -> RotationReport:
        """Async :meth:`Ledger.rotate_encryption`."""
        return await self._driver.run(op.rotate_encryption(batch, vacuum))

    async def usage(self, *, owner: str | None = None, since: datetime | None = None,
            until: datetime | None = None) -> UsageTotals:
        """Async :meth:`Ledger.usage`."""
        _check_owner(owner)
        return await self._driver.run(op.ledger_usage(owner, since, until))

    async def token_drift(self, *, since: datetime | None = None) -> list[Drift]:
        """Async :meth:`Ledger.token_drift`."""
        return await self._driver.run(op.token_drift(since))

    async def close(self) -> None:
        """Release the connections of an engine the ledger created (not of one passed in)."""
        if self._owns_engine:
            await self._base_engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
            tb: TracebackType | None) -> None:
        await self.close()

# fmt: on
