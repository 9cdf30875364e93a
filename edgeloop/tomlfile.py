"""Reading a TOML config file, with errors that name the file (shared by cloud and device)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: Path, error: type[ValueError], what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from exc
