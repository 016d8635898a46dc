"""The thinnest end-to-end path: create a sandbox, run a command in it, destroy it."""

import pytest

pytestmark = pytest.mark.privileged


def test_create_exec_destroy(client, sandbox):
    r = client.run(sandbox["id"], ["sh", "-c", "hostname; echo out; echo err >&2; exit 7"])
    assert r["exit_code"] == 7
    assert r["stdout"] == f"{sandbox['hostname']}\nout\n"
    assert r["stderr"] == "err\n"
