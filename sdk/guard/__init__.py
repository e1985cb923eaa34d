"""The core every door runs an outbound request through: policy, images, record.

:class:`Guard` (``_guard``) runs a request through the destination checks
(``_destination``), the body (``_body``: finder, image pipeline, remote images, names) and
the record (``_record_facts``), and hands back a :class:`Prepared` request or raises
:class:`~veilpix.RequestBlocked` (``_rules``), which a door may answer in the vendor's own
error shape instead (``_refusal``). Doors import what they need from here.
"""

from veilpix.guard._guard import Guard
from veilpix.guard._refusal import BLOCKED_HEADER, RECORD_HEADER, Refusal, refusal
from veilpix.guard._remote import Fetch, fetch_url
from veilpix.guard._request import Context, Outbound, Prepared, Receipt

__all__ = [
    "BLOCKED_HEADER",
    "RECORD_HEADER",
    "Context",
    "Fetch",
    "Guard",
    "Outbound",
    "Prepared",
    "Receipt",
    "Refusal",
    "fetch_url",
    "refusal",
]
