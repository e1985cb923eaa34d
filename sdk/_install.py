"""How this copy of veilpix was installed, so that a hint can say the install command that
works: veilpix is not on the package index yet, and ``pip install 'veilpix[heif]'`` fails
for someone who installed it from a checkout or a built wheel.

pip records where a package came from in its ``direct_url.json`` (PEP 610): a folder (a
checkout, maybe editable), a wheel or sdist file, or a VCS URL. The command names the same
source with the extra added, which is what brings the extra's packages in.
"""

from __future__ import annotations

import functools

__all__ = ["install_command"]


@functools.cache
def _source() -> tuple[str, bool] | None:
    """(what pip should install, editable) for a non-index install, else None."""
    # (imported here: veilpix._errors imports this module, and the CLI's start-up must not
    # pay for what only an install hint needs)
    import json  # noqa: PLC0415 - see above
    from importlib import metadata
    from pathlib import Path  # noqa: PLC0415 - see above
    from urllib.parse import unquote, urlsplit  # noqa: PLC0415 - see above

    try:
        text = metadata.distribution("veilpix").read_text("direct_url.json")
        info = json.loads(text) if text else None
    except (metadata.PackageNotFoundError, ValueError, OSError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    url: str = info["url"]
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        return f"@ {vcs['vcs']}+{url}", False
    parts = urlsplit(url)
    if parts.scheme != "file":
        return f"@ {url}", False
    path = Path(unquote(parts.path))
    if not path.exists():  # the checkout or wheel has moved: name the package
        return None
    editable = bool(isinstance(info.get("dir_info"), dict) and info["dir_info"].get("editable"))
    return str(path), editable


def install_command(extra: str | None = None, *, upgrade: bool = False) -> str:
    """The pip command that adds ``extra`` to this install (or upgrades it), from the same
    source it was installed from: ``pip install '/src/veilpix[heif]'``."""
    import shlex  # noqa: PLC0415 - see _source

    flags = "-U " if upgrade else ""
    spec = f"[{extra}]" if extra else ""
    source = _source()
    if source is None:
        return f"pip install {flags}{shlex.quote('veilpix' + spec)}"
    where, editable = source
    if where.startswith("@ "):
        return f"pip install {flags}{shlex.quote(f'veilpix{spec} {where}')}"
    if editable:
        flags += "-e "
    return f"pip install {flags}{shlex.quote(where + spec)}"
