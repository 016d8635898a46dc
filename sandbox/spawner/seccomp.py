"""The seccomp filter of every sandbox process: Docker's default profile in spirit.

The user namespace is the boundary: the kernel already refuses a user-namespace root most
of what is below (module loading, clock changes, reboot of the host, I/O ports). The
filter is depth: it closes the kernel interfaces that are not namespaced or that are
large, rarely needed attack surface (keyrings, bpf, perf, userfaultfd, io_uring), so a
kernel bug there is out of reach from inside a sandbox. Each denied call fails with
EPERM, as Docker's do, so tools take their "not permitted" path.

What the lessons need stays allowed, which is where this differs from Docker (whose
profile refuses these to a container without CAP_SYS_ADMIN):
  - `unshare`, `clone`/`clone3` with namespace flags: the namespaces lab (`unshare
    --uts/--pid/--mount/--net`, its clone() step) and `ip netns add`;
  - `setns`: the namespaces lab's `nsenter` and `ip netns exec`;
  - `mount`, `umount2` and the new mount API (`open_tree`, `move_mount`, `fsopen`...):
    the namespaces lab (`mount --bind`, tmpfs, `ip netns`) and the cgroups lab
    (`mount -t cgroup`/`cgroup2`, `mount --bind` over cgroup files);
  - `pivot_root`, `chroot`: containers built by hand in the later container labs, and
    the cgroups lab's chroot;
  - `ptrace`, `process_vm_readv`, `kcmp`: `strace` inside is a teaching tool (the host's
    tracer of traced runs attaches from outside and is not filtered either way);
  - `personality`: left whole (`setarch -R` shows ASLR; Docker allows only a few values).

ABIs: the filter covers the native ABI and the 32-bit one the CPU also runs
(x86_64: i386 via `int 0x80`; aarch64: arm), each with the same rules, so 32-bit
programs still work but cannot reach a denied call by its 32-bit number. Any other ABI
(x32 on x86_64) kills the process: nothing in a sandbox uses one, and it would
otherwise bypass the rules.

The program is built once per spawner (`program`, by libseccomp, under 1 ms) and each
child loads it with one prctl: about 0.25 ms per exec and per create (the kernel's JIT and
its per-syscall action cache), below the noise of a 14 ms `run true`.
"""

from __future__ import annotations

import errno
import functools
import platform

from .. import libc

DENIED = (
    # keyrings: not namespaced; keys and quotas are the host kernel's
    "keyctl", "add_key", "request_key",
    # large kernel interfaces a lesson never needs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "lookup_dcookie",
    # kernels and modules
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "uselib",
    # files by handle reach past the mount namespace (shocker, 2014)
    "open_by_handle_at", "name_to_handle_at",
    # hardware, swap, the machine
    "iopl", "ioperm", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
    "nfsservctl", "vm86", "vm86old", "syslog", "_sysctl",
    # the host's clock
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
)

# The 32-bit ABI each 64-bit architecture also runs (libseccomp's names).
COMPAT_ARCH = {"x86_64": "x86", "aarch64": "arm"}


@functools.cache
def program() -> libc.SeccompProgram:
    """The filter's BPF program for this machine, built once (the spawner warms it)."""
    compat = COMPAT_ARCH.get(platform.machine())
    return libc.SeccompProgram(libc.seccomp_program(
        default=libc.SCMP_ACT_ALLOW, bad_arch=libc.SCMP_ACT_KILL_PROCESS,
        arches=[compat] if compat else [],
        rules=[(name, libc.SCMP_ACT_ERRNO(errno.EPERM)) for name in DENIED]))


def install() -> None:
    """Filter this process and everything it execs or forks from now on."""
    program().load()
