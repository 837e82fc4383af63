"""Real redis-server processes for tests: one server or a local three-master cluster, killed and restarted at will."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
REDIS_CHECK_AOF = shutil.which("redis-check-aof") or "redis-check-aof"


def free_port(*, besides: int = 0) -> int:
    """A free TCP port in 21000-26999 other than ``besides``: below the Fabric test network's ports (27050
    on) and the kernel's ephemeral range (so neither a stopped Fabric node nor an outgoing connection takes
    it meanwhile)."""
    start = (time.time_ns() // 1000) % 6000
    for k in range(6000):
        port = 21000 + (start + k) % 6000
        if port == besides:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 21000-26999")


@dataclass
class RedisServer:
    """One redis-server with its own directory; AOF with fsync always unless asked otherwise."""

    dir: Path
    port: int = 0
    fsync: str = "always"
    appendonly: str = "yes"
    load_truncated: str = "no"  # what the service requires: a torn AOF stops Redis until it is repaired
    cluster: bool = False
    replica_of: int = 0  # the port of a primary to replicate
    bus_port: int = 0  # a cluster node's bus port, chosen like the client port: Redis's default (port +
    # 10000) would fall in the kernel's ephemeral range, where an outgoing connection can hold it
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    repairs: int = 0  # times start() ran redis-check-aof --fix, as the README tells an operator to

    def __post_init__(self) -> None:
        if REDIS_SERVER is None:
            raise AssertionError("redis-server is not installed: ./run test installs Debian's redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.cluster and not self.bus_port:
            self.bus_port = free_port(besides=self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart from the directory's AOF) and wait until it answers.

        A torn AOF tail (a kill -9 in the middle of a write) stops Redis; it is then repaired with
        ``redis-check-aof --fix``, which cuts the half-written transaction, and started again."""
        try:
            return self._start()
        except AssertionError as exc:
            manifest = self.dir / "appendonlydir" / "appendonly.aof.manifest"
            if "redis-check-aof --fix" not in str(exc) or not manifest.exists():
                raise
        fix = subprocess.run(
            [REDIS_CHECK_AOF, "--fix", str(manifest)], input=b"y\n", capture_output=True, timeout=60, check=False
        )
        assert fix.returncode == 0, fix.stdout.decode(errors="replace") + fix.stderr.decode(errors="replace")
        self.repairs += 1
        return self._start()

    def _start(self) -> RedisServer:
        args = [
            str(REDIS_SERVER),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            self.appendonly,
            "--appendfsync",
            self.fsync,
            "--aof-load-truncated",
            self.load_truncated,
            "--save",
            "",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.replica_of:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / "nodes.conf")]
            args += ["--cluster-port", str(self.bus_port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                    self.proc.kill()
                    self.proc.wait(timeout=30)
                    raise AssertionError(f"redis-server did not start on {self.port}:\n{log[-2000:]}") from None
                time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Stop for good (kill -9 is enough: every acknowledged write is in the AOF)."""
        self.kill()


@dataclass
class RedisCluster:
    """Three masters, no replicas, slots spread by redis-cli."""

    dir: Path
    nodes: list[RedisServer] = field(default_factory=list)

    def start(self) -> RedisCluster:
        self.nodes = [RedisServer(self.dir / f"node{i}", cluster=True).start() for i in range(3)]
        subprocess.run(
            [
                str(REDIS_CLI),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        client = redis.Redis(port=self.nodes[0].port)
        deadline = time.monotonic() + 30
        while client.cluster("info").get("cluster_state") != "ok":
            if time.monotonic() > deadline:
                raise AssertionError("the Redis cluster did not reach state ok")
            time.sleep(0.1)
        client.close()
        layout = (self.dir / "node0" / "nodes.conf").read_text()
        for n in self.nodes:
            assert f"127.0.0.1:{n.port}@{n.bus_port}" in layout, f"node {n.port} is not on bus port {n.bus_port}"
        return self

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
