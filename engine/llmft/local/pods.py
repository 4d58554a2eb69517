"""From rendered manifests to local process plans.

A `PodPlan` is one pod of a Job or Deployment: its volumes as local folders, its
init containers and containers with command, args, working directory and
environment resolved (ConfigMap and Secret references looked up, container paths
rewritten to the folders that stand in for the volumes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmft.errors import UserError
from llmft.local.jobsets import RESTART_NOTE, expand_jobsets

# Pod-spec fields a local process cannot honour; reported once per run.
IGNORED_POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "imagePullSecrets",
    "securityContext",
    "serviceAccountName",
    "runtimeClassName",
    "topologySpreadConstraints",
)
IGNORED_CONTAINER_FIELDS = (
    "image",
    "resources",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "imagePullPolicy",
)
# Mounts served by the host as they are (shared memory).
HOST_PATHS = ("/dev/shm",)


@dataclass
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    secret_values: set[str]
    workdir: Path | None
    ports: list[int] = field(default_factory=list)
    init: bool = False
    sidecar: bool = False  # a native sidecar: an init container with restartPolicy Always
    read_only_root: bool = False  # securityContext.readOnlyRootFilesystem: enforced by the runner


@dataclass
class PodPlan:
    kind: str
    name: str
    root: Path
    volumes: dict[str, Path]
    mounts: dict[str, Path]
    init_containers: list[ContainerPlan]
    containers: list[ContainerPlan]
    backoff_limit: int = 0
    fail_job_exit_codes: set[int] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)
    configmap_files: dict[Path, str] = field(default_factory=dict)
    subpaths: list[Path] = field(default_factory=list)  # subPath folders, made in each fresh volume
    # One pod of an Indexed Job (completionMode Indexed): its completion index and the Job's completions.
    index: int | None = None
    completions: int = 1
    backoff_limit_per_index: int | None = None  # backoffLimitPerIndex (then maxFailedIndexes is taken as 0)

    def image_root(self, container: ContainerPlan) -> Path:
        """The read-only folder that stands in for a container's image (its working directory and HOME)."""
        return self.root / "image-root" / container.name


@dataclass
class SecretSource:
    """Secret values: a secrets file `{secretName: {key: value}}`, then the environment, then overrides.

    `by_env_name` maps an environment variable name (as the container sees it) to a
    value and wins over the file: the embedded S3 server's credentials use it. With
    `collect_missing` (a dry run) a value found nowhere is listed in `missing` instead of failing.
    """

    files: dict[str, dict[str, str]] = field(default_factory=dict)
    by_env_name: dict[str, str] = field(default_factory=dict)
    collect_missing: bool = False
    missing: list[str] = field(default_factory=list)

    def lookup(self, env_name: str, secret: str, key: str, optional: bool) -> str | None:
        if env_name in self.by_env_name:
            return self.by_env_name[env_name]
        if key in self.files.get(secret, {}):
            return str(self.files[secret][key])
        if os.environ.get(env_name):
            return os.environ[env_name]
        if optional:
            return None
        need = (
            f"env {env_name} needs key {key!r} of Secret {secret!r}: put it in a secrets file "
            f"(--secrets-file, YAML `{secret}: {{{key}: ...}}`) or export {env_name}"
        )
        if self.collect_missing:
            self.missing.append(need)
            return f"<{secret}/{key}>"
        raise UserError(need)


def _config_maps(documents: list[dict]) -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: dict(doc.get("data") or {}) for doc in documents if doc.get("kind") == "ConfigMap"}


class PathMapper:
    """Rewrites container paths (volume mount points) to the local folders standing in for them.

    One pass over the text, the longest mount point first, so a folder already rewritten is never rewritten
    again. A path below a mount point that exists on this machine is the caller's own (a local model given with
    `--set`, often under /tmp) and is kept; the mount point itself is always rewritten. A relative path
    (`./x`, `../x`) that exists from the caller's folder is the caller's too: it is made absolute, because
    the container's process runs elsewhere (its image root stand-in).
    """

    RELATIVE = re.compile(r"(?<![\w./-])(\.\.?/[^\s,;:'\"]*)")

    def __init__(self, mounts: dict[str, Path]):
        self.mounts = {mount.rstrip("/") or "/": local for mount, local in mounts.items()}
        alternatives = "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
        self.pattern = re.compile(r"(?<![\w./-])(" + alternatives + r")(?=/|$|[\s,;:'\"])") if self.mounts else None

    def __call__(self, text: str) -> str:
        text = self.RELATIVE.sub(
            lambda match: str(Path(match.group(1)).resolve()) if Path(match.group(1)).exists() else match.group(1), text
        )
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda match: self._replace(match, text), text)

    def _replace(self, match: re.Match, text: str) -> str:
        rest = re.match(r"/[^\s,;:'\"]*", text[match.end() :])
        if rest and Path(match.group(1) + rest.group(0)).exists():
            return match.group(1)
        return str(self.mounts[match.group(1)])


