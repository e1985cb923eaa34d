"""Finding the image files a command works on, and saying what was left out and why."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Literal

from veilpix._errors import ConfigError
from veilpix.formats._registry import IMAGE_EXTENSIONS

__all__ = ["Found", "Job", "Skipped", "Unreadable", "collect", "os_error"]


@dataclass(frozen=True)
class Job:
    """One input file and its path relative to the folder it was found in."""

    path: str
    rel: str


@dataclass(frozen=True)
class Skipped:
    """A file or folder found but left alone on purpose: ``hidden`` (its name starts with a
    dot; ``--include-hidden`` takes it) or ``not an image`` (no image file extension)."""

    path: str
    reason: Literal["hidden", "not an image"]
    folder: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "reason": self.reason,
            "kind": "folder" if self.folder else "file",
        }


@dataclass(frozen=True)
class Unreadable:
    """A folder (or a path given) that could not be read: a failure, never a silent skip."""

    path: str
    type: str
    message: str

    def error(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


@dataclass
class Found:
    """What :func:`collect` found: the jobs, what it skipped, what it could not read."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def hidden(self) -> list[Skipped]:
        return [s for s in self.skipped if s.reason == "hidden"]

    @property
    def not_images(self) -> list[Skipped]:
        return [s for s in self.skipped if s.reason == "not an image"]


def os_error(exc: OSError, path: str) -> dict[str, str]:
    """An OSError as the ``error`` entry of a file: ``Permission denied: photos/a.jpg``."""
    return {
        "type": type(exc).__name__,
        "message": f"{exc.strerror or exc}: {exc.filename or path}",
    }


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect(
    paths: list[str],
    *,
    exclude: str | None = None,
    include_hidden: bool = False,
    refuse_links: bool = False,
) -> Found:
    """Files named directly are always taken; folders are walked recursively for files with
    an image extension. Hidden files with an image extension and hidden folders (names
    starting with a dot) are skipped as ``hidden`` unless ``include_hidden``; other files
    are skipped as ``not an image``. A folder that cannot be listed, and anything that is
    not a regular file (a pipe or a device would block the read), is ``unreadable``; so is
    a symbolic link with ``refuse_links`` (``scrub --in-place`` would replace the link and
    leave the photo it points to as it was). Two names of one file are one job, under the
    name that is not a link. Raises ConfigError for a path that does not exist."""
    found = Found()
    seen: dict[str, int] = {}  # real path -> index of its job
    excluded = os.path.realpath(exclude) if exclude else None

    def take(path: str, rel: str) -> None:
        if refuse_links and os.path.islink(path):
            found.unreadable.append(
                Unreadable(
                    path,
                    "SymbolicLink",
                    f"a symbolic link: {path} (--in-place would replace the link and leave "
                    f"the photo it points to, {os.path.realpath(path)}, as it was; scrub "
                    "that file itself)",
                )
            )
            return
        try:
            st = os.stat(path)
        except OSError as exc:
            unreadable(exc, path, "")
            return
        if not stat.S_ISREG(st.st_mode):
            found.unreadable.append(
                Unreadable(
                    path, "NotAFile", f"not a regular file: {path} (a pipe, socket or device)"
                )
            )
            return
        real = os.path.realpath(path)
        if real not in seen:
            seen[real] = len(found.jobs)
            found.jobs.append(Job(path, rel))
        elif os.path.islink(found.jobs[seen[real]].path) and not os.path.islink(path):
            found.jobs[seen[real]] = Job(path, rel)  # the file under its own name

    def unreadable(exc: OSError, path: str, what: str) -> None:
        message = f"{exc.strerror or exc}: {exc.filename or path}{what}"
        found.unreadable.append(Unreadable(str(exc.filename or path), type(exc).__name__, message))

    for given in paths:
        try:
            st = os.stat(given)
        except FileNotFoundError:
            raise ConfigError(f"no such file or folder: {given}", hint="check the path") from None
        except OSError as exc:  # e.g. a parent folder that may not be searched
            unreadable(exc, given, "")
            continue
        if stat.S_ISREG(st.st_mode):
            take(given, os.path.basename(given))
            continue
        if not stat.S_ISDIR(st.st_mode):
            found.unreadable.append(
                Unreadable(given, "NotAFile", f"not a regular file or folder: {given}")
            )
            continue

        def walk_error(exc: OSError, top: str = given) -> None:
            unreadable(exc, top, " (folder not read)")

        for root, dirs, files in os.walk(given, onerror=walk_error):
            kept = []
            for d in sorted(dirs):
                full = os.path.join(root, d)
                if excluded is not None and os.path.realpath(full) == excluded:
                    continue
                if _hidden(d) and not include_hidden:
                    found.skipped.append(Skipped(full, "hidden", folder=True))
                    continue
                kept.append(d)
            dirs[:] = kept
            for name in sorted(files):
                full = os.path.join(root, name)
                if not _is_image(name):
                    found.skipped.append(Skipped(full, "not an image"))
                elif _hidden(name) and not include_hidden:
                    found.skipped.append(Skipped(full, "hidden"))
                else:
                    take(full, os.path.relpath(full, given))
    return found
