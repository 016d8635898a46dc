"""The seccomp filter (sandbox/spawner/seccomp.py), tried from inside a real sandbox.

Each denied call is made for real, by number, with arguments that change nothing if the
call ran and that the kernel answers with something other than EPERM without the filter:
run on a sandbox without it, 30 of the 36 answered EFAULT, EINVAL, EBADF, ENOSYS or a
keyring id (the 6 others, e.g. acct and swapon, the user namespace refuses anyway). What the lessons need (unshare, setns, mount, pivot_root, ptrace) must still
work, the 32-bit ABI must not bypass the rules, and PID 1 is filtered too.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

# asm/unistd_64.h (x86_64): each name of seccomp.DENIED that exists on x86_64
X86_64 = {
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "lookup_dcookie": 212, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "create_module": 174, "get_kernel_syms": 177,
    "query_module": 178, "uselib": 134, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "iopl": 172, "ioperm": 173, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
    "quotactl": 179, "quotactl_fd": 443, "nfsservctl": 180, "syslog": 103, "_sysctl": 156,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
}
I386_ONLY = {"stime", "vm86", "vm86old"}

# Arguments per call, where all zeros would not do: each makes the unfiltered kernel answer
# with something other than EPERM, and none changes anything.
ARGS = {
    "keyctl": [0, -3, 0],            # KEYCTL_GET_KEYRING_ID of the session keyring: an id
    "io_uring_enter": [-1], "io_uring_register": [-1], "quotactl_fd": [-1],  # EBADF
    "name_to_handle_at": [-1],      # EBADF
    "ioperm": [0, 0, 0],            # nothing asked: 0
}

CALL_ALL = r"""
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
for name, (nr, args) in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    out[name] = [rc, ctypes.get_errno() if rc == -1 else 0]
print(json.dumps(out))
"""

# An i386 system call through `int 0x80` from 64-bit code: mov eax, NR; mov ebx, A;
# mov ecx, B; mov edx, C; int 0x80 (rbx saved: it is callee-saved). Prints eax, which is
# the result or -errno.
INT80 = r"""
import ctypes, mmap, sys
nr, a, b, c = (int(x) for x in sys.argv[1:5])
le = lambda v: (v & 0xffffffff).to_bytes(4, "little")
code = (b"\x53" + b"\xb8" + le(nr) + b"\xbb" + le(a) + b"\xb9" + le(b) + b"\xba" + le(c)
        + b"\xcd\x80" + b"\x5b" + b"\xc3")
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
print(f())
"""
I386_KEYCTL, I386_GETPID = 288, 20  # asm/unistd_32.h
EPERM = 1


def run(client, sid, argv, timeout=20):
    r = client.run(sid, argv, timeout=timeout)
    assert not r["timed_out"], f"{argv[:2]} did not finish in {timeout} s"
    return r


def require_x86_64():
    if platform.machine() != "x86_64":
        pytest.fail("the syscall numbers here are x86_64's; add this machine's to run them")


def test_every_denied_call_fails_with_eperm(client, box):
    require_x86_64()
    from sandbox.spawner.seccomp import DENIED

    assert set(DENIED) == set(X86_64) | I386_ONLY  # a new name needs its number here
    calls = {name: [nr, ARGS.get(name, [0, 0, 0, 0, 0, 0])] for name, nr in X86_64.items()}
    r = run(client, box["id"], ["python3", "-c", CALL_ALL, json.dumps(calls)])
    assert r["exit_code"] == 0, r
    results = json.loads(r["stdout"])
    wrong = {name: rc for name, rc in results.items() if rc != [-1, EPERM]}
    assert not wrong, f"not refused with EPERM inside the sandbox: {wrong}"


def test_the_32_bit_abi_cannot_bypass_the_filter(client, box):
    require_x86_64()
    sid = box["id"]
    r = run(client, sid, ["python3", "-c", INT80, str(I386_KEYCTL), "0", "-3", "0"])
    assert r["exit_code"] == 0, r
    assert int(r["stdout"]) == -EPERM, "keyctl through int 0x80 was not refused"
    # 32-bit calls the filter allows still work: getpid answers the process's own pid
    r = run(client, sid, ["python3", "-c", INT80 + "import os; print(os.getpid())",
                          str(I386_GETPID), "0", "0", "0"])
    pid, own = r["stdout"].split()
    assert pid == own


def test_an_x32_syscall_number_kills_the_process(client, box):
    """x32 numbers (bit 30) share x86_64's audit arch; the filter treats them as a foreign
    ABI and kills the caller (without it the kernel, built without x32, says ENOSYS)."""
    require_x86_64()
    script = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
              "libc.syscall(ctypes.c_long(0x40000000 | 39)); print('survived')")  # x32 getpid
    r = run(client, box["id"], ["python3", "-c", script])
    assert "survived" not in r["stdout"]
    assert r["exit_code"] in (-31, 128 + 31), r  # SIGSYS


def test_what_the_lessons_need_still_works(client, box):
    script = r"""
set -e
# namespaces lab: unshare, mount in the new mount namespace, a new uts and pid namespace
unshare --mount --uts --pid --net --fork sh -c '
  mkdir -p /tmp/sc && mount -t tmpfs sc /tmp/sc && touch /tmp/sc/x && umount /tmp/sc
  hostname inner && [ "$(hostname)" = inner ] && [ $$ = 1 ]'
# ... and setns: nsenter into PID 1's namespaces; ip netns add / exec / delete
nsenter -t 1 -m -u -n -p true
ip netns add sc && ip netns exec sc ip link show lo >/dev/null && ip netns delete sc
# cgroups lab: mount -t cgroup2 on a v2 host, a v1 hierarchy (pids) on a v1 one
unshare --mount sh -c '
  mkdir -p /tmp/cg && { mount -t cgroup2 none /tmp/cg || mount -t cgroup -o pids none /tmp/cg; }
  ls /tmp/cg | grep -q procs'
# container labs: pivot_root into a tmpfs
unshare --mount sh -c '
  mkdir -p /tmp/pr && mount -t tmpfs pr /tmp/pr && mkdir /tmp/pr/old &&
  cd /tmp/pr && pivot_root . old'
# strace inside (ptrace)
strace -f -o /dev/null true
echo all-ok
"""
    r = run(client, box["id"], ["sh", "-c", script], timeout=30)
    assert r["exit_code"] == 0 and "all-ok" in r["stdout"], r


def seccomp_fields(status: str) -> tuple[str, str]:
    mode = re.search(r"^Seccomp:\s+(\d+)", status, re.M).group(1)
    filters = re.search(r"^Seccomp_filters:\s+(\d+)", status, re.M).group(1)
    return mode, filters


def test_pid_1_and_exec_are_filtered_once(client, box):
    info = client.inspect(box["id"])
    # read from the host: PID 1 (catatonit) runs under the filter
    assert seccomp_fields(Path(f"/proc/{info['init_pid']}/status").read_text()) == ("2", "1")
    r = run(client, box["id"], ["cat", "/proc/self/status"])
    assert seccomp_fields(r["stdout"]) == ("2", "1")  # one filter: the exec's, not stacked
