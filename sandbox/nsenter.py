"""Run a function inside another namespace without moving the caller.

The network and UTS namespaces are per thread: a short-lived thread joins the namespace,
runs the function and goes back, so the caller's thread (and the daemon's event loop)
never leaves the host's.
"""

from __future__ import annotations

import os
import threading

from . import libc

NS_FLAGS = {"net": libc.CLONE_NEWNET, "uts": libc.CLONE_NEWUTS}


def in_namespace(ns_fd: int, kind: str, func):
    """Run `func()` in a short-lived thread that has joined the `kind` namespace ("net",
    "uts") `ns_fd`. Exceptions raised by `func` are raised here."""
    outcome: dict = {}

    def run():
        try:
            host_fd = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.setns(ns_fd, NS_FLAGS[kind])
                try:
                    outcome["value"] = func()
                finally:
                    libc.setns(host_fd, NS_FLAGS[kind])
            finally:
                os.close(host_fd)
        except BaseException as e:  # handed over to the calling thread and raised there
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"nslab-{kind}ns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def in_netns(ns_fd: int, func):
    """Run `func()` in a short-lived thread that has joined the net namespace `ns_fd`.

    Sockets keep the namespace they were made in, so whatever `func` opens must be closed
    before it returns, or be used only for that namespace."""
    return in_namespace(ns_fd, "net", func)
