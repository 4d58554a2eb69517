"""A shaped network for the benchmarks' S3 server: its own network namespace behind a veth pair.

On loopback a single stream saturates the "network" and the server shares the training's cores,
so parallel transfers cannot help and the figures describe the benchmark, not a cluster. A node
talking to S3 sees a round trip of tens of milliseconds and tens of MiB/s per connection. So:

- the server (`weed mini`) runs in a network namespace of its own, reached through a veth pair
  whose two ends are capped with `tc ... tbf` (this kernel has tbf and htb, not netem): the link;
- inside the namespace, `benchmarks.delay_relay` sits in front of the server's S3 port, adding the
  one-way delay to every byte in both directions and a per-connection bandwidth cap (netem, the
  usual way to add delay, is missing here);
- server and relay run pinned to `server_cpus` (taskset), off the cores the benchmark measures.

Everything is set up and torn down by `shaped_server`; `unavailable()` says why it cannot be
(not root, no `ip`/`tc`, namespaces refused), and the benchmarks then fall back to loopback and
say so in their results.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class Link:
    """A node-to-S3 path: total capacity, one connection's share, and the round trip."""

    capacity: float = 64 * MIB  # bytes/s, each direction (tbf on the veth)
    per_connection: float = 16 * MIB  # bytes/s per TCP connection and direction (the relay)
    rtt_ms: float = 30.0  # round trip added by the relay (half each way)

    def describe(self) -> str:
        return (
            f"{self.capacity / MIB:.0f} MiB/s link (tc tbf on a veth pair), {self.per_connection / MIB:.0f} "
            f"MiB/s per connection and {self.rtt_ms:.0f} ms round trip (a delaying TCP relay)"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why a shaped link cannot be set up here (None: it can)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and tc need root"
    for tool in ("ip", "tc", "taskset"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"llmftprobe{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"`ip netns add` was refused ({error.stderr.strip() or error.returncode})"
    _run("ip", "netns", "del", probe)
    return None


def _tbf(device: str, rate: float, netns: str | None = None) -> None:
    prefix = ("ip", "netns", "exec", netns) if netns else ()
    burst = max(64 * 1024, int(rate / 100))  # 10 ms of traffic
    _run(
        *prefix,
        "tc",
        "qdisc",
        "replace",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        f"{int(rate * 8)}bit",
        "burst",
        str(burst),
        "latency",
        "50ms",
    )


@contextlib.contextmanager
def namespace_link(link: Link):
    """A namespace joined to this one by a veth pair capped at `link.capacity` both ways.

    Yields (namespace, host address, namespace address); deleting the namespace at the end
    removes both veth ends and their qdiscs.
    """
    tag = secrets.token_hex(3)
    name, host_dev, ns_dev = f"llmft{tag}", f"lh{tag}", f"ln{tag}"
    # A /30 in 10.x.y.0/16 picked at random: several benchmarks may run at once on one machine.
    octets = (200 + secrets.randbelow(50), secrets.randbelow(256), 4 * secrets.randbelow(63))
    host_ip = f"10.{octets[0]}.{octets[1]}.{octets[2] + 1}"
    ns_ip = f"10.{octets[0]}.{octets[1]}.{octets[2] + 2}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "link", "add", host_dev, "type", "veth", "peer", "name", ns_dev)
        _run("ip", "link", "set", ns_dev, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_dev)
        _run("ip", "link", "set", host_dev, "up")
        _run("ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_dev)
        _run("ip", "netns", "exec", name, "ip", "link", "set", ns_dev, "up")
        _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        _tbf(host_dev, link.capacity)  # to the server: uploads
        _tbf(ns_dev, link.capacity, netns=name)  # from the server: downloads
        yield name, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def shaped_server(work: Path, link: Link, server_cpus: str = "1"):
    """A SeaweedFS server in its own namespace behind `link`, pinned to `server_cpus`; yields it started."""
    from llmft.storage.seaweed import SeaweedServer, free_ports

    with namespace_link(link) as (name, _host_ip, ns_ip):
        pin = ("taskset", "-c", server_cpus)
        server = SeaweedServer(
            work / "s3",
            access_key="bench-" + secrets.token_hex(4),
            secret_key=secrets.token_hex(16),
            log_path=work / "weed.log",
            command_prefix=("ip", "netns", "exec", name, *pin),
        )
        taken = set(server.reserve_ports().values())
        relay_port = next(port for port in free_ports(len(taken) + 1) if port not in taken)
        server.public_endpoint = f"http://{ns_ip}:{relay_port}"
        relay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                *pin,
                sys.executable,
                "-m",
                "benchmarks.delay_relay",
                f"{ns_ip}:{relay_port}",
                f"127.0.0.1:{server.ports['s3.port']}",
                "--one-way-ms",
                str(link.rtt_ms / 2),
                "--per-connection",
                str(link.per_connection),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if relay.stdout.readline().strip() != "ready":
                raise RuntimeError("the delaying relay did not start")
            server.start(keep_ports=True)
            yield server
        finally:
            server.stop()
            relay.kill()
            relay.wait(timeout=30)


def pin_to(cpus: set[int]) -> set[int] | None:
    """Pin this process's calling thread (and the threads it starts later) to `cpus`; return the old set."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    old = os.sched_getaffinity(0)
    usable = cpus & old
    if usable:
        os.sched_setaffinity(0, usable)
    return old
