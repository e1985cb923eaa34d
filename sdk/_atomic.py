"""Writing a small file so that nobody ever reads half of it: the CA's key and certificate, the
transfer log's key file. The bytes go to a new temporary file beside the target (created with
the final mode, whatever the umask), are fsynced, then renamed over the target (``replace``) or
hard-linked to its name, which fails with FileExistsError when the target exists: of several
processes creating the same file at once, exactly one wins. The folder is fsynced afterwards,
so the new name is on disk too."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_file"]


def write_file(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Put ``data`` at ``path`` with ``mode``, atomically (see the module docstring)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask says
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
