"""A real Ray cluster on one machine: each node in its own Linux network namespace.

A switch namespace holds a bridge; every node namespace (head, workers, client) has one veth link to
it, an address in 10.77.0.0/24 and no route anywhere else. Nodes run `ray start` inside their
namespace (their own temp dir, so `ray` commands never see another node's files); the client side
runs in a thread that entered the client namespace (network namespaces are per thread), so the
test's own clients (the openai SDK, websockets) connect from there. Everything is torn down on close,
and a stale cluster of an earlier, killed run is removed first. Needs root (CI runs as root).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
RAY_PORT = 6379
HTTP_PORT = 8000
SERVE_YAML = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve.yaml"
DIRECT_INGRESS_PORTS = (30000, 31000)  # Ray Serve's range for replicas' own HTTP listeners (its default)


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def can_make_namespaces() -> str | None:
    """None where this process can build the cluster, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


def serve_config(path: Path, cpus: int = 1, **options) -> Path:
    """deploy/ray/serve.yaml written to path with `cpus` per replica, no autoscaling, and the given
    deployment options (num_replicas, autoscaling_config, ...)."""
    import yaml  # Ray's dependency: only ever used with Ray installed

    config = yaml.safe_load(SERVE_YAML.read_text())
    deployment = config["applications"][0]["deployments"][0]
    deployment["ray_actor_options"] = {"num_cpus": cpus}
    deployment.pop("autoscaling_config")
    deployment.update(options)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def kill_netns(netns: str) -> None:
    """kill -9 every process in a network namespace."""
    for pid in sh("ip", "netns", "pids", netns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


class Node:
    def __init__(self, prefix: str, name: str, address: str) -> None:
        self.name, self.address = name, address
        self.netns = f"{prefix}-{name}"
        self.link = f"v-{name}"  # its veth end on the switch side

    def pids(self) -> list[int]:
        out = sh("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(pid) for pid in out.split()]

    def kill(self) -> None:
        """kill -9 everything running in the node: the node dies as a machine would."""
        kill_netns(self.netns)


class Cluster:
    """Namespaces for a head, `workers` and a client; `start_ray` brings Ray up on the head and workers."""

    def __init__(self, workers: int = 2, env: dict[str, str] | None = None, prefix: str = "sasr-t") -> None:
        """prefix names the namespaces (PREFIX-head, ...) and the temp dir: two clusters with different
        prefixes can run side by side."""
        self.prefix = prefix
        self.head = Node(prefix, "head", f"{SUBNET}.1")
        self.workers = [Node(prefix, f"w{i + 1}", f"{SUBNET}.{i + 2}") for i in range(workers)]
        self.client = Node(prefix, "client", f"{SUBNET}.100")
        # Ray's token auth off: the namespaces are reachable from nowhere else, and a token a local
        # `ray.init()` (make serve-cluster) left in ~/.ray would otherwise switch it on for some nodes.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}
        self.root = Path(f"/tmp/{prefix}-ray")
        self.switch = f"{prefix}-sw"
        self._client_thread: ClientThread | None = None

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers, self.client]

    @property
    def url(self) -> str:
        return f"http://{self.head.address}:{HTTP_PORT}"

    def create(self) -> None:
        teardown_stale(self.prefix)
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for node in self.nodes:
            sh("ip", "netns", "add", node.netns)
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            sh("ip", "-n", self.switch, "link", "add", node.link, "type", "veth", "peer", "name", "eth0",
               "netns", node.netns)
            sh("ip", "-n", self.switch, "link", "set", node.link, "master", "br0", "up")
            sh("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            sh("ip", "-n", node.netns, "link", "set", "eth0", "up")

    def run(self, node: Node, *args: str, timeout: float = 120, env: dict | None = None) -> str:
        """A command inside a node's namespace; its output (RuntimeError with all it printed if it fails)."""
        proc = subprocess.run(["ip", "netns", "exec", node.netns, *args], capture_output=True, text=True,
                              timeout=timeout, env={**self.env, **(env or {})}, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode} on {node.name}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def ray(self, node: Node, *args: str, timeout: float = 120) -> str:
        return self.run(node, str(Path(sys.executable).parent / "ray"), *args, timeout=timeout)

    def start_ray(self, cpus_per_worker: int = 1) -> None:
        """The head schedules no replicas (0 CPUs): each replica lands on a worker node."""
        common = ["--disable-usage-stats", "--include-dashboard=false"]
        self.ray(self.head, "start", "--head", f"--node-ip-address={self.head.address}", f"--port={RAY_PORT}",
                 "--num-cpus=0", f"--temp-dir={self.root / 'head'}", *common)
        for node in self.workers:
            self.start_worker(node, cpus_per_worker)

    def start_worker(self, node: Node, cpus: int = 1) -> None:
        self.ray(node, "start", f"--address={self.head.address}:{RAY_PORT}", f"--node-ip-address={node.address}",
                 f"--num-cpus={cpus}", f"--temp-dir={self.root / node.name}", "--disable-usage-stats")

    def serve_run(self, config: Path) -> str:
        """Deploy a Serve config file the standard way (`serve run --non-blocking`), from the head."""
        return self.run(self.head, str(Path(sys.executable).parent / "serve"), "run", "--non-blocking",
                        f"--address={self.head.address}:{RAY_PORT}", str(config), timeout=300)

    def drain(self, node: Node, deadline_s: int = 60) -> None:
        """`ray drain-node` as a cloud's preemption notice does it (Serve moves the node's replicas)."""
        query = (f"import json, ray; ray.init(address='{self.head.address}:{RAY_PORT}', logging_level='ERROR'); "
                 "print(json.dumps({n['NodeManagerAddress']: n['NodeID'] for n in ray.nodes() if n['Alive']}))")
        ids = json.loads(self.run(self.head, sys.executable, "-c", query).strip().splitlines()[-1])
        self.ray(self.head, "drain-node", f"--node-id={ids[node.address]}", f"--address={self.head.address}:{RAY_PORT}",
                 "--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=sasr test",
                 f"--deadline-remaining-seconds={deadline_s}")

    def set_link(self, node: Node, up: bool) -> None:
        """Cut (or restore) a node's only link: its veth end on the switch."""
        sh("ip", "-n", self.switch, "link", "set", node.link, "up" if up else "down")

    def replica_pids(self, node: Node) -> list[int]:
        """Serve replica processes of the sasr deployment running on a node."""
        pids = []
        for pid in node.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "ServeReplica:sasr" in cmdline:
                pids.append(pid)
        return pids

    def replica_ports(self, node: Node) -> list[int]:
        """The ports the node's sasr replicas listen on themselves (behind HAProxy: Ray's direct ingress,
        30000 and up; a restarted replica may take the next one)."""
        pids = {f"pid={pid}," for pid in self.replica_pids(node)}
        out = sh("ip", "netns", "exec", node.netns, "ss", "-ltnpH", check=False).stdout
        ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if any(p in line for p in pids)}
        return sorted(port for port in ports if DIRECT_INGRESS_PORTS[0] <= port < DIRECT_INGRESS_PORTS[1])

    def in_client(self, coro, timeout: float = 300):
        """Run a coroutine on the client node (its sockets are the client namespace's); its result."""
        if self._client_thread is None:
            self._client_thread = ClientThread(self.client.netns)
        return self._client_thread.run(coro, timeout)

    def logs(self, pattern: str = "serve/*.log", tail: int = 40) -> str:
        """The tail of each Ray log file matching pattern, on every node (for failure messages)."""
        out = []
        for path in sorted(self.root.glob(f"*/session_latest/logs/{pattern}")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"== {path}\n" + "\n".join(lines))
        return "\n".join(out)

    def close(self) -> None:
        if self._client_thread is not None:
            self._client_thread.stop()
        for node in [self.head, *self.workers]:  # the client runs no processes (a thread of this one)
            node.kill()
        time.sleep(0.5)
        for node in self.nodes:
            sh("ip", "netns", "del", node.netns, check=False)
        sh("ip", "netns", "del", self.switch, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def teardown_stale(prefix: str) -> None:
    """Remove the namespaces (and kill the processes) an earlier run with this prefix left behind."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix + "-"):
            kill_netns(name)
            sh("ip", "netns", "del", name, check=False)


class ClientThread:
    """An event loop in a thread that entered a network namespace."""

    def __init__(self, netns: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready: Future = Future()

        def main() -> None:
            try:
                enter_netns(netns)
            except OSError as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            asyncio.set_event_loop(self.loop)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=f"client-{netns}", daemon=True)
        self.thread.start()
        ready.result(timeout=10)

    def run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def enter_netns(netns: str) -> None:
    """Move the calling thread into a network namespace (setns(2); per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), netns)
    finally:
        os.close(fd)
