"""Alembic migrations for chatledger's tables (run them with ``chatledger db upgrade``)."""
