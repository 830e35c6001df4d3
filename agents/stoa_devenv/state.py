"""Remember local services started by ``stoa dev ... up`` so that ``down`` can stop them later."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stoa_devenv.tools import CACHE

STATE_DIR = Path(os.environ.get("STOA_STATE_DIR", CACHE / "dev"))


def save(name: str, data: dict[str, Any]) -> Path:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = STATE_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def load(name: str) -> dict[str, Any] | None:
    path = STATE_DIR / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def forget(name: str) -> None:
    (STATE_DIR / f"{name}.json").unlink(missing_ok=True)
