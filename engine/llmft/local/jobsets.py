"""A JobSet as the local runner runs it: the Jobs and the headless Service its controller would create.

For each replicated job `r` with `replicas` n, the JobSet controller creates the Jobs `<jobset>-r-<i>` (i < n),
gives their pods the hostnames `<job>-<index>` on the subdomain `spec.network.subdomain` (default: the JobSet's
name) and creates a headless Service of that name. The runner then runs them as it runs any Job, their pods
reaching each other by those names (`pods.HostMap`).

One difference is named in the plan's ignored settings: the controller recreates every Job when one fails
(`failurePolicy.maxRestarts` times); locally a failed pod is retried on its own as many times, and rejoins
the others (the engine's elastic rendezvous restarts every rank with it).
"""

from __future__ import annotations

import copy

JOBSET_KIND = "JobSet"
RESTART_NOTE = "JobSet failurePolicy (locally a failed pod is retried on its own, up to maxRestarts times)"


def expand_jobsets(documents: list[dict]) -> tuple[list[dict], set[str]]:
    """`documents` with every JobSet replaced by its Jobs and, when it has DNS hostnames, its headless Service;
    and the names of those Jobs."""
    expanded: list[dict] = []
    from_jobsets: set[str] = set()
    for doc in documents:
        if doc.get("kind") != JOBSET_KIND:
            expanded.append(doc)
            continue
        created = _jobs_and_service(doc)
        from_jobsets |= {job["metadata"]["name"] for job in created if job["kind"] == "Job"}
        expanded += created
    return expanded, from_jobsets


def _jobs_and_service(jobset: dict) -> list[dict]:
    name = jobset["metadata"]["name"]
    spec = jobset.get("spec") or {}
    network = spec.get("network") or {}
    subdomain = network.get("subdomain") or name
    hostnames = network.get("enableDNSHostnames", True)
    restarts = int((spec.get("failurePolicy") or {}).get("maxRestarts", 0))
    documents: list[dict] = []
    ports: set[int] = set()
    for replicated in spec.get("replicatedJobs") or []:
        for index in range(int(replicated.get("replicas", 1))):
            template = copy.deepcopy(replicated["template"])
            job_spec = template["spec"]
            pod = job_spec["template"]["spec"]
            if hostnames:
                pod["subdomain"] = subdomain
            for container in pod.get("containers", []):
                ports |= {int(port["containerPort"]) for port in container.get("ports", [])}
            if job_spec.get("completionMode") == "Indexed":
                job_spec.pop("backoffLimit", None)  # the per-index limit alone governs, as with the Job workload
                job_spec["backoffLimitPerIndex"] = restarts
            else:
                job_spec["backoffLimit"] = restarts
            metadata = {**(template.get("metadata") or {}), "name": f"{name}-{replicated['name']}-{index}"}
            documents.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec})
    if hostnames:
        service_ports = [{"port": port} for port in sorted(ports)]
        service = {"clusterIP": "None", "ports": service_ports}
        documents.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": subdomain}, "spec": service})
    return documents
