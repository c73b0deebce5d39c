"""Where build artefacts live: $PRESENTER_HOME, default ~/.cache/presenter (never the repo)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache folder for avatar packs, corpora, checkpoints and exported engines."""
    return Path(os.environ.get("PRESENTER_HOME", Path.home() / ".cache" / "presenter")).expanduser()
