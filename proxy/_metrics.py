"""Counters for ``/_veilpix/metrics`` (Prometheus text format), shared by worker processes.

Every counter lives in one int64 array with a row per worker ("slot"): a worker adds only to
its own row, so no lock is needed, and a scrape sums the rows. With one worker the array is
private memory; with several (``veilpix proxy --workers N``) the supervisor creates it in
shared memory (``multiprocessing.shared_memory``, RAM only) and hands each worker its slot,
so whichever worker answers a scrape reports the whole proxy.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Literal, get_args

from veilpix import adapters

if TYPE_CHECKING:
    import numpy as np

__all__ = ["OUTCOMES", "Metrics", "Outcome"]

# What became of a request (or of a connection turned away), as veilpix_requests_total counts.
Outcome = Literal[
    "sent",
    "blocked",
    "refused",
    "too_large",
    "failed",
    "error",
    "client_disconnected",
    "broken_stream",
    "tunnelled",  # the intercept proxy's byte tunnels, one per CONNECT
    "busy",  # 503: max_connections or the memory budget reached
    "timeout",  # 408: a request body that came too slowly
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOTALS = (
    ("veilpix_images_total", "Images sanitized."),
    ("veilpix_faces_blurred_total", "Faces hidden before sending."),
    ("veilpix_image_bytes_before_total", "Image bytes received."),
    ("veilpix_image_bytes_after_total", "Image bytes sent."),
)


def _vendors() -> tuple[str, ...]:
    return (*sorted(v.name for v in adapters.vendors()), "-")


class Metrics:
    """Request, image and latency counters. ``buffer`` (shared memory of at least
    :meth:`size` bytes for ``slots`` rows) and ``slot`` are given by the worker supervisor;
    without them the counters are private to this process."""

    def __init__(self, *, slots: int = 1, slot: int = 0, buffer: Any = None) -> None:
        import numpy as np  # (made when serving: importing veilpix.proxy stays light)

        self.vendors = _vendors()
        self._vi = {v: i for i, v in enumerate(self.vendors)}
        self._oi: dict[str, int] = {o: i for i, o in enumerate(OUTCOMES)}
        nv, no, nb = len(self.vendors), len(OUTCOMES), len(BUCKETS) + 1
        # per slot: requests[v, o] | 4 totals | latency counts[v, bucket] | latency sum µs[v]
        # (a call is counted in its own bucket only; render() makes them cumulative)
        self._req = slice(0, nv * no)
        self._tot = slice(self._req.stop, self._req.stop + len(_TOTALS))
        self._lat = slice(self._tot.stop, self._tot.stop + nv * nb)
        self._sum = slice(self._lat.stop, self._lat.stop + nv)
        self.width = self._sum.stop
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} is not one of {slots}")
        shape = (slots, self.width)
        self._all = (
            np.zeros(shape, dtype=np.int64)
            if buffer is None
            else np.ndarray(shape, dtype=np.int64, buffer=buffer)
        )
        self._row = self._all[slot]
        # The hot path adds to single cells through a memoryview: a numpy scalar update costs
        # several times as much, and each call counts a few.
        self._cells = memoryview(self._row).cast("B").cast("q")
        self._nb = len(BUCKETS) + 1

    @classmethod
    def size(cls, slots: int) -> int:
        """Bytes of shared memory ``slots`` workers need."""
        return cls().width * slots * 8

    # -- counting (this worker's row) ----------------------------------------------------------

    def count(self, vendor: str, outcome: Outcome) -> None:
        v = self._vi.get(vendor, self._vi["-"])
        self._cells[self._req.start + v * len(OUTCOMES) + self._oi[outcome]] += 1

    def add_image(self, faces_blurred: int, bytes_before: int, bytes_after: int) -> None:
        cells, start = self._cells, self._tot.start
        cells[start] += 1
        cells[start + 1] += faces_blurred
        cells[start + 2] += bytes_before
        cells[start + 3] += bytes_after

    def observe(self, vendor: str, seconds: float) -> None:
        v = self._vi.get(vendor, self._vi["-"])
        bucket = bisect.bisect_left(BUCKETS, seconds)  # the first bound >= seconds; +Inf last
        self._cells[self._lat.start + v * self._nb + bucket] += 1  # cumulated when read
        self._cells[self._sum.start + v] += round(seconds * 1_000_000)

    # -- reading (all workers) -----------------------------------------------------------------

    def totals(self) -> np.ndarray:
        summed: np.ndarray = self._all.sum(axis=0)
        return summed

    def requests(self) -> dict[tuple[str, str], int]:
        """(vendor, outcome) -> count, summed over the workers; zero counts left out."""
        import numpy as np

        row = self.totals()[self._req].reshape(len(self.vendors), len(OUTCOMES))
        return {
            (self.vendors[v], OUTCOMES[o]): int(row[v, o])
            for v, o in zip(*np.nonzero(row), strict=True)
        }

    def render(self) -> str:
        total = self.totals()
        out = [
            "# HELP veilpix_requests_total Requests through the proxy by vendor and outcome.",
            "# TYPE veilpix_requests_total counter",
        ]
        for (vendor, outcome), n in sorted(self.requests().items()):
            out.append(f'veilpix_requests_total{{vendor="{vendor}",outcome="{outcome}"}} {n}')
        for (name, text), value in zip(_TOTALS, total[self._tot], strict=True):
            out += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {int(value)}"]
        out += [
            "# HELP veilpix_upstream_seconds Time to the vendor's response head.",
            "# TYPE veilpix_upstream_seconds histogram",
        ]
        nb = len(BUCKETS) + 1
        lat = total[self._lat].reshape(len(self.vendors), nb).cumsum(axis=1)
        sums = total[self._sum]
        for v, vendor in enumerate(self.vendors):
            counts = lat[v]
            if not counts[-1]:
                continue
            for bound, n in zip(BUCKETS, counts, strict=False):
                out.append(f'veilpix_upstream_seconds_bucket{{vendor="{vendor}",le="{bound}"}} {n}')
            out.append(
                f'veilpix_upstream_seconds_bucket{{vendor="{vendor}",le="+Inf"}} {counts[-1]}'
            )
            out.append(f'veilpix_upstream_seconds_sum{{vendor="{vendor}"}} {sums[v] / 1e6:.6f}')
            out.append(f'veilpix_upstream_seconds_count{{vendor="{vendor}"}} {counts[-1]}')
        return "\n".join(out) + "\n"
