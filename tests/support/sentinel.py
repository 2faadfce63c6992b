"""A real Redis Sentinel setup on loopback: a master, two replicas, one sentinel (`redis-server --sentinel`).

Two replicas, so that after a failover the new master still has one to replicate to (WAIT 1).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import redis

from tooling.embedded_redis import die_with_parent, free_port, redis_server_binary

MASTER = "cgmaster"
# Durable and replicated: every write fsynced before the reply, and a master without a connected
# replica refuses writes (min-replicas-to-write) instead of accepting what a failover would lose.
DURABLE = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
REPLICATED = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "5"]


class SentinelSetup:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.master_port, self.sentinel_port = free_port(), free_port()
        self.replica_ports = [free_port(), free_port()]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, args: list[str]) -> None:
        workdir = self.base / name
        workdir.mkdir(exist_ok=True)
        self.procs[name] = subprocess.Popen(
            [redis_server_binary(), *args, "--dir", str(workdir), "--logfile", str(workdir / "log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )

    def start_master(self) -> None:
        self._start(
            "master",
            ["--port", str(self.master_port), "--bind", "127.0.0.1", *DURABLE, *REPLICATED],
        )
        wait_ping(self.master_port)

    def start(self) -> SentinelSetup:
        self.start_master()
        for i, port in enumerate(self.replica_ports):
            self._start(
                f"replica{i}",
                [
                    *("--port", str(port), "--bind", "127.0.0.1", *DURABLE, *REPLICATED),
                    *("--replicaof", "127.0.0.1", str(self.master_port)),
                ],
            )
            wait_ping(port)
        conf = self.base / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.base}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 400\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
        )
        self.procs["sentinel"] = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_ping(self.sentinel_port)
        sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the sentinel must know the replica to promote it
            with contextlib.suppress(redis.RedisError):
                replicas = sentinel.sentinel_slaves(MASTER)
                if sum(r.get("master-link-status") == "ok" for r in replicas) == 2:
                    return self
            time.sleep(0.1)
        raise RuntimeError("sentinel never saw both replicas")

    def master_address(self) -> tuple[str, int]:
        sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True)
        host, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
        return str(host), int(port)

    def kill_master(self) -> None:
        proc = self.procs.pop("master")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ping(port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis on {port} did not answer")
