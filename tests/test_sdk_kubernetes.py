"""The SDK's Kubernetes backend against tests/k8s_standin.py.

No Kubernetes API server can run on this machine, so these tests talk to a local stand-in HTTP server that speaks
the API's wire format for the calls the backend makes (server-side apply PATCH, get, list with labelSelector,
delete, pod logs, Status error objects), through the real `kubernetes` client and a real kubeconfig file. What a
cluster's controllers would do (a Job completing, its pod logging) the tests set on the stand-in.
"""

from __future__ import annotations

import pytest
from k8s_standin import KubernetesStandIn

from llmft.charts import render_chart
from llmft.errors import UserError
from llmft.finetune.config import LoraKwargs, PeftConf, TrainingArgs
from llmft.sdk import errors as E
from llmft.sdk.plan import JOB_LABEL, STEP_LABEL, charts_root

NS = "team-a"
HUB_MODEL = "hf://org/tiny"
DATA = "default-bucket/datasets/chat/train.jsonl"
START = "2026-12-02T10:00:00Z"
COMPLETE = {"type": "Complete", "status": "True"}
FAILED = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 2"}
FORBIDDEN = 'jobs.batch "lora-a-model" is forbidden: User "me" cannot patch resource "jobs"'
QUOTA = 'jobs.batch "lora-a-model" is forbidden: exceeded quota: gpu, requested: nvidia.com/gpu=2'
LIMIT = 'Job.batch "lora-a-model" is invalid: spec.template: Forbidden: must be less than or equal to memory limit'
INVALID = 'Job.batch "lora-a-model" is invalid: spec.completions: Invalid value'
CONFLICT = 'Apply failed with 1 conflict: conflict with "kubectl": .spec'


@pytest.fixture
def standin():
    server = KubernetesStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def client(standin, tmp_path):
    from llmft import Client

    return Client(
        "kubernetes",
        config_file=standin.kubeconfig(tmp_path / "kubeconfig"),
        values={"bucketStorageHost": "http://minio.storage:80"},
    )


def train(client, name="lora-a", **options):
    return client.train(
        HUB_MODEL,
        [DATA],
        name=name,
        training_args=TrainingArgs(max_steps=10, learning_rate=1e-4),
        peft_conf=PeftConf(peft_type="LORA", peft_kwargs=LoraKwargs(r=8)),
        gpus_per_node=2,
        resources={"cpu": 8, "memory": "64Gi"},
        merge=True,
        **options,
    )


def applied_objects(standin, job: str) -> list[dict]:
    return [m for m in standin.applied if (m["metadata"].get("labels") or {}).get(JOB_LABEL) == job]


def test_namespace_comes_from_the_kubeconfig_context(client):
    assert client.namespace == NS


def test_train_applies_the_initializer_then_the_rendered_finetune_chart(client, standin):
    name = train(client)
    assert name == "lora-a"
    applies = [r for r in standin.requests if r[0] == "PATCH"]
    assert all(r[2] == {"fieldManager": "llmft"} and r[3] == "application/apply-patch+yaml" for r in applies)
    # the model initializer's objects are applied at once, exactly as the chart renders them
    plan = client._backend._record(name)
    charts = charts_root()
    model_values = {
        "bucketStorageHost": "http://minio.storage:80",
        "modelID": HUB_MODEL,
        "bucketModelPath": "default-bucket/models/org/tiny",
        "labels": {JOB_LABEL: name, STEP_LABEL: "model-initializer"},
        "annotations": {"sdk.llmft.dev/order": "0"},
    }
    expected = render_chart(
        charts / "download-model-to-bucket", model_values, release_name=f"{name}-model", namespace=NS
    )
    job_objects = [
        m for m in applied_objects(standin, name) if m["kind"] != "ConfigMap" or "sdk-plan" not in m["metadata"]["name"]
    ]
    assert job_objects == expected.documents
    assert standin.get(NS, "jobs", "lora-a-model")["metadata"]["labels"][STEP_LABEL] == "model-initializer"
    assert standin.get(NS, "jobs", "lora-a") is None  # training waits for the initializer

    assert client.get_job(name).state == "Created"
    standin.set_status(NS, "jobs", "lora-a-model", {"startTime": START, "active": 1})
    job = client.get_job(name)
    assert [(s.name, s.state) for s in job.steps] == [("model-initializer", "Running"), ("node-0", "Pending")]
    assert job.state == "Running"

    standin.set_status(
        NS,
        "jobs",
        "lora-a-model",
        {"startTime": START, "conditions": [COMPLETE]},
    )
    job = client.get_job(name)  # reading the job applies the training step
    finetune = standin.get(NS, "jobs", "lora-a")
    assert finetune is not None and plan["pending"] is not None
    finetune_values = {
        "bucketStorageHost": "http://minio.storage:80",
        "basemodel": "default-bucket/models/org/tiny",
        "checkpointsRemote": "default-bucket/experiments/lora-a",
        "mergeAdapter": True,
        "finetuningGpus": 2,
        "distributedType": "auto-ddp",
        "cpusPerGpu": 4,
        "memoryPerGpu": 32,
        "finetuning_config": {
            "method": "sft",
            "training_args": {"max_steps": 10, "learning_rate": 1e-4},
            "peft_conf": {"peft_type": "LORA", "peft_kwargs": {"r": 8}},
            "data_conf": {"training_data": {"datasets": [{"path": DATA}]}},
        },
        "labels": {JOB_LABEL: name, STEP_LABEL: "node-0"},
        "annotations": {
            "sdk.llmft.dev/kind": "train",
            "sdk.llmft.dev/checkpoints-remote": "default-bucket/experiments/lora-a",
            "sdk.llmft.dev/total-steps": "10",
            "sdk.llmft.dev/order": "1",
        },
    }
    rendered = render_chart(charts / "llm-finetune", finetune_values, release_name=name, namespace=NS).documents
    applied = [m for m in applied_objects(standin, name) if m["metadata"]["name"] in ("lora-a", "lora-a-config")]
    assert applied == rendered
    config = next(d for d in rendered if d["kind"] == "ConfigMap")["data"]["finetuning_config.yaml"]
    assert "model: default-bucket/models/org/tiny" in config
    assert "checkpoints_remote: default-bucket/experiments/lora-a" in config
    pod = next(d for d in rendered if d["kind"] == "Job")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert client._backend._record(name)["pending"] is None  # applied once


