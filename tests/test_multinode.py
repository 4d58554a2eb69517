"""Multi-node training (issue #19): the finetune chart's Indexed Job, run by the local runner as pods (processes)
that share no folder, reach each other by the rendered names (mapped to loopback) and move state only through
the bucket; gloo on the CPU.

Render tests are fast. The DDP training tests share three runs of a tiny model (module fixtures):
1 node x 2 processes, 2 nodes x 1 process, and 2 nodes x 1 process with node 1 SIGKILLed (every process of
that pod, as a container kill does) while a checkpoint upload is under way; one test asserts on all three.
ZeRO-3 has its own pair of runs (1 x 2 and 2 x 1) and its own test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmft.charts import render_chart
from llmft.errors import UserError
from llmft.storage import parse_location
from llmft.storage.transfer import list_objects, read_object
from llmft.sync import scan

CHART = Path(__file__).parent.parent / "charts" / "llm-finetune"
QA = [(f"Say the number {i}.", f"{i}") for i in range(8)]
MAX_STEPS = 8
PACED = {
    "LLMFT_TRANSFER_WORKERS": "1",
    "LLMFT_TRANSFER_MAX_BANDWIDTH": str(1024 * 1024),
    "LLMFT_SYNC_MAX_PENDING": "1",
}


def render(*sets: str):
    return render_chart(CHART, values_files=[], set_values=list(sets), set_string_values=[], release_name="mn")


def test_two_nodes_render_an_indexed_job_and_a_headless_service():
    from harness import render_valid

    documents = render_valid(
        CHART,
        values_files=[],
        set_values=[
            "finetuningNodes=2",
            "finetuningGpus=8",
            "distributedType=auto-deepspeed-stage3",
            "networkPolicy.enabled=true",
        ],
        set_string_values=[],
        release_name="mn",
    ).documents
    job = next(d for d in documents if d["kind"] == "Job")
    service = next(d for d in documents if d["kind"] == "Service")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    # Each node may fail backoffLimit times; one node past that fails the Job (and stops the others).
    assert (job["spec"]["backoffLimitPerIndex"], job["spec"]["maxFailedIndexes"]) == (3, 0)
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"] == "mn-nodes"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "mn"}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "finetune", "operator": "In", "values": [2]}} in rules
    config = yaml.safe_load(next(d for d in documents if d["kind"] == "ConfigMap")["data"]["finetuning_config.yaml"])
    assert config["launch_conf"]["num_nodes"] == 2 and config["launch_conf"]["num_processes"] == 8
    assert config["launch_conf"]["rendezvous_endpoint"] == "mn-0.mn-nodes:29400"
    # One node: the Job and config as before (no Service, no index).
    single = render("finetuningGpus=1").documents
    assert not any(d["kind"] == "Service" for d in single)
    assert "completionMode" not in next(d for d in single if d["kind"] == "Job")["spec"]


def test_workload_jobset_renders_a_valid_jobset_that_restarts_every_node_together():
    """`workload: JobSet`, validated against the published JobSet schema (tests/data/schemas) and its Job as a
    batch/v1 Job; planned for `llmft local` as the JobSet controller would create it."""
    from harness import render_valid

    from llmft.local.pods import SecretSource, plan_pods

    sets = ["workload=JobSet", "finetuningNodes=2", "finetuningGpus=0", "distributedType=auto-ddp"]
    documents = render_valid(
        CHART,
        values_files=[],
        set_values=[*sets, "networkPolicy.enabled=true"],
        set_string_values=[],
        release_name="mn",
    ).documents
    assert sorted(d["kind"] for d in documents) == ["ConfigMap", "JobSet", "NetworkPolicy"]  # its own Service
    jobset = next(d for d in documents if d["kind"] == "JobSet")
    assert jobset["spec"]["network"] == {
        "enableDNSHostnames": True,
        "publishNotReadyAddresses": True,
        "subdomain": "mn-nodes",
    }
    # Any failed node fails its Job at once and the JobSet recreates them all, backoffLimit times; exit 2 does not.
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] == 3
    assert jobset["spec"]["failurePolicy"]["rules"][0]["action"] == "FailJobSet"
    (node,) = jobset["spec"]["replicatedJobs"]
    assert (node["name"], node["replicas"]) == ("node", 1)
    job = node["template"]["spec"]
    assert (job["completionMode"], job["completions"], job["backoffLimit"]) == ("Indexed", 2, 0)
    config = yaml.safe_load(next(d for d in documents if d["kind"] == "ConfigMap")["data"]["finetuning_config.yaml"])
    assert config["launch_conf"]["rendezvous_endpoint"] == "mn-node-0-0.mn-nodes:29400"  # <job>-<index>.<subdomain>
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": "mn"}}}]}
    ]

    plans = plan_pods(documents, Path("/nonexistent"), SecretSource(collect_missing=True))
    assert [(plan.name, plan.index) for plan in plans] == [("mn-node-0", 0), ("mn-node-0", 1)]
    assert [plan.containers[-1].env["JOB_COMPLETION_INDEX"] for plan in plans] == ["0", "1"]
    local = next(text for file, text in plans[1].configmap_files.items() if file.name == "finetuning_config.yaml")
    assert yaml.safe_load(local)["launch_conf"]["rendezvous_endpoint"].startswith("127.0.0.1:")  # node 0, locally
    assert plans[0].backoff_limit_per_index == 3  # maxRestarts, as per-pod retries (logged as such)
    assert any("JobSet failurePolicy" in note for note in plans[0].ignored)


def test_a_preset_that_cannot_span_nodes_fails_at_render():
    with pytest.raises(UserError, match="finetuningNodes: 3 nodes, but distributedType auto-single-process"):
        render("finetuningNodes=3", "distributedType=auto-single-process")


def test_train_refuses_multinode_without_a_node_index(tmp_path, tiny_model_dir):
    from llmft.finetune.distributed import write_launch_files

    write_launch_files("auto-ddp", tmp_path, num_processes=2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, tiny_model_dir) | {"launch_conf": {
        "num_nodes": 2, "rendezvous_endpoint": "mn-0.mn-nodes:29400", "accelerate_config": "accelerate_config.yaml",
        "distributed_type": "auto-ddp"}}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "train", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "JOB_COMPLETION_INDEX must be this node's index" in result.stderr
    # Node 1 whose node 0 never comes up: a clear message naming the missing node, and a retryable failure.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = yaml.safe_load(config.read_text())
    settings["launch_conf"]["rendezvous_endpoint"] = f"127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(settings))
    env |= {"JOB_COMPLETION_INDEX": "1", "LLMFT_RENDEZVOUS_TIMEOUT": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "train", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert f"node 1 of 2: node 0's rendezvous at 127.0.0.1:{port} did not answer within 2s" in result.stderr
    assert "missing: node 0" in result.stderr


@pytest.mark.slow
def test_a_data_error_on_several_nodes_fails_the_job_at_once(bucket, tmp_path, tiny_model_dir, s3_env):
    """Exit status 2 in the training processes (a bad data line) becomes the pod's exit status, which the Job's
    podFailurePolicy makes final: no pod is replaced, the other node is stopped."""
    values = _values(tmp_path, tiny_model_dir, f"{bucket}/experiments/bad", 2, 0)
    (tmp_path / "sft.jsonl").write_text('{"messages": "not a list"}\n')
    settings = yaml.safe_load(values.read_text())
    settings["finetuning_config"]["launch_conf"] = {"max_restarts": 0}
    values.write_text(yaml.safe_dump(settings))
    env = {**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state")}
    process = _local("bad", values, env)
    assert process.wait(timeout=300) == 2
    log = (tmp_path / "bad.log").read_text()
    assert "sft.jsonl:1" in log and "exited with status 2 (a configuration or data error" in log
    assert "which its podFailurePolicy treats as final" in log and "starting a new pod" not in log


def test_node_0_names_the_nodes_whose_pods_never_came_up():
    """The chart's pod names do not resolve on this machine (no cluster DNS), as a Pending pod's name does not."""
    from llmft.finetune.multinode import Node, RendezvousUnreachable, peer_hosts, wait_for_peers

    node = Node(rank=0, count=3, host="big-0.big-nodes", port=29400, max_restarts=3)
    assert peer_hosts(node) == {1: "big-1.big-nodes", 2: "big-2.big-nodes"}
    with pytest.raises(RendezvousUnreachable, match=r"node 0 of 3: missing node 1 \(big-1.big-nodes\), node 2 "):
        wait_for_peers(node, timeout=1)
    wait_for_peers(Node(rank=0, count=2, host="127.0.0.1", port=29400, max_restarts=3))  # the local runner's form


# ---------------------------------------------------------------------------------------------- training


def _config(folder: Path, model_dir: Path, max_steps: int = MAX_STEPS) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "sft.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(data)}]}},
        "training_args": {
            "learning_rate": 5e-3,
            "lr_scheduler_type": "linear",
            "max_steps": max_steps,
            "logging_steps": 1,
            "save_steps": 2,
            "save_total_limit": 2,
            "seed": 7,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(model_dir), "resume_from_checkpoint": "auto"},
        "sft_args": {"max_seq_length": 128},
    }


def _values(
    folder: Path,
    model_dir: Path,
    remote: str,
    nodes: int,
    gpus: int,
    preset: str = "auto-ddp",
    max_steps: int = MAX_STEPS,
) -> Path:
    config = _config(folder, model_dir, max_steps)
    values = {
        "basemodel": str(model_dir),
        "checkpointsRemote": remote,
        "finetuningNodes": nodes,
        "finetuningGpus": gpus,
        "distributedType": preset,
        "memoryPerGpu": 4,
        "cpusPerGpu": 1,
        "finetuning_config": {k: v for k, v in config.items() if k != "run_conf"}
        | {"run_conf": {"resume_from_checkpoint": "auto", "model_args": {"dtype": "fp32"}}},
    }
    path = folder / f"values-{nodes}x{gpus}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _local(name: str, values: Path, env: dict) -> subprocess.Popen:
    log = open(values.parent / f"{name}.log", "w")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen(
        [sys.executable, "-m", "llmft", "local", str(CHART), "-f", str(values), "--name", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _final_weights(remote: str) -> dict:
    from safetensors.torch import load

    return load(read_object(parse_location(remote).child("checkpoint-final/model.safetensors")))


def _node_processes(state_dir: Path, index: int) -> list[int]:
    """Every process of one local pod (the agent and its workers): they carry its index and our state dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LLMFT_STATE_DIR={state_dir}".encode() in environ and f"JOB_COMPLETION_INDEX={index}".encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory, s3_server, tiny_model_dir):
    """The three runs, each through `llmft local charts/llm-finetune` against the test S3 server."""
    folder = tmp_path_factory.mktemp("multinode")
    bucket = "multinode"
    s3_server.create_bucket(bucket)
    env = {**os.environ, **s3_server.environment(), "LLMFT_STATE_DIR": str(folder / "state")}
    with pytest.MonkeyPatch.context() as patch:  # this process reads the bucket too
        for key, value in s3_server.environment().items():
            patch.setenv(key, value)
        yield _three_runs(folder, bucket, env, tiny_model_dir)


