"""A stand-in for a Kubernetes API server, for the SDK's Kubernetes backend tests.

No API server can run on this machine (no cluster, no container runtime), so this small HTTP server speaks
the API's wire format for exactly the calls `llmft.sdk.kubernetes_backend` makes, the way
tests/hub_standin.py stands in for the Hugging Face Hub:

- server-side apply: `PATCH /api[s]/.../namespaces/NS/PLURAL/NAME?fieldManager=M` with content type
  `application/apply-patch+yaml` (creates or updates; fields owned by another manager: 409 Conflict);
- `GET` of one object, `GET` of a collection with `labelSelector` (`k=v,k2=v2`), `DELETE` of one object;
- `GET /api/v1/namespaces/NS/pods/NAME/log?container=C[&follow=true]` (chunked text);
- errors as the API's `Status` objects (`kind: Status`, `code`, `reason`, `message`, `details`);
  `fail(method, path_part, code, reason, message)` makes the next matching calls fail that way.

What a real cluster does on its own (a Job's controller running pods, setting conditions) the tests do
through `set_status` and `add_pod`. Every request is recorded in `requests`, every applied body in `applied`.
"""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

KINDS = {
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "jobs": "Job",
    "deployments": "Deployment",
    "networkpolicies": "NetworkPolicy",
    "pods": "Pod",
}
# Custom resources this stand-in serves, as a cluster with their CRDs installed would (`with_jobsets`).
JOBSETS = {"jobsets": "JobSet"}


def status_object(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind},
        "code": code,
    }


NO_RESOURCE = status_object(404, "NotFound", "the server could not find the requested resource")


