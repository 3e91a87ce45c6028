"""Where SynthShapes keeps what it builds (pretrained tiny CLIPs, teachers, datasets): outside the repo."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ENV_VAR = "AME_CACHE"
DEFAULT_CACHE = "~/.cache/ame/synthshapes"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: `override`, else $AME_CACHE, else ~/.cache/ame/synthshapes (created if missing)."""
    path = Path(override or os.environ.get(ENV_VAR) or DEFAULT_CACHE).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_key(config: dict) -> str:
    """Short stable hash of a JSON-able config, used in cached file names so changed settings never collide."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
