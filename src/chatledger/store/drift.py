"""The usage rows that carry a pre-send count, for the drift report."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, select

from chatledger.store.mapping import codec_of
from chatledger.store.schema import completions

__all__ = ["drift_rows"]

_u = completions.c


def drift_rows(conn: Connection, since: datetime | None) -> list[tuple[str, int, int, list[str]]]:
    """``(model, counted, billed, features)`` for every recorded response with a count."""
    q = select(_u.model, _u.prompt_tokens, _u.meta).where(_u.meta.is_not(None))
    if since is not None:
        q = q.where(_u.created_at >= since)
    codec = codec_of(conn)
    out = []
    for model, billed, meta in conn.execute(q):
        data = json.loads(codec.decode(meta))
        if isinstance(data, dict) and isinstance(data.get("counted"), int):
            out.append((model, data["counted"], billed, list(data.get("features", []))))
    return out
