"""Long work in the background: building the index, verifying the chain, building the
register. A :class:`Job` runs once at a time in a daemon thread, reports how far it got,
and keeps its last result (and when it was made) for the pages to show."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Job"]

T = TypeVar("T")
Progress = Callable[[int, int], None]


class Job(Generic[T]):
    """``work(progress)`` run in the background by :meth:`start`; ``result`` is the newest
    finished result, ``error`` the text of the newest failure (cleared by a success)."""

    def __init__(self, name: str, work: Callable[[Progress], T]) -> None:
        self.name = name
        self._work = work
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.result: T | None = None
        self.error: str | None = None
        self.finished_at: float | None = None  # time.time() of the newest result
        self.started_at: float | None = None
        self.done = 0
        self.total = 0
        self.by: str | None = None  # who started the running (or last) run, when a person did

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, by: str | None = None) -> bool:
        """Start a run unless one is running (False then)."""
        with self._lock:
            if self.running:
                return False
            self.done = self.total = 0
            self.started_at = time.time()
            self.by = by
            self._thread = threading.Thread(
                target=self._run, name=f"console-{self.name}", daemon=True
            )
            self._thread.start()
            return True

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _run(self) -> None:
        try:
            result = self._work(self._progress)
        except Exception as exc:  # noqa: BLE001 - shown on the page that needs the result
            self.error = f"{type(exc).__name__}: {exc}"
        else:
            self.result, self.error = result, None
            self.finished_at = time.time()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running run (True when none is running any more)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def percent(self) -> int | None:
        return None if not self.total else min(100, 100 * self.done // self.total)
