"""User-facing errors: the CLI turns them into a message and exit code 2, the server into HTTP 400."""
from __future__ import annotations

from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad file, bad option, occupied output path); no traceback shown."""


def run_command(prog: str, job: Callable[[], object], *, verbose: bool, fmt: str) -> int:
    """Set up logging, run a command-line job, and turn a UserError into a message and exit code 2."""
    import logging
    import sys

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)
    try:
        job()
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    return 0
