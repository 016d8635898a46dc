"""Traced runs (sandbox/tracing.py): a sandbox's program under the host's strace.

The parser tests read strace output recorded on this machine (strace 6.1, -f -o with
--decode-pids=pidns); the privileged tests run real programs in real sandboxes through
sandboxd.
"""

from __future__ import annotations

import json
import os

import pytest

from nslab.labkit.check import SandboxView, Syscall
from sandbox.errors import InvalidRequest, NotFound
from sandbox.protocol import TRACEABLE_SYSCALLS, Reason
from sandbox.spawner.enter import WAITING, wait_for_go
from sandbox.spawner.spec import GO
from sandbox.tracing import flags_of, parse

# `unshare -p -f -u sh -c 'sh -c true; (true); unshare -u true'` traced from the host:
# strace's pid 27469 is the program, in the sandbox's pid namespace as pid 7 (say).
RECORDED = """\
27469 execve("/usr/bin/unshare", ["unshare", "-p", "-f", "-u", "sh", "-c", "sh -c \\"true\\" ; (true) ; unshare "...], 0x7fff6dbd0fb8 /* 35 vars */) = 0
27469 unshare(CLONE_NEWUTS|CLONE_NEWPID) = 0
27469 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f0f13346a10) = 12 /* 27470 in strace's PID NS */
27470 execve("/usr/bin/sh", ["sh", "-c", "sh -c \\"true\\" ; (true) ; unshare "...], 0x7ffd44c882e8 /* 35 vars */) = 0
27470 vfork( <unfinished ...>
27471 execve("/usr/bin/sh", ["sh", "-c", "true"], 0x564c27f20a70 /* 35 vars */ <unfinished ...>
27470 <... vfork resumed>)              = 2 /* 27471 in strace's PID NS */
27471 <... execve resumed>)             = 0
27470 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7fa12c160a10) = 3 /* 27472 in strace's PID NS */
27470 vfork( <unfinished ...>
27473 execve("/usr/bin/unshare", ["unshare", "-u", "true"], 0x564c27f20a70 /* 35 vars */ <unfinished ...>
27470 <... vfork resumed>)              = 4 /* 27473 in strace's PID NS */
27473 <... execve resumed>)             = 0
27473 unshare(CLONE_NEWUTS)             = 0
27473 unshare(CLONE_NEWNS)              = -1 EPERM (Operation not permitted)
27473 execve("/usr/bin/true", ["true"], 0x7ffefb5423d8 /* 35 vars */) = 0
27469 clone3({flags=CLONE_VM|CLONE_VFORK|CLONE_CLEAR_SIGHAND, exit_signal=SIGCHLD, stack=0x7f7c9d1e1000, stack_size=0x9000}, 88 <unfinished ...>
27474 execve("/usr/bin/echo", ["echo", "unshare(CLONE_NEWUTS) = 0"], 0x7ffe /* 3 vars */) = 0
27469 <... clone3 resumed> => {parent_tid=[13 /* 27474 in strace's PID NS */]}, 88) = 13 /* 27474 in strace's PID NS */
27469 +++ exited with 0 +++
"""


def test_parse_reads_calls_results_errors_and_split_lines():
    calls, cut = parse(RECORDED, 27469, 7, {"unshare", "execve"})
    assert not cut
    unshares = [(c["host_pid"], c["args"], c["result"], c["error"]) for c in calls
                if c["name"] == "unshare"]
    assert unshares == [(27469, "CLONE_NEWUTS|CLONE_NEWPID", 0, None),
                        (27473, "CLONE_NEWUTS", 0, None),
                        (27473, "CLONE_NEWNS", -1, "EPERM")]
    assert [c["flags"] for c in calls if c["name"] == "unshare"][0] == [
        "CLONE_NEWUTS", "CLONE_NEWPID"]
    # A resumed call keeps the arguments of its first half.
    (sh_c,) = [c for c in calls if c["host_pid"] == 27471]
    assert sh_c["args"].startswith('"/usr/bin/sh", ["sh", "-c", "true"]') and sh_c["result"] == 0
    # Only the names asked for, though the fork calls were traced to follow the pids.
    assert {c["name"] for c in calls} == {"unshare", "execve"}


