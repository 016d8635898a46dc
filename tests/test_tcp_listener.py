"""sandboxd on TCP for remote sandbox hosts: every request needs the bearer token."""

from __future__ import annotations

import socket
import uuid

import pytest

from conftest import Daemon, free_subnet, leftovers
from sandbox.client import Client
from sandbox.config import HostConfig
from sandbox.protocol import Reason

pytestmark = pytest.mark.privileged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_daemon(tmp_path):
    """A sandboxd that also listens on 127.0.0.1 with a token; removed afterwards."""
    token = uuid.uuid4().hex
    (tmp_path / "token").write_text(token + "\n")
    port = _free_port()
    d = Daemon(tmp_path, f"p{uuid.uuid4().hex[:8]}", free_subnet())
    d.extra_args = ["--listen", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"),
                    "--warm", "0"]
    d.start()
    yield d, port, token
    result = d.teardown()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert not leftovers(d.name, d.state_dir, HostConfig(name=d.name).tag)


def test_tcp_requires_the_bearer_token(tcp_daemon):
    d, port, token = tcp_daemon
    for bad in (None, "wrong-token-wrong-token"):
        with pytest.raises(Exception) as e:
            Client(url=f"http://127.0.0.1:{port}", token=bad).list()
        assert getattr(e.value, "status", None) == 401
        assert getattr(e.value, "reason", None) == Reason.UNAUTHORIZED
    good = Client(url=f"http://127.0.0.1:{port}", token=token)
    sb = good.create(memory="64m", disk="32m")
    try:
        assert good.run(sb["id"], ["hostname"])["stdout"] == sb["hostname"] + "\n"
    finally:
        good.destroy(sb["id"])
    assert d.client().list() == [], "the Unix socket needs no token and sees the same daemon"
