"""User-facing errors.

A `UserError` is a mistake the user can fix (a bad path, a wrong credential, an
invalid config). The CLI prints its message without a traceback and exits with
status 2, which the charts' Jobs treat as final (`podFailurePolicy`): retrying
cannot fix it. Messages name the key, file:line or variable at fault and the fix.

A `TransientError` is printed the same way but exits with status 1: something that
may pass on its own (an endpoint that does not answer, a transfer that arrived
damaged), so a Job restarts the pod, which resumes.
"""


class UserError(Exception):
    """An error caused by user input or environment; printed without a traceback."""

    exit_code = 2


class TransientError(UserError):
    """A failure that a later attempt may not meet; printed without a traceback, exit status 1."""

    exit_code = 1
