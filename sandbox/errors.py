"""The one exception type the engine raises at its boundary.

Kernel errors are turned into a `SandboxError` whose message names what is missing
and how to fix it, so that neither the daemon's API nor the CLI ever shows a bare
errno to a person.
"""

from __future__ import annotations

import errno

from .protocol import Reason


class SandboxError(Exception):
    """Something the engine could not do; `status` is the HTTP status the API uses.

    `reason` (a `protocol.Reason`) is what programs branch on; `message` is for people
    and may be reworded at any time. Each kind has a default reason; a raise site that
    knows the cause better names it: `NotFound(msg, reason=Reason.NO_SUCH_FILE)`."""

    status = 500
    code = "sandbox_error"
    default_reason = Reason.INTERNAL

    def __init__(self, message: str, *, field: str | None = None, reason: Reason | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = Reason(reason) if reason is not None else self.default_reason

    def to_json(self) -> dict:
        body = {"error": self.code, "reason": self.reason.value, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidRequest(SandboxError):
    """The caller sent something that cannot be accepted; nothing was changed."""

    status = 400
    code = "invalid_request"
    default_reason = Reason.INVALID


class NotFound(SandboxError):
    status = 404
    code = "not_found"
    default_reason = Reason.NOT_FOUND


class Conflict(SandboxError):
    status = 409
    code = "conflict"
    default_reason = Reason.CONFLICT


class TooLarge(SandboxError):
    """What was asked for is bigger than the limit (a file to read, a body to accept)."""

    status = 413
    code = "too_large"
    default_reason = Reason.TOO_LARGE


class CapacityExhausted(SandboxError):
    """No uid range, address or storage left for one more sandbox."""

    status = 503
    code = "capacity"
    default_reason = Reason.CAPACITY


class HostUnsupported(SandboxError):
    """The host lacks something the engine needs (not root, no user namespaces, ...)."""

    status = 500
    code = "host_unsupported"
    default_reason = Reason.HOST_UNSUPPORTED


class DaemonUnavailable(SandboxError):
    """Raised by the client: the daemon did not answer (not running, no permission to
    its socket, or too slow)."""

    status = 503
    code = "daemon_unavailable"
    default_reason = Reason.DAEMON_UNAVAILABLE


KINDS = {cls.code: cls for cls in (InvalidRequest, NotFound, Conflict, TooLarge, CapacityExhausted,
                                  HostUnsupported, DaemonUnavailable)}


# An answer that names no kind we know (aiohttp's own 404 for a route that does not match, a
# proxy's 503 in front of the TCP listener) is read by its status, as callers always have.
_KIND_BY_STATUS = {404: NotFound, 503: DaemonUnavailable}


def from_json(payload: dict, status: int) -> SandboxError:
    """The error an answer of the daemon describes, of the kind it named (the client's
    half of `SandboxError.to_json`). A reason this side does not know (a newer daemon)
    becomes the kind's default reason rather than failing."""
    cls = KINDS.get(payload.get("error")) or _KIND_BY_STATUS.get(status, SandboxError)
    try:
        reason = Reason(payload.get("reason") or cls.default_reason)
    except ValueError:
        reason = cls.default_reason
    err = cls(str(payload.get("message") or f"HTTP {status}"), field=payload.get("field"),
              reason=reason)
    err.status = status
    return err


def explain_oserror(what: str, err: OSError) -> SandboxError:
    """Turn an OSError from a kernel operation into a message a person can act on."""
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
    # EBUSY passes on: a caller may wait for the kernel to let go and retry.
    reason = Reason.BUSY if err.errno == errno.EBUSY else None
    return HostUnsupported(f"{what} failed: {hint} [{errno.errorcode.get(err.errno, err.errno)}]",
                           reason=reason)