def plan_pods(documents: list[dict], workdir: Path, secrets: SecretSource) -> list[PodPlan]:
    """One PodPlan per Job / Deployment / Pod, in the order they were rendered; an Indexed Job gives one per
    completion index (each with its own folders: pods share no filesystem), JOB_COMPLETION_INDEX in its env.
    A JobSet runs as the Jobs its controller would create (`llmft.local.jobsets`)."""
    documents, from_jobsets = expand_jobsets(documents)
    config_maps = _config_maps(documents)
    hosts = HostMap(documents)
    plans = []

    def add(plan: PodPlan) -> None:
        if plan.name in from_jobsets:
            plan.ignored.append(RESTART_NOTE)
        hosts.apply(plan)
        plans.append(plan)

    for doc in documents:
        kind = doc.get("kind")
        if kind not in ("Job", "Deployment", "Pod"):
            continue
        name = doc["metadata"]["name"]
        spec = doc["spec"] if kind == "Pod" else doc["spec"]["template"]["spec"]
        if kind == "Job" and doc["spec"].get("completionMode") == "Indexed":
            completions = int(doc["spec"].get("completions", 1))
            for index in range(completions):
                plan = _plan(kind, name, doc, spec, config_maps, workdir / f"job-{name}-{index}", secrets)
                plan.index, plan.completions = index, completions
                for container in plan.init_containers + plan.containers:
                    container.env["JOB_COMPLETION_INDEX"] = str(index)
                add(plan)
            continue
        add(_plan(kind, name, doc, spec, config_maps, workdir / f"{kind.lower()}-{name}", secrets))
    return plans


class HostMap:
    """The DNS names a headless Service gives an Indexed Job's pods (`<job>-<index>.<service>`, with or
    without `.<namespace>.svc[.cluster.local]`), mapped to loopback: each `name:port` of the Service's
    ports becomes `127.0.0.1:<a free local port>` in the pods' config files, environment and command, so
    the local pods reach each other by the names the chart rendered (one port per pod and Service port)."""

    def __init__(self, documents: list[dict]):
        self.replacements: dict[str, str] = {}
        services = {
            doc["metadata"]["name"]: [int(p["port"]) for p in doc["spec"].get("ports", [])]
            for doc in documents
            if doc.get("kind") == "Service" and doc.get("spec", {}).get("clusterIP") == "None"
        }
        for doc in documents:
            if doc.get("kind") != "Job" or doc["spec"].get("completionMode") != "Indexed":
                continue
            service = doc["spec"]["template"]["spec"].get("subdomain")
            if service not in services:
                continue
            for index in range(int(doc["spec"].get("completions", 1))):
                short = f"{doc['metadata']['name']}-{index}.{service}"
                names = [f"{short}.default.svc.cluster.local", f"{short}.default.svc", short]
                for port in services[service]:
                    local = f"127.0.0.1:{_free_port()}"
                    for host in names:
                        self.replacements[f"{host}:{port}"] = local
                for host in names:
                    self.replacements[host] = "127.0.0.1"
        ordered = sorted(self.replacements, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(k) for k in ordered) + r"(?![\w.-])") if ordered else None

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda match: self.replacements[match.group(0)], text)

    def apply(self, plan: PodPlan) -> None:
        if self.pattern is None:
            return
        plan.configmap_files = {path: self(text) for path, text in plan.configmap_files.items()}
        for container in plan.init_containers + plan.containers:
            container.argv = [self(part) for part in container.argv]
            container.env = {key: self(value) for key, value in container.env.items()}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _plan(kind, name, doc, spec, config_maps, root: Path, secrets: SecretSource) -> PodPlan:
    volumes: dict[str, Path] = {}
    for volume in spec.get("volumes", []):
        local = root / "volumes" / volume["name"]
        volumes[volume["name"]] = local
    mounts: dict[str, Path] = {}
    container_mounts: dict[str, dict[str, Path]] = {}  # a subPath gives one container its own folder
    ignored = [f"pod {key}" for key in IGNORED_POD_FIELDS if spec.get(key)]
    all_containers = spec.get("initContainers", []) + spec.get("containers", [])
    for container in all_containers:
        own = container_mounts.setdefault(container["name"], {})
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] in HOST_PATHS:
                continue
            local = volumes.get(mount["name"])
            if local is None:
                raise UserError(f"{kind}/{name}: volumeMount {mount['name']!r} has no volume")
            own[mount["mountPath"]] = local / mount.get("subPath", "")
            mounts.setdefault(mount["mountPath"], local / mount.get("subPath", ""))
        for key in IGNORED_CONTAINER_FIELDS:
            if key == "securityContext" and set(container.get(key) or {}) <= {"readOnlyRootFilesystem"}:
                continue  # the one security setting a local process honours
            if container.get(key) and key != "image":
                requests = container.get("resources", {})
                gpu = [r for section in ("limits", "requests") for r in requests.get(section, {}) if "gpu" in r]
                note = f"container {key}" + (
                    f" (GPU request {', '.join(sorted(set(gpu)))})" if key == "resources" and gpu else ""
                )
                if key == "securityContext" and "readOnlyRootFilesystem" in container[key]:
                    note += " (but readOnlyRootFilesystem)"
                ignored.append(note)
    mapper = PathMapper(mounts)
    plan = PodPlan(
        kind=kind,
        name=name,
        root=root,
        volumes=volumes,
        mounts=mounts,
        init_containers=[],
        containers=[],
        ignored=sorted(set(ignored)),
    )
    if kind == "Job":
        per_index = doc["spec"].get("backoffLimitPerIndex")
        plan.backoff_limit = int(doc["spec"].get("backoffLimit", 6 if per_index is None else 2**31 - 1))
        plan.backoff_limit_per_index = None if per_index is None else int(per_index)
        for rule in (doc["spec"].get("podFailurePolicy") or {}).get("rules", []):
            if rule.get("action") == "FailJob" and rule.get("onExitCodes", {}).get("operator") == "In":
                plan.fail_job_exit_codes |= set(rule["onExitCodes"]["values"])
    for container in spec.get("initContainers", []):
        plan.init_containers.append(
            _container(container, config_maps, secrets, PathMapper(container_mounts[container["name"]]), init=True)
        )
    for container in spec.get("containers", []):
        plan.containers.append(
            _container(container, config_maps, secrets, PathMapper(container_mounts[container["name"]]), init=False)
        )
    plan.subpaths = sorted({path for own in container_mounts.values() for path in own.values()} - set(volumes.values()))
    plan.configmap_files = _configmap_files(spec, config_maps, volumes, mapper)
    return plan


