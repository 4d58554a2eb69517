"""Chart test harness: render with the real Helm engine, lint, and validate manifests.

Rendering and `--set` parsing live in `llmft.charts` (the local runner uses them
too); this module adds what only tests need: strict Kubernetes schema validation
at a pinned version and the Pod Security "restricted" checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmft.charts import Rendered, lint_chart, render_chart

REPO = Path(__file__).resolve().parent.parent
CHARTS = REPO / "charts"
OVERRIDES = REPO / "overrides"
KUBERNETES_VERSION = "1.33.0"

__all__ = [
    "CHARTS",
    "OVERRIDES",
    "REPO",
    "Rendered",
    "lint_chart",
    "render_chart",
    "validate_manifests",
    "render_valid",
    "pod_specs",
    "restricted_violations",
    "writable_path_violations",
]

# Environment variables that name a folder a process writes (caches, temp, home): with a read-only root
# filesystem each must lie on one of the container's volumes.
WRITABLE_ENV = (
    "HOME",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "MPLCONFIGDIR",
    "LLMFT_CACHE_DIR",
)


# Custom resources the charts may render: (apiVersion, kind) -> their published schema (tests/data/schemas).
SCHEMAS = REPO / "tests" / "data" / "schemas"
CUSTOM_RESOURCE_SCHEMAS = {("jobset.x-k8s.io/v1alpha2", "JobSet"): SCHEMAS / "jobset.x-k8s.io_v1alpha2_jobset.json"}


def validate_manifests(documents: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> list[str]:
    """Strict schema validation of every manifest; returns the problems (empty when valid).

    A custom resource is checked against its published schema, unknown fields rejected (as `kubectl apply`
    with strict field validation does), and the Job templates inside a JobSet as batch/v1 Jobs at `version`.
    """
    import kubernetes_validate

    problems = []
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        schema_file = CUSTOM_RESOURCE_SCHEMAS.get((document.get("apiVersion"), document.get("kind")))
        if schema_file is not None:
            problems += _custom_resource_problems(name, document, schema_file)
            jobs = [
                {"apiVersion": "batch/v1", "kind": "Job", **job["template"], "metadata": {"name": job["name"]}}
                for job in document.get("spec", {}).get("replicatedJobs", [])
            ]
            problems += [f"{name}: {problem}" for problem in validate_manifests(jobs, version)]
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            problems.append(f"{name}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name}: no schema: {error}")
    return problems


def _custom_resource_problems(name: str, document: dict, schema_file: Path) -> list[str]:
    import json

    import jsonschema

    schema = _strict(json.loads(schema_file.read_text()))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{name}: {'/'.join(str(p) for p in error.path)}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    ]


def _strict(schema: Any) -> Any:
    """An OpenAPI structural schema with unknown fields rejected wherever the API server would reject them."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if "properties" in strict and "additionalProperties" not in strict:
        if not strict.get("x-kubernetes-preserve-unknown-fields"):
            strict["additionalProperties"] = False
    return strict


def render_valid(chart: str | Path, **kwargs) -> Rendered:
    """Render and assert every manifest passes strict Kubernetes validation."""
    chart_dir = Path(chart) if Path(chart).is_absolute() else CHARTS / chart
    rendered = render_chart(chart_dir, **kwargs)
    problems = validate_manifests(rendered.documents)
    assert not problems, "invalid manifests:\n" + "\n".join(problems)
    return rendered


def pod_specs(rendered: Rendered) -> list[tuple[str, dict]]:
    """(object name, pod spec) for every workload that runs pods."""
    found = []
    for doc in rendered.documents:
        kind, spec = doc.get("kind"), doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((doc["metadata"]["name"], spec["template"]["spec"]))
        elif kind == "JobSet":
            for job in spec["replicatedJobs"]:
                found.append((f"{doc['metadata']['name']}-{job['name']}", job["template"]["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            found.append((doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            found.append((doc["metadata"]["name"], spec))
    return found


def restricted_violations(rendered: Rendered) -> list[str]:
    """Pod Security Standard "restricted" checks for every container of every pod."""
    problems = []
    for name, spec in pod_specs(rendered):
        pod_context = spec.get("securityContext", {})
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{name}: hostPath volume {volume['name']}")
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                problems.append(f"{name}: {field}")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            if run_as_non_root is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
                problems.append(f"{where}: runs as UID 0")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            if "ALL" not in (context.get("capabilities", {}).get("drop") or []):
                problems.append(f"{where}: capabilities.drop does not include ALL")
            if set(context.get("capabilities", {}).get("add") or []) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}: adds capabilities")
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})) or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def writable_path_violations(rendered: Rendered) -> list[str]:
    """Least privilege beyond "restricted": no service account token, a read-only root filesystem, and every
    folder a container writes (HOME, TMPDIR, the caches: WRITABLE_ENV, and /tmp) on one of its volumes."""
    problems = []
    for name, spec in pod_specs(rendered):
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            where = f"{name}/{container['name']}"
            if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])]
            env = {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}
            for variable in ("HOME", "TMPDIR"):
                if variable not in env:
                    problems.append(f"{where}: {variable} is not set (the image's is read-only)")
            for variable, path in [(v, env[v]) for v in WRITABLE_ENV if v in env] + [("/tmp", "/tmp")]:
                if not any(path == mount or path.startswith(mount + "/") for mount in mounts):
                    problems.append(f"{where}: {variable} {path} is not on a volume")
    return problems