def test_state_logs_list_and_delete(client, standin):
    name = train(client)
    standin.set_status(NS, "jobs", "lora-a-model", {"conditions": [COMPLETE]})
    client.get_job(name)
    standin.set_status(NS, "jobs", "lora-a", {"startTime": START, "active": 1})
    standin.add_pod(
        NS, "lora-a-xyz", {JOB_LABEL: name, STEP_LABEL: "node-0"}, {"finetune": "loading\nstep 1/10, loss 2.0\n"}
    )
    standin.add_pod(
        NS,
        "lora-a-model-abc",
        {JOB_LABEL: name, STEP_LABEL: "model-initializer"},
        {"download-model": "uploaded 3 files\n"},
    )
    assert list(client.get_job_logs(name)) == ["loading", "step 1/10, loss 2.0"]
    assert list(client.get_job_logs(name, step="model-initializer", follow=True)) == ["uploaded 3 files"]
    follow = [r for r in standin.requests if r[1].endswith("/log") and r[2].get("follow") == "true"]
    assert follow and follow[-1][2]["container"] == "download-model"
    assert [job.name for job in client.list_jobs()] == [name]
    assert client.get_job(name).state == "Running"

    standin.set_status(
        NS,
        "jobs",
        "lora-a",
        {
            "startTime": "2026-12-02T10:00:00Z",
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 2"}
            ],
        },
    )
    with pytest.raises(
        E.JobFailed, match=r"(?s)step node-0 failed: PodFailurePolicy: exit code 2.*step 1/10, loss 2.0"
    ):
        client.wait_for_job_status(name, timeout=5, polling_interval=0.1)

    client.delete_job(name)
    deletes = {r[1].rsplit("/", 1)[-1] for r in standin.requests if r[0] == "DELETE"}
    assert {"lora-a", "lora-a-config", "lora-a-model", "lora-a-sdk-plan"} <= deletes
    with pytest.raises(E.JobNotFound):
        client.get_job(name)


