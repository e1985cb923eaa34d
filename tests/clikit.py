"""Running the ``veilpix`` command in a fresh process for the CLI tests: output in pipes, the
user's colour settings taken out of the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["clean_env", "run"]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NO_COLOR and FORCE_COLOR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(extra or {})
    return env


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``veilpix ARGS`` (undecodable bytes of file names kept as surrogates)."""
    return subprocess.run(
        [sys.executable, "-m", "veilpix", *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        cwd=cwd,
        env=clean_env(env),
        timeout=120,
        check=False,
    )
