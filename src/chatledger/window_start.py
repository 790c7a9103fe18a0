"""Where the window a request sends starts, remembered for strategies that hold it still
(:class:`~chatledger.StablePrefix`): written once the request is sure to go out."""

from __future__ import annotations

from chatledger.effects import Op, writing
from chatledger.errors import StorageError
from chatledger.handle import Handle
from chatledger.store import conversations as conv_store
from chatledger.window import Window

__all__ = ["remember"]


def remember(h: Handle, w: Window) -> Op[None]:
    """Store ``w``'s start when its chain holds a start and it moved. Called after every check
    and reservation passed, so a refused request writes nothing; a failure to store this hint
    does not fail the request (the next one re-plans)."""
    start = w.kept.first or h.info.last_seq + 1
    if not w.anchored or start == h.info.window_start:
        return
    pk = h.pk
    try:
        yield from writing(lambda c: conv_store.set_window_start(c, pk, start))
    except StorageError:
        return
    h.remember_window_start(start)