def test_a_jobset_run_is_applied_and_followed_by_its_jobset_state(tmp_path):
    """`values={"workload": "JobSet"}` on a cluster with the JobSet CRD: the training step is the chart's JobSet,
    and its state is the JobSet's (a failed child Job that the JobSet restarts is not a failed run)."""
    from llmft import Client

    standin = KubernetesStandIn(with_jobsets=True).start()
    try:
        client = Client("kubernetes", config_file=standin.kubeconfig(tmp_path / "kubeconfig"))
        options = {"nodes": 2, "gpus_per_node": 8, "values": {"workload": "JobSet"}}
        name = client.train("default-bucket/models/tiny", [DATA], name="multi", **options)
        jobset = standin.get(NS, "jobsets", "multi")
        assert jobset is not None and standin.get(NS, "jobs", "multi") is None
        assert jobset["metadata"]["labels"][STEP_LABEL] == "node-0"
        assert client.get_job(name).state == "Created"
        # The controller made the Job, whose node failed; the JobSet restarts every node: still running.
        child = {
            "name": "multi-node-0",
            "labels": jobset["spec"]["replicatedJobs"][0]["template"]["metadata"]["labels"],
        }
        standin.objects[(NS, "jobs", "multi-node-0")] = {
            "kind": "Job",
            "metadata": child,
            "status": {"conditions": [FAILED]},
        }
        standin.set_status(NS, "jobsets", "multi", {"replicatedJobsStatus": [{"name": "node", "active": 1}]})
        assert client.get_job(name).state == "Running"
        completed = {"type": "Completed", "status": "True", "lastTransitionTime": "2026-12-02T11:00:00Z"}
        standin.set_status(NS, "jobsets", "multi", {"conditions": [completed]})
        assert client.get_job(name).state == "Complete"
        client.delete_job(name)
        assert standin.get(NS, "jobsets", "multi") is None
    finally:
        standin.stop()


def test_serve_applies_the_inference_chart_and_returns_the_service_url(client, standin):
    url = client.serve(model="default-bucket/experiments/lora-a/checkpoint-final", name="chat")
    assert url == f"http://llm-inference-vllm-chat.{NS}.svc.cluster.local/v1"
    kinds = sorted(m["kind"] for m in applied_objects(standin, "chat"))
    assert kinds == ["ConfigMap", "Deployment", "Service"]


@pytest.mark.parametrize(
    ("code", "reason", "message", "error", "says"),
    [
        (
            403,
            "Forbidden",
            'jobs.batch "lora-a-model" is forbidden: User "me" cannot patch resource "jobs"',
            E.Forbidden,
            "kubectl auth can-i patch jobs -n team-a",
        ),
        (404, "NotFound", 'namespaces "team-a" not found', E.NotFound, "check the namespace"),
        (
            409,
            "Conflict",
            'Apply failed with 1 conflict: conflict with "kubectl": .spec',
            E.Conflict,
            "another field manager",
        ),
        (
            403,
            "Forbidden",
            'jobs.batch "lora-a-model" is forbidden: exceeded quota: gpu, requested: nvidia.com/gpu=2',
            E.QuotaExceeded,
            "kubectl describe quota,limitrange -n team-a",
        ),
        (
            422,
            "Invalid",
            'Job.batch "lora-a-model" is invalid: spec.template: Forbidden: must be less than or equal to memory limit',
            E.QuotaExceeded,
            "ask for fewer resources",
        ),
        (
            422,
            "Invalid",
            'Job.batch "lora-a-model" is invalid: spec.completions: Invalid value',
            E.Invalid,
            "the message names the field",
        ),
    ],
)
def test_api_errors_become_one_clear_exception_each(client, standin, code, reason, message, error, says):
    standin.fail("PATCH", "/jobs/lora-a-model", code, reason, message)
    with pytest.raises(error) as raised:
        train(client)
    text = str(raised.value)
    assert "jobs/lora-a-model" in text and says in text and message in text
    assert raised.value.status == code
    assert isinstance(raised.value, UserError)
    assert standin.get(NS, "configmaps", "lora-a-sdk-plan") is None  # nothing half-applied is left


def test_a_conflict_with_another_manager_is_not_forced(client, standin):
    standin.managers[(NS, "configmaps", "lora-a-sdk-plan")] = "helm"
    with pytest.raises(E.Conflict, match='configmaps/lora-a-sdk-plan.*conflict with "helm"'):
        train(client)
    assert all(r[2].get("force") is None for r in standin.requests if r[0] == "PATCH")


def test_bad_arguments_fail_before_any_api_call(client, standin, tmp_path):
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    (model_folder / "config.json").write_text("{}")
    with pytest.raises(UserError, match="finetuning_config.training_args.max_stepz: unknown key"):
        client.train(HUB_MODEL, [DATA], name="bad", training_args={"max_stepz": 1})
    with pytest.raises(UserError, match="a folder on this machine, which the cluster's pods cannot read"):
        client.train(str(model_folder), [DATA], name="bad")
    assert [r for r in standin.requests if r[0] != "GET"] == []


def test_unreachable_server_names_the_host(tmp_path):
    from llmft import Client

    server = KubernetesStandIn()
    config = server.kubeconfig(tmp_path / "kubeconfig")
    server.server.server_close()  # nobody listens on that port any more
    client = Client("kubernetes", config_file=config)
    with pytest.raises(E.Unreachable, match="does not answer"):
        client.list_jobs()
