"""One node of a multi-node run: its rank, the rendezvous, and how `accelerate launch` is told about them.

The finetune chart runs `launch_conf.num_nodes` pods of one Indexed Job; Kubernetes gives each pod its
completion index (JOB_COMPLETION_INDEX), which is the node's rank at launch. Every node runs the same
`llmft train CONFIG`; `accelerate launch` starts torchrun's elastic agent with the c10d rendezvous on node
0 (`launch_conf.rendezvous_endpoint`, hosted there: `is_host`), so a replaced pod rejoins and the agents
restart every process together (up to `launch_conf.max_restarts` times), each resuming from the newest
complete checkpoint in the bucket.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field

from llmft import settings
from llmft.errors import UserError
from llmft.finetune.distributed import spans_nodes

RANK_VARIABLE = "JOB_COMPLETION_INDEX"


@dataclass(frozen=True)
class Node:
    rank: int
    count: int
    host: str
    port: int
    max_restarts: int
    join_timeout: int = field(default_factory=lambda: settings.current().rendezvous_timeout)

    def accelerate_settings(self) -> dict:
        """Keys of the resolved accelerate config (the chart's presets say one machine, static rendezvous)."""
        return {
            "num_machines": self.count,
            "machine_rank": self.rank,
            "main_process_ip": self.host,
            "main_process_port": self.port,
            "rdzv_backend": "c10d",
            "same_network": False,
        }

    def launch_arguments(self) -> list[str]:
        conf = f"is_host={int(self.rank == 0)},join_timeout={self.join_timeout}"
        return [
            "--num_machines",
            str(self.count),
            "--machine_rank",
            str(self.rank),
            "--main_process_ip",
            self.host,
            "--main_process_port",
            str(self.port),
            "--rdzv_backend",
            "c10d",
            "--rdzv_conf",
            conf,
            "--max_restarts",
            str(self.max_restarts),
            "--monitor_interval",
            "1",
        ]


def node_from_environment(launch) -> Node:
    """This node of `launch` (a LaunchConf with num_nodes > 1): rank from JOB_COMPLETION_INDEX, checked."""
    key = "finetuning_config.launch_conf"
    if launch.distributed_type is not None and not spans_nodes(launch.distributed_type):
        raise UserError(
            f"{key}.num_nodes: {launch.num_nodes} nodes, but distributed_type {launch.distributed_type} runs on "
            "one node; use auto-ddp or a DeepSpeed preset (distributedType in the chart), or one node"
        )
    endpoint = launch.rendezvous_endpoint
    host, _, port = (endpoint or "").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"{key}.rendezvous_endpoint: required as host:port with num_nodes {launch.num_nodes} (node 0's "
            f"address), got {endpoint!r}"
        )
    text = os.environ.get(RANK_VARIABLE, "")
    if not text.isdigit() or int(text) >= launch.num_nodes:
        raise UserError(
            f"{RANK_VARIABLE} must be this node's index, 0 to {launch.num_nodes - 1} ({key}.num_nodes "
            f"{launch.num_nodes}); Kubernetes sets it in the pods of an Indexed Job, got {text!r}"
        )
    return Node(int(text), launch.num_nodes, host, int(port), launch.max_restarts)


class RendezvousUnreachable(RuntimeError):
    """Node 0's rendezvous did not answer in time (exit status 1: the Job retries the pod)."""


def wait_for_rendezvous(node: Node, timeout: float | None = None) -> None:
    """On nodes other than 0: wait until node 0's rendezvous answers (its pod runs, its name resolves, the port is
    open), so a missing node 0 is named instead of ending in torchrun's anonymous timeout. Node 0 hosts it."""
    if node.rank == 0:
        return
    limit = node.join_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection((node.host, node.port), timeout=5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RendezvousUnreachable(
                    f"node {node.rank} of {node.count}: node 0's rendezvous at {node.host}:{node.port} did not answer "
                    f"within {limit:.0f}s ({error}); missing: node 0 (the pod with completion index 0). Check that it "
                    f"is scheduled and running and that pod-to-pod TCP {node.port} is allowed "
                    "(LLMFT_RENDEZVOUS_TIMEOUT sets the wait)"
                ) from None
        time.sleep(1)


def peer_hosts(node: Node) -> dict[int, str]:
    """The other nodes' pod names when the endpoint has the chart's form `<job>-0.<service>` (else none)."""
    match = re.fullmatch(r"(.+)-0\.([A-Za-z0-9.-]+)", node.host)
    if match is None:
        return {}
    return {rank: f"{match[1]}-{rank}.{match[2]}" for rank in range(1, node.count)}


def wait_for_peers(node: Node, timeout: float | None = None) -> None:
    """On node 0: wait until every other node's pod name resolves (a headless Service publishes a pod's name
    once it has an address), naming the nodes whose pods never came up instead of torchrun's anonymous
    rendezvous timeout."""
    hosts = peer_hosts(node) if node.rank == 0 else {}
    if not hosts:
        return
    limit = node.join_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        missing = [rank for rank, host in hosts.items() if not _resolves(host)]
        if not missing:
            return
        if time.monotonic() >= deadline:
            named = ", ".join(f"node {rank} ({hosts[rank]})" for rank in missing)
            raise RendezvousUnreachable(
                f"node 0 of {node.count}: missing {named}: no address after {limit:.0f}s, so those pods are not "
                "running (Pending? `kubectl describe pod` says why); LLMFT_RENDEZVOUS_TIMEOUT sets the wait"
            )
        time.sleep(1)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def node_rank() -> int:
    """The rank of this process's node in the current rendezvous (torchrun's GROUP_RANK; 0 alone)."""
    return int(os.environ.get("GROUP_RANK", "0") or 0)


def node_count() -> int:
    """Nodes in the current rendezvous (torchrun's GROUP_WORLD_SIZE; 1 alone)."""
    return int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)
