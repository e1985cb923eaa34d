"""Finding the image files a command works on."""

from __future__ import annotations

import os
from dataclasses import dataclass

from veilpix._errors import ConfigError
from veilpix.formats._registry import IMAGE_EXTENSIONS

__all__ = ["Job", "collect"]


@dataclass(frozen=True)
class Job:
    """One input file and its path relative to the folder it was found in."""

    path: str
    rel: str


def collect(paths: list[str], *, exclude: str | None = None) -> tuple[list[Job], list[str]]:
    """Files named directly are always taken; folders are walked recursively for files with
    an image extension. Returns (jobs, skipped file paths). Raises ConfigError for a path
    that does not exist."""
    jobs: list[Job] = []
    skipped: list[str] = []
    seen: set[str] = set()
    excluded = os.path.realpath(exclude) if exclude else None
    for given in paths:
        if os.path.isfile(given):
            real = os.path.realpath(given)
            if real not in seen:
                seen.add(real)
                jobs.append(Job(given, os.path.basename(given)))
            continue
        if not os.path.isdir(given):
            raise ConfigError(f"no such file or folder: {given}", hint="check the path")
        for root, dirs, files in os.walk(given):
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != excluded
            )
            for name in sorted(files):
                full = os.path.join(root, name)
                if (
                    name.startswith(".")
                    or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS
                ):
                    skipped.append(full)
                    continue
                real = os.path.realpath(full)
                if real in seen:
                    continue
                seen.add(real)
                jobs.append(Job(full, os.path.relpath(full, given)))
    return jobs, skipped
