"""Live gauges of a learner's sandbox beside the terminal: CPU use against its quota,
memory against its limit, pids against their maximum, for the sandbox's cgroup and for
each child cgroup the learner made (at most `MAX_GROUPS`), sampled from sandboxd once a
second and pushed over socket.io `/gauges`.

One `Sampler` thread per watched sandbox, shared by every page watching it: started by
the first page's `watch`, stopped when the last page leaves (`Gauges`). Reading stats is
never sandbox activity: a sandbox watched by an open page still idles out, and its
gauges then say "stopped" until it runs again.

Events from the page (signed-in sockets only; "read" right: the sandbox's learner or the
instructor of its course, `service.may_use`):
  watch   {sandbox_id | course+lab}  → watching {sandbox_id}, then `gauges` every second;
          a page watches one sandbox at a time (a new watch leaves the old one). By course
          and lab it finds the learner's sandbox and never makes or starts one (nor
          counts as activity): before the terminal's first open has made it, the answer
          is `error` with reason `no_sandbox` and the page asks again a little later
  unwatch {}                         → stops this page's gauges
Events to the pages watching a sandbox (room `gauges:<id>`):
  gauges  {sandbox_id, status: running|stopped|unavailable, time, groups: [{path, cpu,
          cpu_max, memory, memory_max, pids, pids_max, throttled}], hidden}
          `groups[0]` is the sandbox ("/"); cpu in CPUs (from cpu_usage_ns's rate, None on
          the first sample), a *_max None when there is no limit; hidden: child groups
          left out past MAX_GROUPS (or cut by sandboxd's own bound)
  error   {message, reason, sandbox_id?}: to the page that asked
"""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from ..extensions import db
from ..models import SandboxAssignment
from ..sandboxes.service import CLIENT, may_use
from .namespace import NAMESPACE, GaugeNamespace
from .sampler import INTERVAL, MAX_GROUPS, Gauges, Sampler, summarize

GAUGES = "nslab.gauges"    # app.extensions[GAUGES]: the GaugeNamespace

__all__ = ["init_app", "GAUGES", "NAMESPACE", "GaugeNamespace", "Gauges", "Sampler",
           "summarize", "INTERVAL", "MAX_GROUPS"]


def init_app(app: Flask, socketio: SocketIO) -> GaugeNamespace:
    """The `/gauges` namespace of `app` (after `sandboxes.init_app`: it reads through its
    daemon client). `app.extensions[GAUGES]`."""
    daemon = app.extensions[CLIENT]
    ns = GaugeNamespace(NAMESPACE, authorize=may_use, find_sandbox=lab_sandbox)
    ns.gauges = Gauges(daemon, emit=ns.to_sandbox,
                       interval=float(app.config.get("GAUGES_INTERVAL", INTERVAL)),
                       start=socketio.start_background_task)
    socketio.on_namespace(ns)

    ns.cut_at_sign_out(app)
    app.extensions[GAUGES] = ns
    return ns


def lab_sandbox(user, course_id, lab_id) -> str | None:
    """The id of `user`'s sandbox for a course's lab, if one was made; never makes or
    starts one (as `sandboxes.sandbox_for` does for the terminal), never touches its
    activity: a gauges page reconnecting must not wake a sandbox that idled out."""
    try:
        course_id = int(course_id)
    except (TypeError, ValueError):
        return None
    if not isinstance(lab_id, str) or getattr(user, "id", None) is None:
        return None
    return db.session.execute(db.select(SandboxAssignment.sandbox_id).filter_by(
        user_id=user.id, course_id=course_id, lab_id=lab_id)).scalar_one_or_none()