def test_parse_maps_pids_only_where_the_sandbox_pid_is_known():
    calls, _ = parse(RECORDED, 27469, 7, {"unshare", "execve", "clone", "clone3", "vfork"})
    pids = {c["host_pid"]: c["pid"] for c in calls}
    # The program is 7. Its own clone and clone3 return pids in its pid namespace, the
    # sandbox's (12, 13), though the first child is born into the namespace it unshared,
    # as pid 1 there. That child's forks return pids of the new namespace (2, 3, 4), not
    # the sandbox's: unknown.
    assert pids == {27469: 7, 27470: 12, 27471: None, 27473: None, 27474: 13}
    (clone3,) = [c for c in calls if c["name"] == "clone3"]
    assert clone3["result"] == 13 and "CLONE_VFORK" in clone3["flags"]


def test_flags_ignore_quoted_strings_and_an_args_string_cannot_fake_a_result():
    assert flags_of('"/bin/sh", ["sh", "-c", "unshare CLONE_NEWUTS"], 0x7f /* 3 vars */') == []
    assert flags_of("{flags=CLONE_NEWUTS|CLONE_VFORK, exit_signal=SIGCHLD}, 88") == [
        "CLONE_NEWUTS", "CLONE_VFORK"]
    calls, _ = parse(RECORDED, 27469, 7, {"execve"})
    (echo,) = [c for c in calls if c["host_pid"] == 27474]
    assert echo["args"] == ('"/usr/bin/echo", ["echo", "unshare(CLONE_NEWUTS) = 0"], '
                            '0x7ffe /* 3 vars */')
    assert echo["result"] == 0 and echo["flags"] == []


def test_parse_bounds_the_number_of_entries():
    text = "".join(f"5 unshare(CLONE_NEWUTS) = 0\n" for _ in range(1500))
    calls, cut = parse(text, 5, 1, {"unshare"})
    assert cut and len(calls) == 1000


# ---------------------------------------------------------------- through sandboxd

@pytest.mark.privileged
def test_a_traced_unshare_shows_the_call_and_its_flags(client, box):
    out = client.run(box["id"], ["unshare", "-u", "true"], trace=["unshare", "clone"])
    assert out["exit_code"] == 0, out["stderr"]
    (call,) = [c for c in out["syscalls"] if c["name"] == "unshare"]
    assert call["args"] == "CLONE_NEWUTS" and call["flags"] == ["CLONE_NEWUTS"]
    assert call["result"] == 0 and call["error"] is None
    # The program's pid inside the sandbox, not the host's.
    assert call["pid"] is not None and call["pid"] != call["host_pid"]
    assert out["trace_truncated"] is False


@pytest.mark.privileged
def test_a_check_sees_the_calls_through_sandboxview(client, box):
    sb = SandboxView(client, box["id"])
    out = sb.run("unshare -u true; unshare -n true", trace=["unshare"])
    assert out.exit_code == 0 and not out.trace_truncated
    (uts,) = out.calls("unshare", "CLONE_NEWUTS", ok=True)
    assert isinstance(uts, Syscall) and uts.args == "CLONE_NEWUTS" and uts.pid is not None
    assert [c.flags for c in out.calls("unshare")] == [("CLONE_NEWUTS",), ("CLONE_NEWNET",)]
    assert out.calls("setns") == [] and sb.run("true").syscalls == []


@pytest.mark.privileged
def test_a_traced_true_makes_no_namespace_calls(client, box):
    out = client.run(box["id"], ["true"], trace=["unshare", "clone", "clone3", "setns"])
    assert out["exit_code"] == 0 and out["syscalls"] == []
    # Untraced, there is no list at all.
    assert client.run(box["id"], ["true"])["syscalls"] is None


@pytest.mark.privileged
def test_children_are_traced_with_their_pids_inside(client, box):
    out = client.run(box["id"], ["sh", "-c", "unshare -u true; unshare -i true; echo $$"],
                     trace=["unshare", "execve"])
    assert out["exit_code"] == 0, out["stderr"]
    shell = int(out["stdout"].split()[-1])
    execs = [c for c in out["syscalls"] if c["name"] == "execve" and c["result"] == 0]
    assert execs[0]["pid"] == shell  # the program itself, before anything else
    flags = [c["args"] for c in out["syscalls"] if c["name"] == "unshare"]
    assert flags == ["CLONE_NEWUTS", "CLONE_NEWIPC"]
    kids = {c["pid"] for c in out["syscalls"] if c["name"] == "unshare"}
    assert len(kids) == 2 and shell not in kids and None not in kids