def _three_runs(folder: Path, bucket: str, env: dict, tiny_model_dir: Path):
    remotes = {name: f"{bucket}/experiments/{name}" for name in ("single", "pair", "killed")}
    logs: dict[str, str] = {}
    # The two uninterrupted runs one after the other (2 cores), then the one with a kill.
    for name, nodes, gpus in (("single", 1, 2), ("pair", 2, 0)):
        process = _local(name, _values(folder / name, tiny_model_dir, remotes[name], nodes, gpus), env)
        assert process.wait(timeout=900) == 0, (folder / name / f"{name}.log").read_text()[-6000:]
        logs[name] = (folder / name / f"{name}.log").read_text()
    killed_env = {**env, **PACED, "LLMFT_STATE_DIR": str(folder / "state-killed")}
    values = _values(folder / "killed", tiny_model_dir, remotes["killed"], 2, 0)
    process = _local("killed", values, killed_env)
    try:
        return _kill_node_during_upload(process, folder, remotes, logs)
    finally:
        if process.poll() is None:
            process.terminate()  # `llmft local` stops its pods
            process.wait(timeout=60)


def _kill_node_during_upload(process: subprocess.Popen, folder: Path, remotes: dict, logs: dict):
    remote = parse_location(remotes["killed"])
    seen: dict = {}
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        run = scan(remote)
        if run.complete and any(step > max(run.complete) for step in run.incomplete):
            seen = {"complete": sorted(run.complete), "incomplete": sorted(run.incomplete)}
            for pid in _node_processes(folder / "state-killed", 1):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    assert seen, "the run never had a checkpoint upload under way after a complete one"
    assert process.wait(timeout=900) == 0, (folder / "killed" / "killed.log").read_text()[-6000:]
    logs["killed"] = (folder / "killed" / "killed.log").read_text()
    return remotes, logs, seen


