"""What the mizan_cache tests share: the repository's files, and real Redis servers.

``redis_server`` is one ``redis-server`` on a free loopback port for the session, and
``redis_cluster`` a three-master Redis Cluster (three cluster-enabled servers joined by
``redis-cli --cluster create``), both without persistence, as the Rust suite starts them
(crates/mizan-cache/src/testing.rs). A missing ``redis-server`` or ``redis-cli`` fails the tests
that need them: they never skip. Each test keeps to keys of its own by site
(``unique_site``), so one server serves them all.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
"""The repository's root, where tests/vectors lives."""

DEADLINE_S = 20.0
"""How long a server may take to be ready: far longer than a healthy start on a loaded machine."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_reply(stream) -> object:
    """One RESP reply (simple string, error, integer, bulk string or array)."""
    line = stream.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = stream.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [_read_reply(stream) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")


def redis_command(port: int, *args: str) -> object:
    """Sends one command to the server on ``port`` and returns its reply (no client library)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"".join(parts))
        with conn.makefile("rb") as stream:
            return _read_reply(stream)


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run scripts/setup, which installs it (these tests never skip)")
    return path


@dataclass
class _Server:
    port: int
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until(what: str, check, server: _Server | None = None) -> None:
    """Polls ``check`` until it holds; fails naming ``what`` after the deadline, or at once if
    ``server`` exits."""
    start = time.monotonic()
    while True:
        if server is not None and server.process.poll() is not None:
            pytest.fail(f"redis-server on port {server.port} exited ({server.process.returncode}):\n{server.output()}")
        try:
            if check():
                return
        except (OSError, RuntimeError):
            pass
        waited = time.monotonic() - start
        if waited > DEADLINE_S:
            suffix = f":\n{server.output()}" if server is not None else ""
            pytest.fail(f"gave up waiting for {what} after {waited:.1f} s{suffix}")
        time.sleep(0.01)


def _start_server(directory: Path, *extra: str) -> _Server:
    """A redis-server without persistence on a free loopback port, once it answers PING."""
    port = free_port()
    log = directory / f"redis-{port}.log"
    command = [_program("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", str(directory), *extra]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = _Server(port, process, log)
    _wait_until(f"redis-server on port {port} to answer PING", lambda: redis_command(port, "PING") == "PONG", server)
    return server


@dataclass
class RedisServer:
    """A running redis-server."""

    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@dataclass
class RedisCluster:
    """A running three-master Redis Cluster."""

    ports: list[int] = field(default_factory=list)

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = _start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield RedisServer(server.port)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("redis-cluster")
    servers: list[_Server] = []
    try:
        for _ in range(3):
            port, bus = free_port(), free_port()
            servers.append(
                _start_server(
                    directory,
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(bus),
                    "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
                )
            )
        nodes = [f"127.0.0.1:{s.port}" for s in servers]
        created = subprocess.run(
            [_program("redis-cli"), "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        if created.returncode != 0 or "All 16384 slots covered" not in created.stdout:
            said = f"{created.stdout}\n{created.stderr}"
            pytest.fail(f"redis-cli --cluster create failed ({created.returncode}):\n{said}")
        for s in servers:
            _wait_until(
                f"the cluster node on port {s.port} to report cluster_state:ok",
                lambda s=s: "cluster_state:ok" in str(redis_command(s.port, "CLUSTER", "INFO")),
                s,
            )
        yield RedisCluster([s.port for s in servers])
    finally:
        for s in servers:
            s.stop()


_sites = itertools.count()


@pytest.fixture
def unique_site():
    """Site ids no other test of this session uses: ``unique_site("shop")`` is ``t<n>-shop``,
    the same ``n`` for every site of one test."""
    n = next(_sites)
    return lambda site: f"t{n}-{site}"
