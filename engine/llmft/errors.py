"""User-facing errors.

A `UserError` is a mistake the user can fix (a bad path, a wrong credential, an
invalid config). The CLI prints its message without a traceback and exits with
status 2. Messages name the key, file:line or variable at fault and the fix.
"""


class UserError(Exception):
    """An error caused by user input or environment; printed without a traceback."""

    exit_code = 2