@pytest.mark.slow
def test_two_nodes_train_like_one_keep_every_ranks_files_and_survive_a_killed_node(runs):
    """One test over the three runs (they are built once, by the worker that takes it)."""
    remotes, logs, seen = runs
    # 2 nodes x 1 process end with the weights of 1 node x 2 processes (DDP).
    single, pair = _final_weights(remotes["single"]), _final_weights(remotes["pair"])
    assert single.keys() == pair.keys()
    assert all(bool((single[key] == pair[key]).all()) for key in single)
    assert "2 pods (Indexed Job)" in logs["pair"]
    # Every complete checkpoint holds both ranks' files and both nodes' parts.
    for name in ("pair", "killed"):
        run = scan(parse_location(remotes[name]))
        assert run.finished()[0] and run.complete, name
        for step in run.complete:
            objects = list_objects(parse_location(remotes[name]).child(f"checkpoint-{step}"))
            assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json", "model.safetensors"} <= set(objects)
            assert {".llmft-parts/node-0.json", ".llmft-parts/node-1.json"} <= set(objects)
    # Node 1 killed during an upload: the group restarted and ended with the uninterrupted weights, resuming from
    # the newest complete checkpoint of when the node died (the one under way was not complete yet).
    killed = _final_weights(remotes["killed"])
    assert all(bool((killed[key] == pair[key]).all()) for key in pair)
    assert "index 1 pod failed with exit code" in logs["killed"]
    resumed = re.findall(rf"resuming from s3://{remotes['killed']}/checkpoint-(\d+) ", logs["killed"])
    assert resumed and all(int(step) >= seen["complete"][-1] for step in resumed), (resumed, seen)


