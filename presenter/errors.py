"""User-facing errors: the CLI turns them into a message and exit code 2, the server into HTTP 400."""


class UserError(Exception):
    """A mistake the user can fix (bad file, bad option, occupied output path); no traceback shown."""
