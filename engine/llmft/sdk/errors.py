"""The SDK's exceptions: each a one-line `UserError` naming what went wrong and the fix.

Argument mistakes raise the engine's own errors (`llmft.errors.UserError`, with the messages the CLI prints).
Kubernetes API errors become one type per cause (`Forbidden`, `NotFound`, `Conflict`, `QuotaExceeded`,
`Invalid`), decided from the API's Status object, never from message text; `JobFailed` and `JobTimeout`
come from `Client.wait_for_job_status`.
"""

from __future__ import annotations

from llmft.errors import TransientError, UserError


class JobNotFound(UserError):
    """No job of that name (locally: no folder in the SDK's state dir; on a cluster: no labelled object)."""


class JobFailed(UserError):
    """A job ended in Failed while waiting for another state: its reason and its last log lines."""

    def __init__(self, message: str, reason: str = "", last_lines: list[str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.last_lines = last_lines or []


class JobTimeout(UserError, TimeoutError):
    """wait_for_job_status ran out of time."""


class KubernetesError(UserError):
    """An error answered by the Kubernetes API server: `status`, `reason` and the resource it concerns."""

    def __init__(self, message: str, status: int = 0, reason: str = "", resource: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.resource = resource


class Forbidden(KubernetesError):
    """403: the credentials may not do this (RBAC)."""


class NotFound(KubernetesError):
    """404: the object, its namespace or its API does not exist."""


class Conflict(KubernetesError):
    """409: another field manager owns the fields, or the object changed meanwhile."""


class QuotaExceeded(KubernetesError):
    """403/422 from a ResourceQuota or LimitRange: the namespace has no room for the request."""


class Invalid(KubernetesError):
    """422: the API server rejected the object (an admission rule or a schema the cluster enforces)."""


class Unreachable(KubernetesError, TransientError):
    """No answer from the API server (connection refused, timeout, TLS)."""


__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "KubernetesError",
    "NotFound",
    "QuotaExceeded",
    "Unreachable",
    "UserError",
]
