"""Several service processes on one Redis: start, kill and find the leader (for the scale-out tests)."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import redis

from receipt_service.ledger import load_or_create_key

from .procs import CLI, server
from .redisproc import RedisServer

_INSTANCE = re.compile(r"instance ([0-9a-f]{8})")
LEASE = "1.0"


class Instances:
    """Service processes sharing one store URL and one ledger key, each restartable."""

    def __init__(self, tmp: Path, url: str, n: int, *extra: str) -> None:
        self.tmp, self.url, self.extra = tmp, url, extra
        first = tmp / "i0"
        first.mkdir()
        load_or_create_key(first)
        for i in range(1, n):
            (tmp / f"i{i}").mkdir()
            shutil.copy(first / "ledger-key.pem", tmp / f"i{i}" / "ledger-key.pem")  # every instance signs as one
        self.stacks: list[ExitStack] = [ExitStack() for _ in range(n)]
        self.procs: list[subprocess.Popen[str]] = []
        self.bases: list[str] = []
        self.logs: list[list[str]] = []
        self.ids: list[str] = []
        for i in range(n):
            self.procs.append(None)
            self.bases.append("")
            self.logs.append([])
            self.ids.append("")
            self.start(i)

    def start(self, i: int) -> None:
        lines: list[str] = []
        env = {"RECEIPT_SERVICE_STORE": self.url, "RECEIPT_SERVICE_LEASE_SECONDS": LEASE}
        proc, base = self.stacks[i].enter_context(server(self.tmp / f"i{i}", 0.2, *self.extra, env=env, lines=lines))
        match = _INSTANCE.search("".join(lines))
        assert match is not None, "the serving line names the instance"
        self.procs[i], self.bases[i], self.logs[i], self.ids[i] = proc, base, lines, match.group(1)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.stacks[i].close()
        self.stacks[i] = ExitStack()

    def leader(self, client: redis.Redis) -> int | None:
        value = client.get("{hr:v1}:leader")
        if value is None:
            return None
        owner = value.decode().split(":")[0]
        return self.ids.index(owner) if owner in self.ids else None

    def close(self) -> None:
        for stack in self.stacks:
            stack.close()


def token_for(url: str, data_dir: Path) -> str:
    out = subprocess.run(
        [*CLI, "keys", "create", "--tenant", "scale", "--store", url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def instances(tmp: Path, url: str, n: int, *extra: str) -> Iterator[Instances]:
    """``n`` instances on the store at ``url`` (``extra``: more ``serve`` arguments), closed afterwards."""
    inst = Instances(tmp, url, n, *extra)
    try:
        yield inst
    finally:
        inst.close()


@contextlib.contextmanager
def one_redis(tmp: Path) -> Iterator[tuple[RedisServer, redis.Redis, str]]:
    """A redis-server, a client of it and an API key stored in it; stopped afterwards."""
    server = RedisServer(tmp / "redis").start()
    client = redis.Redis(port=server.port)
    try:
        yield server, client, token_for(server.url, tmp)
    finally:
        client.close()
        server.stop()


def wait_for_leader(inst: Instances, client: redis.Redis, not_: int | None = None, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        who = inst.leader(client)
        if who is not None and who != not_:
            return who
        time.sleep(0.1)
    raise AssertionError("no instance took the lead")
