"""Run the real ``hashx`` command line, as a member would, with only the settings a test gives."""

import os
import subprocess
import sys
from pathlib import Path

HASHX = str(Path(sys.executable).parent / "hashx")


def hashx(
    *args: str,
    url: str | None = None,
    key: str | os.PathLike[str] | None = None,
    env: dict[str, str | None] | None = None,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only the settings given: never the developer's own config file or
    environment. ``env`` adds variables (None removes one); ``stdin`` is its standard input."""
    given: dict[str, str | None] = {
        k: v for k, v in os.environ.items() if not k.startswith(("HASHX_", "XDG_"))
    }
    given["HASHX_CONFIG"] = os.devnull
    if url:
        given["HASHX_URL"] = url
    if key:
        given["HASHX_KEY"] = str(key)
    given.update(env or {})
    clean = {k: v for k, v in given.items() if v is not None}
    result = subprocess.run(
        [HASHX, *args], env=clean, capture_output=True, text=True, timeout=60, input=stdin
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