class KubernetesStandIn:
    def __init__(self, with_jobsets: bool = False):
        self.kinds = {**KINDS, **(JOBSETS if with_jobsets else {})}
        self.objects: dict[tuple[str, str, str], dict] = {}  # (namespace, plural, name) -> object
        self.managers: dict[tuple[str, str, str], str] = {}
        self.logs: dict[tuple[str, str], str] = {}  # (pod, container) -> text
        self.requests: list[tuple[str, str, dict, str]] = []  # method, path, query, content type
        self.applied: list[dict] = []
        self.failures: list[tuple[str, str, int, str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubernetesStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path, namespace: str = "team-a") -> str:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "me", "user": {"token": "standin-token"}}],
                    "contexts": [
                        {"name": "standin", "context": {"cluster": "standin", "user": "me", "namespace": namespace}}
                    ],
                    "current-context": "standin",
                }
            )
        )
        return str(path)

    # ------------------------------------------------------------------------------------------ test controls

    def fail(self, method: str, path_part: str, code: int, reason: str, message: str) -> None:
        self.failures.append((method, path_part, code, reason, message))

    def get(self, namespace: str, plural: str, name: str) -> dict | None:
        return self.objects.get((namespace, plural, name))

    def set_status(self, namespace: str, plural: str, name: str, status: dict) -> None:
        with self.lock:
            self.objects[(namespace, plural, name)]["status"] = status

    def add_pod(self, namespace: str, name: str, labels: dict, containers: dict[str, str], init: tuple = ()) -> None:
        """A pod with these labels whose containers logged `containers[name]`."""
        spec = {
            "initContainers": [{"name": c} for c in init],
            "containers": [{"name": c} for c in containers if c not in init],
        }
        with self.lock:
            self.objects[(namespace, "pods", name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": _now()},
                "spec": spec,
            }
            for container, text in containers.items():
                self.logs[(name, container)] = text

    # ------------------------------------------------------------------------------------------ HTTP

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict | str, content_type: str = "application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                parsed = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                content_type = self.headers.get("Content-Type", "")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                standin.requests.append((method, parsed.path, query, content_type))
                if self.headers.get("Authorization") != "Bearer standin-token":
                    return self._send(401, status_object(401, "Unauthorized", "Unauthorized"))
                for failure in list(standin.failures):
                    if failure[0] == method and failure[1] in parsed.path:
                        _, _, code, reason, message = failure
                        name = parsed.path.rstrip("/").rsplit("/", 1)[-1]
                        return self._send(code, status_object(code, reason, message, name))
                parts = parsed.path.strip("/").split("/")
                try:
                    at = parts.index("namespaces")
                except ValueError:
                    return self._send(
                        404, status_object(404, "NotFound", "the server could not find the requested resource")
                    )
                namespace, rest = parts[at + 1], parts[at + 2 :]
                plural = rest[0]
                name = rest[1] if len(rest) > 1 else None
                if len(rest) == 3 and rest[2] == "log" and method == "GET":
                    return self._log(namespace, name, query)
                kind = standin.kinds.get(plural)
                if kind is None:
                    return self._send(
                        404, status_object(404, "NotFound", "the server could not find the requested resource")
                    )
                key = (namespace, plural, name)
                if method == "PATCH":
                    return self._apply(key, kind, query, content_type, body)
                if method == "GET" and name is None:
                    return self._list(namespace, plural, kind, query.get("labelSelector", ""))
                if method == "GET":
                    obj = standin.objects.get(key)
                    if obj is None:
                        return self._not_found(plural, name)
                    return self._send(200, obj)
                if method == "DELETE":
                    with standin.lock:
                        obj = standin.objects.pop(key, None)
                        standin.managers.pop(key, None)
                    if obj is None:
                        return self._not_found(plural, name)
                    return self._send(200, status_object(200, "", "") | {"status": "Success"})
                return self._send(405, status_object(405, "MethodNotAllowed", f"{method} is not supported here"))

            def _not_found(self, plural, name):
                return self._send(404, status_object(404, "NotFound", f'{plural} "{name}" not found', name, plural))

            def _apply(self, key, kind, query, content_type, body):
                if content_type != "application/apply-patch+yaml":
                    return self._send(
                        415, status_object(415, "UnsupportedMediaType", f"{content_type} is not supported")
                    )
                manager = query.get("fieldManager")
                if not manager:
                    return self._send(422, status_object(422, "Invalid", "fieldManager is required for apply patch"))
                import yaml

                manifest = yaml.safe_load(body)
                standin.applied.append(manifest)
                with standin.lock:
                    owner = standin.managers.get(key)
                    if owner and owner != manager and query.get("force") != "true":
                        return self._send(
                            409,
                            status_object(
                                409,
                                "Conflict",
                                f'Apply failed with 1 conflict: conflict with "{owner}": .data',
                                key[2],
                                kind,
                            ),
                        )
                    existing = standin.objects.get(key) or {}
                    stored = json.loads(json.dumps(manifest))
                    meta = stored.setdefault("metadata", {})
                    meta["namespace"] = key[0]
                    meta["uid"] = (existing.get("metadata") or {}).get("uid") or str(uuid.uuid4())
                    meta["creationTimestamp"] = (existing.get("metadata") or {}).get("creationTimestamp") or _now()
                    meta["managedFields"] = [{"manager": manager, "operation": "Apply"}]
                    if "status" in existing:
                        stored["status"] = existing["status"]
                    standin.objects[key] = stored
                    standin.managers[key] = manager
                return self._send(200, stored)

            def _list(self, namespace, plural, kind, selector):
                wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
                items = [
                    obj
                    for (ns, pl, _), obj in sorted(standin.objects.items())
                    if ns == namespace
                    and pl == plural
                    and all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
                ]
                return self._send(200, {"kind": kind + "List", "apiVersion": "v1", "metadata": {}, "items": items})

            def _log(self, namespace, pod, query):
                if (namespace, "pods", pod) not in standin.objects:
                    return self._not_found("pods", pod)
                container = query.get("container", "")
                text = standin.logs.get((pod, container))
                if text is None:
                    return self._send(
                        400,
                        status_object(400, "BadRequest", f'container "{container}" in pod "{pod}" is waiting to start'),
                    )
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in text.splitlines(keepends=True):
                    data = line.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                self._route("GET")

            def do_PATCH(self):
                self._route("PATCH")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
