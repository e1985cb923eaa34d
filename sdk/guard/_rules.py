"""Why a request does not leave: :class:`Block`, raised inside the core with the rule that
stopped the request (one of :data:`veilpix._errors.BlockRule`) and turned into a recorded
:class:`~veilpix.RequestBlocked` by the guard; and :class:`NeedsThread`, which moves a run
started on the event loop to a worker thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veilpix._errors import BlockRule, RequestBlocked

if TYPE_CHECKING:
    from veilpix.guard._request import Receipt

__all__ = ["Block", "NeedsThread"]


class NeedsThread(Exception):
    """Raised by an inline run (``aprepare`` on the event loop) at the first piece of heavy or
    blocking work: decompressing, sanitizing an image, fetching a URL. Nothing has been
    written yet, so the run starts over on a worker thread."""


class Block(Exception):
    def __init__(self, rule: BlockRule, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.rule, self.reason, self.hint = rule, reason, hint

    def error(self, record_id: str, receipt: Receipt) -> RequestBlocked:
        """What the caller gets once the block is recorded as ``record_id``."""
        return RequestBlocked(
            self.reason, rule=self.rule, hint=self.hint, record_id=record_id, receipt=receipt
        )