@pytest.fixture(scope="module")
def zero3_runs(tmp_path_factory, s3_server, tiny_model_dir):
    """ZeRO-3 (weights, gradients and optimizer states sharded over the ranks) on 1 node x 2 and 2 nodes x 1, the
    latter as a JobSet (run locally as the JobSet controller would run it)."""
    folder = tmp_path_factory.mktemp("multinode-zero3")
    bucket = "multinode-zero3"
    s3_server.create_bucket(bucket)
    env = {**os.environ, **s3_server.environment(), "LLMFT_STATE_DIR": str(folder / "state")}
    remotes = {name: f"{bucket}/experiments/{name}" for name in ("single", "pair")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.environment().items():
            patch.setenv(key, value)
        for name, nodes, gpus in (("single", 1, 2), ("pair", 2, 0)):
            # 4 steps: two complete checkpoints of every rank's shards (ZeRO-3 start-up is the slow part here).
            workload = "JobSet" if nodes > 1 else "Job"
            values = _values(folder / name, tiny_model_dir, remotes[name], nodes, gpus, "auto-deepspeed-stage3", 4)
            values.write_text(yaml.safe_dump({**yaml.safe_load(values.read_text()), "workload": workload}))
            process = _local(name, values, env)
            try:
                assert process.wait(timeout=600) == 0, (folder / name / f"{name}.log").read_text()[-6000:]
            finally:
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=60)
        yield remotes, (folder / "pair" / "pair.log").read_text()


@pytest.mark.slow
def test_two_nodes_with_zero3_train_the_weights_of_one_node_and_keep_every_shard(zero3_runs):
    remotes, pair_log = zero3_runs
    single, pair = _final_weights(remotes["single"]), _final_weights(remotes["pair"])
    assert single.keys() == pair.keys() and all(bool((single[key] == pair[key]).all()) for key in single)
    assert "Job/pair-node-0: 2 pods (Indexed Job)" in pair_log  # the JobSet's Job, <jobset>-<replicated job>-0
    run = scan(parse_location(remotes["pair"]))
    assert run.finished()[0] and run.complete
    for step in run.complete:
        objects = set(list_objects(parse_location(remotes["pair"]).child(f"checkpoint-{step}")))
        for rank in (0, 1):  # each rank's optimizer and weight shards, written on its own node
            assert f"global_step{step}/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" in objects
            assert f"global_step{step}/zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in objects
