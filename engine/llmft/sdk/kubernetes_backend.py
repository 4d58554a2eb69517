"""The Kubernetes backend: the rendered manifests, server-side applied with the official `kubernetes` client.

- **Apply.** Every rendered object is sent as it is with `PATCH ...?fieldManager=llmft` and content type
  `application/apply-patch+yaml` (server-side apply; no `force`, so fields another manager owns are a
  `Conflict`, not silently taken). Each object carries the chart's labels plus `sdk.llmft.dev/job` and
  `sdk.llmft.dev/step` (through the charts' own `labels` value), which list, get, logs and delete select on.
- **Order.** A job is a ConfigMap `<name>-sdk-plan` (the steps, the rendered manifests of the steps not yet
  applied, checkpointsRemote) plus the steps' objects. The initializer Jobs are applied at once; the
  training (or tune) step is applied by the first client call that reads the job (`get_job`,
  `wait_for_job_status`, `get_job_logs`, `list_jobs`) after every initializer completed. No controller runs
  in the cluster for this, so a job whose initializers finished waits for any client to look at it.
- **State** comes from each Job's conditions (Complete, Failed with its message) and `active`, a server's
  from its Deployment's available replicas; **logs** from the step's newest pod, every container in order
  (`follow` streams the last one).
- **Errors.** The API's Status object (`code`, `reason`) picks one exception each (`llmft.sdk.errors`): 403
  Forbidden, 404 NotFound, 409 Conflict / AlreadyExists, 422 Invalid; a ResourceQuota or LimitRange refusal (403
  or 422 whose message says `exceeded quota` / `LimitRange`: the API gives it no reason of its own) is
  QuotaExceeded. Each names the resource, the namespace and the fix.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmft.errors import UserError
from llmft.sdk import errors as E
from llmft.sdk import jobs as J
from llmft.sdk.plan import JOB_LABEL, STEP_LABEL, Plan

FIELD_MANAGER = "llmft"
PLAN_SUFFIX = "-sdk-plan"
ROLE_LABEL = "sdk.llmft.dev/role"
# What the charts render: kind -> (API path prefix, apiVersion, plural).
KINDS: dict[str, tuple[str, str, str]] = {
    "ConfigMap": ("/api/v1", "v1", "configmaps"),
    "Secret": ("/api/v1", "v1", "secrets"),
    "Service": ("/api/v1", "v1", "services"),
    "PersistentVolumeClaim": ("/api/v1", "v1", "persistentvolumeclaims"),
    "Job": ("/apis/batch/v1", "batch/v1", "jobs"),
    "Deployment": ("/apis/apps/v1", "apps/v1", "deployments"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networking.k8s.io/v1", "networkpolicies"),
    # The finetune chart's `workload: JobSet` (a cluster without the JobSet CRD answers 404: none listed).
    "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobset.x-k8s.io/v1alpha2", "jobsets"),
}
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, namespace: str | None = None, config_file: str | None = None, context: str | None = None):
        from kubernetes import config as kube_config

        try:
            if config_file is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                kube_config.load_incluster_config()
                from kubernetes.client import ApiClient

                self.api = ApiClient()
                found = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else None
            else:
                self.api = kube_config.new_client_from_config(config_file=config_file, context=context)
                found = _context_namespace(config_file, context)
        except (kube_config.ConfigException, OSError) as error:
            where = config_file or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise UserError(
                f"no Kubernetes configuration ({error}): point KUBECONFIG or Client(config_file=...) at a kubeconfig "
                f"(looked at {where}), or run in a pod with a service account"
            ) from None
        self.namespace = namespace or found or "default"
        self.host = self.api.configuration.host

    # ------------------------------------------------------------------------------------------ HTTP

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        what: str = "",
        stream: bool = False,
    ) -> Any:
        """One API call; JSON answer (or the raw response when `stream`); Status errors become exceptions."""
        headers = {"Accept": "application/json, */*", "Content-Type": content_type}
        method_, url, headers, body_, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(
                method_, url, header_params=headers, body=body_, _request_timeout=None if stream else 60
            )
        except Exception as error:  # noqa: BLE001 - urllib3's connection errors
            from kubernetes.client.exceptions import ApiException

            if isinstance(error, ApiException) and error.status:
                raise self._error(error.status, error.body or "", method, what or path) from None
            raise E.Unreachable(
                f"the Kubernetes API server at {self.host} does not answer ({type(error).__name__}: {error}): check "
                "the kubeconfig's context and your network or VPN",
                resource=what or path,
            ) from None
        if response.status >= 400:
            raise self._error(response.status, response.read().decode("utf-8", "replace"), method, what or path)
        if stream:
            return response.response
        data = response.read()
        return json.loads(data) if data else {}

    def _error(self, status: int, body: str, method: str, what: str) -> E.KubernetesError:
        try:
            status_object = json.loads(body)
        except json.JSONDecodeError:
            status_object = {}
        reason = status_object.get("reason", "")
        message = status_object.get("message", body.strip()[:300])
        namespace = self.namespace
        verb = {"PATCH": "apply", "GET": "read", "DELETE": "delete"}.get(method, method.lower())
        quota = status in (403, 422) and any(
            text in message for text in ("exceeded quota", "LimitRange", "must be less than or equal to")
        )
        if quota:
            return E.QuotaExceeded(
                f"{what} in namespace {namespace}: the namespace's ResourceQuota or LimitRange refuses it ({message}): "
                "ask for fewer resources (gpus_per_node, resources, resources_per_trial) or for more quota "
                f"(kubectl describe quota,limitrange -n {namespace})",
                status,
                reason,
                what,
            )
        if status == 403:
            plural = what.split("/", 1)[0]
            return E.Forbidden(
                f"{verb} {what} in namespace {namespace} is forbidden ({message}): your credentials need a Role "
                f"allowing it (kubectl auth can-i {verb if verb != 'apply' else 'patch'} {plural} -n {namespace})",
                status,
                reason,
                what,
            )
        if status == 404:
            return E.NotFound(
                f"{what} not found in namespace {namespace} ({message}): check the namespace (Client(namespace=...)) "
                "and the name (list_jobs())",
                status,
                reason,
                what,
            )
        if status == 409:
            return E.Conflict(
                f"{verb} {what} in namespace {namespace} conflicts ({message}): another field manager (kubectl, "
                "Helm, another tool) owns these fields; delete the object or give the job another name",
                status,
                reason,
                what,
            )
        if status == 422:
            return E.Invalid(
                f"{what} in namespace {namespace} was rejected as invalid ({message}): an admission rule or an "
                "older API of this cluster refuses it; the message names the field",
                status,
                reason,
                what,
            )
        if status == 401:
            return E.Forbidden(
                f"the API server at {self.host} does not accept the credentials ({message}): renew the "
                "kubeconfig's token or log in again",
                status,
                reason,
                what,
            )
        return E.KubernetesError(
            f"{verb} {what} in namespace {namespace}: HTTP {status} {message}", status, reason, what
        )

    def _path(self, kind: str, name: str | None = None) -> str:
        if kind not in KINDS:
            raise UserError(f"the SDK does not know how to apply a {kind} (it applies {', '.join(KINDS)})")
        prefix, _, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{self.namespace}/{plural}"
        return f"{path}/{name}" if name else path

    def apply(self, manifest: dict) -> dict:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        _, api_version, plural = KINDS.get(kind, ("", "", ""))
        if manifest.get("apiVersion") != api_version:
            raise UserError(f"{kind}/{name}: apiVersion {manifest.get('apiVersion')} is not {api_version}")
        return self.request(
            "PATCH",
            self._path(kind, name),
            query=[("fieldManager", FIELD_MANAGER)],
            body=manifest,
            content_type="application/apply-patch+yaml",
            what=f"{plural}/{name}",
        )

    def _list(self, kind: str, selector: str) -> list[dict]:
        try:
            answer = self.request("GET", self._path(kind), query=[("labelSelector", selector)], what=KINDS[kind][2])
        except E.NotFound:
            return []  # a kind this cluster does not serve (no JobSet CRD) holds nothing of ours
        return answer.get("items") or []

    # ------------------------------------------------------------------------------------------ submit

    def submit(self, plan: Plan, charts: Path) -> None:
        has_initializers = len(plan.steps) > 1
        pending = plan.steps[-1] if has_initializers else None
        record = {
            "name": plan.name,
            "kind": plan.kind,
            "created": time.time(),
            "checkpoints_remote": plan.checkpoints_remote,
            "total_steps": plan.total_steps,
            "steps": [{"name": step.name, "chart": step.chart, "release": step.release} for step in plan.steps],
            "pending": pending.documents if pending else None,
        }
        try:
            self.apply(self._plan_object(plan.name, record))
            for step in plan.steps if not has_initializers else plan.steps[:-1]:
                for manifest in step.documents:
                    self.apply(manifest)
        except E.KubernetesError:
            try:  # leave nothing half-applied behind: the same call can be repeated once the cause is fixed
                self.delete(plan.name)
            except UserError:
                pass
            raise

    def _plan_object(self, name: str, record: dict) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name + PLAN_SUFFIX, "labels": {JOB_LABEL: name, ROLE_LABEL: "plan"}},
            "data": {"plan.json": json.dumps(record)},
        }

    def _record(self, name: str) -> dict:
        try:
            answer = self.request(
                "GET", self._path("ConfigMap", name + PLAN_SUFFIX), what=f"configmaps/{name}{PLAN_SUFFIX}"
            )
        except E.NotFound:
            raise E.JobNotFound(
                f"no job named {name} in namespace {self.namespace} (no ConfigMap {name}{PLAN_SUFFIX}); list_jobs() "
                "shows them"
            ) from None
        return json.loads(answer["data"]["plan.json"])

    # ------------------------------------------------------------------------------------------ read

    def get(self, name: str, with_progress: bool = True, record: dict | None = None) -> J.Job:
        record = record or self._record(name)
        kinds = ["Deployment"] if record["kind"] == "serve" else ["Job", "JobSet"]  # a JobSet over the Job it made
        objects = [obj for kind in kinds for obj in self._list(kind, f"{JOB_LABEL}={name}")]
        by_step = {obj["metadata"].get("labels", {}).get(STEP_LABEL): obj for obj in objects}
        steps = [_step_state(step["name"], by_step.get(step["name"]), record["kind"]) for step in record["steps"]]
        if record.get("pending") and all(s.state == J.SUCCEEDED for s in steps[:-1]):
            for manifest in record["pending"]:
                self.apply(manifest)
            record["pending"] = None
            self.apply(self._plan_object(name, record))
        job = J.Job(
            name=name,
            kind=record["kind"],
            state=J.job_state(steps),
            steps=steps,
            created=record.get("created"),
            checkpoints_remote=record.get("checkpoints_remote"),
        )
        if record["kind"] == "serve":
            job.url = self.service_url(name)
            job.state = J.RUNNING if steps[0].state == J.RUNNING else J.CREATED
        failed = next((s for s in steps if s.state == J.FAILED), None)
        if failed:
            job.reason = f"step {failed.name} failed: {failed.reason or 'its Job failed'}"
        node = steps[-1]
        if with_progress and record["kind"] == "train" and node.started and record.get("checkpoints_remote"):
            try:
                from llmft.sdk.metrics import read_metrics

                rows = read_metrics(record["checkpoints_remote"])
            except Exception:  # noqa: BLE001 - no bucket credentials here, or no answer: state without progress
                rows = []
            job.progress = J.progress_from_rows(rows, record.get("total_steps"), node.started)
        return job

    def list_jobs(self) -> list[J.Job]:
        plans = self._list("ConfigMap", f"{ROLE_LABEL}=plan")
        jobs = []
        for obj in plans:
            record = json.loads(obj["data"]["plan.json"])
            jobs.append(self.get(record["name"], with_progress=False, record=record))
        return jobs

    def step_names(self, name: str) -> list[str]:
        return [step["name"] for step in self._record(name)["steps"]]

    def logs(self, name: str, step: str, follow: bool) -> Iterator[str]:
        pods = self._list_pods(name, step)
        if follow and not pods:
            deadline = time.monotonic() + 300
            while not pods and time.monotonic() < deadline:
                self.get(name, with_progress=False)  # applies the training step once the initializers are done
                time.sleep(2)
                pods = self._list_pods(name, step)
        if not pods:
            return
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        spec = pod.get("spec") or {}
        containers = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
        for index, container in enumerate(containers):
            last = index == len(containers) - 1
            query = [("container", container)] + ([("follow", "true")] if follow and last else [])
            path = f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/log"
            try:
                response = self.request(
                    "GET", path, query=query, what=f"pods/{pod['metadata']['name']}/log", stream=True
                )
            except (E.NotFound, E.KubernetesError) as error:
                if getattr(error, "status", 0) in (400, 404):
                    continue  # a container that has not started
                raise
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if buffer:
                yield buffer.decode("utf-8", "replace")

    def _list_pods(self, name: str, step: str) -> list[dict]:
        answer = self.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/pods",
            query=[("labelSelector", f"{JOB_LABEL}={name},{STEP_LABEL}={step}")],
            what="pods",
        )
        return answer.get("items") or []

    # ------------------------------------------------------------------------------------------ delete

    def delete(self, name: str) -> None:
        self._record(name)
        for kind in KINDS:
            for obj in self._list(kind, f"{JOB_LABEL}={name}"):
                object_name = obj["metadata"]["name"]
                try:
                    self.request(
                        "DELETE",
                        self._path(kind, object_name),
                        query=[("propagationPolicy", "Background")],
                        what=f"{KINDS[kind][2]}/{object_name}",
                    )
                except E.NotFound:
                    pass

    def service_url(self, name: str) -> str:
        return f"http://llm-inference-vllm-{name}.{self.namespace}.svc.cluster.local/v1"

    def bucket(self):
        import contextlib

        return contextlib.nullcontext()


def _context_namespace(config_file: str | None, context: str | None) -> str | None:
    from kubernetes import config as kube_config

    contexts, active = kube_config.list_kube_config_contexts(config_file=config_file)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace")


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _step_state(name: str, obj: dict | None, kind: str) -> J.Step:
    if obj is None:
        return J.Step(name)
    status = obj.get("status") or {}
    step = J.Step(name, started=_timestamp(status.get("startTime")), finished=_timestamp(status.get("completionTime")))
    if obj["kind"] == "Deployment":
        step.state = J.RUNNING if (status.get("availableReplicas") or 0) > 0 else J.PENDING
        return step
    if obj["kind"] == "JobSet":
        return _jobset_state(step, obj)
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        step.state = J.SUCCEEDED
    elif "Failed" in conditions or "FailureTarget" in conditions:
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        step.state = J.FAILED
        step.reason = ": ".join(part for part in (failed.get("reason"), failed.get("message")) if part)
    elif status.get("active") or status.get("startTime"):
        step.state = J.RUNNING
    return step


def _jobset_state(step: J.Step, jobset: dict) -> J.Step:
    """A JobSet's step: its Completed / Failed condition, else running once any of its Jobs runs a pod."""
    status = jobset.get("status") or {}
    step.started = _timestamp(jobset["metadata"].get("creationTimestamp"))
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Completed" in conditions:
        step.state, step.finished = J.SUCCEEDED, _timestamp(conditions["Completed"].get("lastTransitionTime"))
    elif "Failed" in conditions:
        failed = conditions["Failed"]
        step.state, step.finished = J.FAILED, _timestamp(failed.get("lastTransitionTime"))
        step.reason = ": ".join(part for part in (failed.get("reason"), failed.get("message")) if part)
    elif any((job.get("active") or 0) > 0 for job in status.get("replicatedJobsStatus") or []):
        step.state = J.RUNNING
    else:
        step.state = J.PENDING
    return step
