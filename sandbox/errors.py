"""The one exception type the engine raises at its boundary.

Kernel errors are turned into a `SandboxError` whose message names what is missing
and how to fix it, so that neither the daemon's API nor the CLI ever shows a bare
errno to a person.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Something the engine could not do; `status` is the HTTP status the API uses."""

    status = 500
    code = "sandbox_error"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict:
        body = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidRequest(SandboxError):
    """The caller sent something that cannot be accepted; nothing was changed."""

    status = 400
    code = "invalid_request"


class NotFound(SandboxError):
    status = 404
    code = "not_found"


class Conflict(SandboxError):
    status = 409
    code = "conflict"


class TooLarge(SandboxError):
    """What was asked for is bigger than the limit (a file to read, a body to accept)."""

    status = 413
    code = "too_large"


class CapacityExhausted(SandboxError):
    """No uid range, address or storage left for one more sandbox."""

    status = 503
    code = "capacity"


class HostUnsupported(SandboxError):
    """The host lacks something the engine needs (not root, no user namespaces, ...)."""

    status = 500
    code = "host_unsupported"


def explain_oserror(what: str, err: OSError) -> SandboxError:
    """Turn an OSError from a kernel operation into a message a person can act on."""
    import errno

    hints = {
        errno.EPERM: "operation not permitted: sandboxd must run as root, and user "
        "namespaces must be enabled (sysctl user.max_user_namespaces > 0; on Ubuntu, "
        "kernel.apparmor_restrict_unprivileged_userns does not apply to root)",
        errno.EACCES: "permission denied: sandboxd must run as root",
        errno.ENOSPC: "the kernel ran out of a resource (namespaces, inodes or disk); "
        "check user.max_*_namespaces and free space under the state dir",
        errno.ENODEV: "a kernel feature is missing (overlayfs, btrfs, loop devices or "
        "a cgroup controller); load the module or use a kernel that has it",
        errno.EINVAL: "the kernel rejected the arguments; it may be too old for this "
        "feature (idmapped mounts need Linux >= 5.19)",
        errno.ENOSYS: "the kernel does not have this system call (Linux >= 5.19 needed)",
    }
    hint = hints.get(err.errno, err.strerror or "unknown error")
    return HostUnsupported(f"{what} failed: {hint} [{errno.errorcode.get(err.errno, err.errno)}]")