@pytest.mark.privileged
def test_a_strace_the_learner_put_inside_changes_nothing(client, sandbox):
    sid = sandbox["id"]
    planted = client.run(sid, ["sh", "-c", "cp /bin/true /usr/bin/strace && "
                                           "cp /bin/true /usr/local/bin/strace"])
    assert planted["exit_code"] == 0, planted["stderr"]
    out = client.run(sid, ["unshare", "-u", "true"], trace=["unshare"])
    assert [c["args"] for c in out["syscalls"]] == ["CLONE_NEWUTS"]
    # The host's strace is untouched: only the sandbox's upper layer holds the copy.
    assert os.path.getsize("/usr/bin/strace") != os.path.getsize("/bin/true")


@pytest.mark.privileged
def test_a_failed_command_is_reported_and_traced_calls_that_failed_are_kept(client, box):
    out = client.run(box["id"], ["no-such-command"], trace=["execve"])
    assert out["exit_code"] == 127 and "no-such-command" in out["stderr"]
    # A failure before the process could wait (no such user): nothing ran, nothing traced.
    out = client.run(box["id"], ["true"], user="nosuchuser", trace=["execve"])
    assert out["exit_code"] == 127 and "nosuchuser" in out["stderr"]
    assert out["syscalls"] == []
    out = client.run(box["id"], ["unshare", "-U", "unshare", "--map-root-user", "-u",
                                 "unshare", "--mount-proc", "true"], trace=["unshare"])
    assert any(c["result"] == 0 for c in out["syscalls"])


@pytest.mark.privileged
def test_a_traced_run_keeps_to_its_timeout_and_leaves_no_tracer(sandboxd, client, box):
    out = client.run(box["id"], ["sh", "-c", "sleep 30 & exec sleep 30"], trace=["unshare"],
                     timeout=1)
    assert out["timed_out"] is True and out["syscalls"] == []
    assert _children(sandboxd.proc.pid, "strace") == []


def _children(ppid: int, comm: str) -> list[int]:
    """Pids of the processes named `comm` whose parent is `ppid`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == comm and int(stat[stat.rindex(")") + 2:].split()[1]) == ppid:
            found.append(int(pid))
    return found


@pytest.mark.parametrize("trace", [
    [], "unshare", ["reboot"], ["unshare", "ptrace"], ["unshare", "unshare"], [1],
    ["UNSHARE"], [None], {"unshare": 1}, ["unshare"] * 40,
], ids=lambda v: json.dumps(v)[:30])
@pytest.mark.privileged
def test_a_bad_trace_is_refused_and_runs_nothing(sandboxd, client, box, trace):
    marker = "/tmp/traced-run-ran"
    with pytest.raises(InvalidRequest) as e:
        client.run(box["id"], ["sh", "-c", f"touch {marker}"], trace=trace)
    assert e.value.field == "trace" and e.value.reason == Reason.INVALID
    with pytest.raises(NotFound) as gone:
        client.read_file(box["id"], marker)
    assert gone.value.reason == Reason.NO_SUCH_FILE


def test_the_allowlist_is_short_and_names_only_real_calls():
    assert "unshare" in TRACEABLE_SYSCALLS and "ptrace" not in TRACEABLE_SYSCALLS
    assert all(n.isidentifier() and n.islower() for n in TRACEABLE_SYSCALLS)


def test_a_held_process_execs_only_on_the_go_byte():
    """spawner/enter.py: EOF on the go pipe (the daemon gave up, or died) ends the held
    process without its exec; the byte lets it go on."""
    for release, expected in ((None, 125), (GO, 0)):
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the held process: exits 0 only if wait_for_go returned
            os.close(err_r)
            os.close(go_w)
            wait_for_go(err_w, go_r)
            os._exit(0)
        os.close(err_w)
        os.close(go_r)
        assert os.read(err_r, 1) == WAITING
        if release:
            os.write(go_w, release)
        os.close(go_w)
        os.close(err_r)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == expected
