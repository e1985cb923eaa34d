"""What the core learns about one request on its way through, for the record whether the
request is sent or blocked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from veilpix._policy import Policy
from veilpix.guard._remote import Fetch, fetch_url
from veilpix.guard._request import Context
from veilpix.guard._rules import NeedsThread

if TYPE_CHECKING:
    from veilpix.adapters import Endpoint, Region, Vendor
    from veilpix.audit._record import OutboundImage
    from veilpix.image._report import SanitizedImage

__all__ = ["Work"]


@dataclass
class Work:
    """What prepare() learns along the way, for the record whether sent or blocked."""

    vendor: Vendor | None = None
    region: Region | None = None
    host: str = ""
    country: str | None = None
    endpoint: Endpoint | None = None
    images: list[OutboundImage] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    account: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    remote: list[tuple[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # non-image files sent ("document (PDF)")
    first_image: SanitizedImage | None = None
    path: str = ""  # the URL path the call goes to
    models: dict[int, str] = field(default_factory=dict)  # vendor model-field rank -> model
    # text sent (system instructions?, text), for the log (never stored clear)
    texts: list[tuple[bool, str]] = field(default_factory=list)
    context: Context | None = None  # the call's context with its record headers applied
    walked: bool = False  # the body walk has begun (its facts are in here)
    policy: Policy = field(default_factory=Policy)  # the guard's, or the vendor's override
    inline: bool = False  # on the event loop: heavy work raises NeedsThread
    fetch: Fetch = field(default=fetch_url, repr=False)  # the downloader of remote images
    door: str = "transport"  # which door the request came through (for how hints are worded)

    def setting(self, python: str, toml: str) -> str:
        """A hint's way to name a setting: as veilpix.toml has it for the proxy doors, whose
        users write the file, else as Python code."""
        return toml if self.door in ("gateway", "intercept") else python

    def heavy(self) -> None:
        if self.inline:
            raise NeedsThread