def _configmap_files(spec: dict, config_maps: dict, volumes: dict[str, Path], mapper: PathMapper) -> dict[Path, str]:
    """The files of ConfigMap volumes, with container paths rewritten like command and env (the finetune
    chart's engine config names /checkpoints and /config/accelerate_config.yaml)."""
    files: dict[Path, str] = {}
    for volume in spec.get("volumes", []):
        source = volume.get("configMap")
        if not source:
            continue
        data = config_maps.get(source["name"])
        if data is None:
            if source.get("optional"):
                continue
            raise UserError(f"volume {volume['name']!r} refers to ConfigMap {source['name']!r}, which is not rendered")
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            files[volumes[volume["name"]] / item["path"]] = mapper(data[item["key"]])
    return files


def _container(container: dict, config_maps, secrets: SecretSource, mapper: PathMapper, init: bool) -> ContainerPlan:
    env: dict[str, str] = {}
    secret_values: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps.get(source["configMapRef"]["name"], {}))
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = _expand(mapper(str(item["value"])), env)
            continue
        reference = item.get("valueFrom", {})
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            value = secrets.lookup(name, ref["name"], ref["key"], bool(ref.get("optional")))
            if value is not None:
                env[name] = value
                secret_values.add(value)
        elif "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            value = config_maps.get(ref["name"], {}).get(ref["key"])
            if value is not None:
                env[name] = value
        elif "fieldRef" in reference:
            env[name] = {
                "metadata.name": "local",
                "metadata.namespace": "default",
                "spec.nodeName": "localhost",
                "status.podIP": "127.0.0.1",
            }.get(reference["fieldRef"]["fieldPath"], "")
    argv = [_expand(mapper(str(part)), env) for part in container.get("command", []) + container.get("args", [])]
    if not argv:
        raise UserError(f"container {container['name']!r} has no command: the local runner needs an explicit command")
    workdir = container.get("workingDir")
    ports = [int(p["containerPort"]) for p in container.get("ports", [])]
    return ContainerPlan(
        name=container["name"],
        argv=argv,
        env=env,
        secret_values=secret_values,
        workdir=Path(mapper(workdir)) if workdir else None,
        ports=ports,
        init=init,
        sidecar=init and container.get("restartPolicy") == "Always",
        read_only_root=bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem")),
    )


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def describe(argv: list[str], secret_values: set[str]) -> str:
    """A command line for logs, with any secret value masked."""
    shown = []
    for part in argv:
        for secret in secret_values:
            if secret and secret in part:
                part = part.replace(secret, "****")
        shown.append(part if re.fullmatch(r"[\w./:=@,+-]+", part) else repr(part))
    return " ".join(shown)
