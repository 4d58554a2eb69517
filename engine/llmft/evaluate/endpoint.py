"""A small OpenAI-compatible chat client: one cheap check before the run, retries, a thread pool.

Plain `urllib` (no SDK dependency): the evaluation needs two calls of the API, `GET /models` and
`POST /chat/completions`, and its own retry rule. A request that fails on the connection, a timeout,
HTTP 429 or a 5xx status is retried with exponential backoff (1 s doubling to 30 s); other statuses
(400, 401, 404) are the caller's mistake and are not retried. The concurrency limit is the size of the
thread pool `map_requests` runs the requests in.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from llmft.errors import TransientError, UserError
from llmft.evaluate.spec import Endpoint, Requests

log = logging.getLogger("llmft.evaluate")

FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0
T = TypeVar("T")
R = TypeVar("R")


class RequestFailed(Exception):
    """A request that failed for good (after its retries, or with a status that is not retried)."""


class EndpointFailed(TransientError):
    """The target endpoint failed mid-run: one line, no traceback, and exit status 1 (not 2), so a Job restarts
    the pod and the evaluation resumes from samples.jsonl once the server is back."""


class EndpointClient:
    def __init__(self, endpoint: Endpoint, requests: Requests, key_path: str):
        self.endpoint = endpoint
        self.requests = requests
        self.key_path = key_path  # e.g. "target.endpoint", for messages
        self.base = endpoint.url.rstrip("/")
        self.model = endpoint.model

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.endpoint.api_key_env:
            key = os.environ.get(self.endpoint.api_key_env)
            if not key:
                raise UserError(
                    f"{self.key_path}.api_key_env: the variable {self.endpoint.api_key_env} is not set; "
                    "export it (the chart sets it from a Secret)"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self._headers())
        with urllib.request.urlopen(request, timeout=self.requests.timeout_seconds) as response:
            return json.loads(response.read().decode() or "{}")

    def check(self) -> str:
        """One cheap request (`GET /models`) before the run: reachable, authorised, serving the model."""
        url = f"{self.base}/models"
        try:
            listing = self._call("GET", "/models")
        except urllib.error.HTTPError as error:
            hint = {
                401: f"the server wants an API key: set {self.key_path}.api_key_env",
                403: "the API key is refused",
                404: f"no OpenAI API there: {self.key_path}.url must end with /v1 (e.g. http://host/v1)",
            }.get(error.code, "")
            raise UserError(
                f"{self.key_path}.url: {url} answered HTTP {error.code}{'; ' + hint if hint else ''}, "
                f"got {self.endpoint.url!r}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise UserError(
                f"{self.key_path}.url: cannot reach {url} ({reason}); check that the server runs and "
                "the URL is right (in the cluster: http://llm-inference-vllm-<release>/v1; locally: "
                f"`llmft serve MODEL --port 8080` and http://127.0.0.1:8080/v1), got "
                f"{self.endpoint.url!r}"
            ) from None
        names = [item["id"] for item in listing.get("data", []) if isinstance(item, dict) and item.get("id")]
        if self.model is None:
            if not names:
                raise UserError(f"{self.key_path}.model: {url} lists no model; set the served model name")
            self.model = names[0]
        elif names and self.model not in names:
            raise UserError(
                f"{self.key_path}.model: {self.model!r} is not served at {self.base}; it serves "
                f"{', '.join(map(str, names))}"
            )
        return self.model

    def chat(self, messages: list[dict], max_tokens: int, temperature: float) -> str:
        """The assistant's answer to `messages`, retried as the module docstring says."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        delay = FIRST_BACKOFF
        for attempt in range(self.requests.retries + 1):
            try:
                response = self._call("POST", "/chat/completions", body)
                return response["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")[:200]
                problem = f"HTTP {error.code}: {detail}"
                if error.code != 429 and error.code < 500:
                    raise RequestFailed(problem) from None
            except (urllib.error.URLError, OSError) as error:
                problem = f"{getattr(error, 'reason', error)}"
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise RequestFailed(f"not an OpenAI chat completion ({error!r})") from None
            if attempt < self.requests.retries:
                log.warning(
                    "%s: request failed (%s); retry %d of %d in %.0f s",
                    self.base,
                    problem,
                    attempt + 1,
                    self.requests.retries,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        raise RequestFailed(f"{problem} (after {self.requests.retries + 1} attempts)")


def map_requests(function: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R]]:
    """Run `function` over `items` with at most `concurrency` in flight; yield (item, result) as each finishes.

    An exception in `function` is raised here after the requests already in flight have finished.
    """
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llmft-eval") as pool:
        futures = {pool.submit(function, item): item for item in items}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
