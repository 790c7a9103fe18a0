"""Storage: the SQL schema and the statements over it (the only package that speaks SQL)."""

from chatledger.store.schema import SCHEMA_VERSION, metadata

__all__ = ["SCHEMA_VERSION", "metadata"]
