"""Shared fixtures: a real sandboxd on a temporary state dir, and leak checks.

Privileged tests need root, user namespaces, cgroups, btrfs and nftables. Where they
cannot run they fail with the reason; they never skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NSLAB = [sys.executable, "-m", "nslab"]


def free_subnet() -> str:
    """A /22 in 10.100-199.x that no interface on this host uses yet (tests run in parallel)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    start = os.getpid() % 100
    for i in range(100):
        second = 100 + (start + i) % 100
        if f" 10.{second}." not in used:
            return f"10.{second}.0.0/22"
    raise AssertionError("no free 10.x.0.0/22 test subnet on this host")


class Daemon:
    """A running `nslab sandboxd` with its own name, state dir, socket and subnet."""

    def __init__(self, base: Path, name: str, subnet: str):
        self.name = name
        self.state_dir = base / "state"
        self.socket = base / "sandboxd.sock"
        self.subnet = subnet
        self.log = base / "sandboxd.log"
        self.proc: subprocess.Popen | None = None
        self.extra_args: list[str] = []  # only for serving, not for --teardown

    @property
    def args(self) -> list[str]:
        return ["--name", self.name, "--state-dir", str(self.state_dir),
                "--socket", str(self.socket), "--subnet", self.subnet, "--storage-size", "8g"]

    def start(self, timeout: float = 60) -> None:
        if self.socket.exists():
            self.socket.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*NSLAB, "sandboxd", *self.args, *self.extra_args],
                                         stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"sandboxd exited with {self.proc.returncode}:\n"
                                     + self.log.read_text()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError("sandboxd did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        from sandbox.client import Client

        return Client(self.socket)

    def cli(self, *args, input=None, timeout=60, check=False) -> subprocess.CompletedProcess:
        env = dict(os.environ, NSLAB_SOCKET=str(self.socket))
        return subprocess.run([*NSLAB, *args], input=input, capture_output=True, timeout=timeout,
                              cwd=ROOT, env=env, check=check)

    def teardown(self) -> subprocess.CompletedProcess:
        self.stop()
        return subprocess.run([*NSLAB, "sandboxd", *self.args, "--teardown"],
                              capture_output=True, timeout=120, cwd=ROOT)


# A TCP server for a sandbox: accepts and closes, forever (until the sandbox goes).
SERVE_SCRIPT = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d))
s.listen(16)
while True:
    s.accept()[0].close()
"""


def sh(client, sid: str, script: str, *, timeout: float = 20, user=0) -> dict:
    """Run `sh -c script` as `user` in the sandbox; the result of client.run."""
    r = client.run(sid, ["sh", "-c", script], timeout=timeout, user=user)
    assert not r["timed_out"], f"`{script}` did not finish in {timeout} s inside the sandbox"
    return r


def ok(client, sid: str, script: str) -> str:
    """Run a script that must succeed; its stdout."""
    r = sh(client, sid, script)
    assert r["exit_code"] == 0, f"`{script}` failed inside the sandbox: {r['stderr']}"
    return r["stdout"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this privileged test needs root (run the suite as root; CI does)")


def leftovers(name: str, state_dir: Path, tag: str) -> list[str]:
    """Kernel objects that a daemon named `name` could have left behind."""
    found = []
    root = Path("/sys/fs/cgroup")
    for base in (root, *(h for h in root.iterdir() if h.is_dir())):  # v2, then v1 hierarchies
        if (base / "nslab" / name).exists():
            found.append(f"cgroup {base / 'nslab' / name}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        if ifname.startswith((f"nl{tag}", f"nlbr{tag}")):
            found.append(f"link {ifname}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"nslab_{tag}" in tables:
        found.append(f"nft table nslab_{tag}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if str(state_dir) in line.split()[4]:
            found.append(f"mount {line.split()[4]}")
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    if str(state_dir) in losetup:
        found.append("loop device on " + str(state_dir))
    # The daemon's host services (sandbox/services.py) run in their state dir.
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except (FileNotFoundError, PermissionError, NotADirectoryError, ProcessLookupError):
            continue
        if cwd == str(state_dir) or cwd.startswith(f"{state_dir}/"):
            found.append(f"process {proc.name} in {cwd}")
    return found


@pytest.fixture(scope="session")
def sandboxd(tmp_path_factory):
    """A real sandboxd (root) on a temp state dir; everything it made is gone afterwards."""
    require_root()
    from sandbox.config import HostConfig

    base = tmp_path_factory.mktemp("sandboxd")
    name = f"t{uuid.uuid4().hex[:8]}"
    d = Daemon(base, name, free_subnet())
    d.start()
    yield d
    result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    tag = HostConfig(name=name).tag
    left = leftovers(name, d.state_dir, tag)
    assert not left, f"sandboxd left kernel state behind: {left}"


@pytest.fixture
def client(sandboxd):
    """A `sandbox.client.Client` connected to the session's sandboxd."""
    return sandboxd.client()


@pytest.fixture
def sandbox(client):
    """A fresh sandbox (default limits); destroyed with --purge afterwards."""
    sb = client.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    yield sb
    try:
        client.destroy(sb["id"], purge=True)
    except Exception as e:  # noqa: BLE001 - the test may have destroyed it itself
        if getattr(e, "status", None) != 404:
            raise


@pytest.fixture(scope="module")
def box(sandboxd):
    """One sandbox shared by a module's checks that do not change it; destroyed afterwards."""
    c = sandboxd.client()
    sb = c.create(cpus=1.0, memory="256m", pids=256, disk="256m")
    yield sb
    c.destroy(sb["id"], purge=True)


# ---------------------------------------------------------------- web app

@pytest.fixture(scope="session")
def webapp_schema(tmp_path_factory):
    """A SQLite file with the web app's tables, made once by running the Alembic migrations."""
    from flask_migrate import upgrade

    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    base = tmp_path_factory.mktemp("webapp-schema")
    app = create_app(TestConfig(base))
    with app.app_context():
        upgrade()
        db.engine.dispose()  # the last connection closes: WAL checkpointed into the file
    return base / "nslab.db"


@pytest.fixture
def app(tmp_path, webapp_schema):
    """The web app (TestConfig, CSRF off) on its own migrated SQLite file in tmp_path."""
    import shutil

    from webapp import create_app
    from webapp.config import TestConfig
    from webapp.extensions import db

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, LABS_DIR=str(tmp_path / "labs")))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def web(app):
    """A Flask test client of `app`."""
    return app.test_client()
