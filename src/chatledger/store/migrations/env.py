"""Alembic environment: chatledger's tables only, in their own version table."""

from __future__ import annotations

from alembic import context

from chatledger.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - chatledger.migrate always passes a connection
    raise RuntimeError("run chatledger migrations through chatledger.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="chatledger_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=lambda name, type_, parent: (
        type_ != "table" or str(name).startswith("chatledger_")
    ),
)
with context.begin_transaction():
    context.run_migrations()
