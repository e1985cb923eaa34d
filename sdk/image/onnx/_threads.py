"""The threads a run uses, and the BLAS threads it keeps out of the way.

:func:`thread_count` is how many threads a chain's bands are spread over (the cores this
process may use, at most ``MAX_THREADS``); :class:`_Workers` starts them for one run and
stops them when it ends; :class:`_BlasThreads` (one instance, ``_BLAS``) keeps OpenBLAS
single-threaded while any network runs. A fork hook, registered on import, resets ``_BLAS``
in a child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np  # noqa: TID253 - _BlasThreads finds the OpenBLAS of numpy's own wheel

MAX_THREADS = 4  # row bands are spread over this many threads at most (and the cores there are)


def thread_count() -> int:
    """Threads a chain's bands are spread over: the cores this process may use, at most
    MAX_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


class _Workers:
    """The threads one run shares its bands with: started when the first chain big enough
    to share asks for them, and stopped when the run ends, so that no idle thread outlives
    a run (and a later fork, as ``veilpix scrub -j N`` does, inherits none)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Any) -> Future[None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, thread_count() - 1), thread_name_prefix="veilpix-onnx"
            )
        return self._pool.submit(fn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _BlasThreads:
    """Runs OpenBLAS single-threaded while a network runs, and restores it after.

    The runtime makes thousands of band-sized matrix products and spreads the bands over its
    own threads. OpenBLAS would split each product over its own threads too, and its threads
    wait for each other by spinning: on a busy machine one descheduled thread stalls every
    product (measured: 3 ms instead of 0.3 ms each, ten times slower overall). This is what
    ``threadpoolctl`` does, done with ctypes on the OpenBLAS numpy has loaded; where none is
    found (another BLAS, another platform) it does nothing. The setting is process-wide, so
    concurrent runs count themselves in and the last one out restores it.
    """

    _SYMBOLS = (
        ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
        ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
        ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
        ("openblas_set_num_threads", "openblas_get_num_threads"),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._libs: list[tuple[Any, Any]] | None = None
        self._saved: list[int] = []

    def _find(self) -> list[tuple[Any, Any]]:
        paths: list[str] = []
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            maps = ""
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if "openblas" in path.lower() and path not in paths:
                paths.append(path)
        if not maps:  # not Linux: the copy numpy's wheel carries
            base = Path(np.__file__).resolve().parent
            for folder in (base / ".dylibs", base.parent / "numpy.libs"):
                if folder.is_dir():
                    paths += [
                        str(p) for p in sorted(folder.iterdir()) if "openblas" in p.name.lower()
                    ]
        found = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for setter, getter in self._SYMBOLS:
                if hasattr(lib, setter) and hasattr(lib, getter):
                    found.append((getattr(lib, setter), getattr(lib, getter)))
                    break
        return found

    def reset(self) -> None:
        """After a fork: no run is in progress in this process (whatever the parent did)."""
        self._lock = threading.Lock()
        self._users = 0

    @contextlib.contextmanager
    def single(self) -> Iterator[None]:
        with self._lock:
            if self._libs is None:
                self._libs = self._find() if sys.platform != "emscripten" else []
            if self._users == 0:
                self._saved = [int(get()) for _, get in self._libs]
                for set_, _ in self._libs:
                    set_(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for (set_, _), saved in zip(self._libs, self._saved, strict=True):
                        set_(max(1, saved))


_BLAS = _BlasThreads()


def _after_fork() -> None:
    """In a child process (``veilpix scrub -j N`` forks): no run is in progress here, and
    the BLAS lock may have been held by a thread of the parent; start afresh."""
    _BLAS.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
