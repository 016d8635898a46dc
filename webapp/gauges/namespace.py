"""The `/gauges` socket.io namespace (see `webapp.gauges` for the events).

Built like `/notebook`: it receives its collaborators (who may read a sandbox, the
sandbox of a course's lab), refuses anonymous sockets at connect, and checks the right to
a sandbox on every `watch`; a user who signs out has their pages cut.
"""

from __future__ import annotations

from flask import request

from ..socketusers import SandboxRoomNamespace
from .sampler import Gauges

NAMESPACE = "/gauges"


class GaugeNamespace(SandboxRoomNamespace):
    """`/gauges` for one app; `gauges` (set by `init_app`) holds the samplers."""

    ROOM_PREFIX = "gauges:"
    gauges: Gauges

    def _left(self, sid: str) -> None:
        self.gauges.unwatch(sid)

    def on_watch(self, data):
        """{sandbox_id | course+lab} → watching {sandbox_id}, then `gauges` each second."""
        if not isinstance(data, dict):
            return self._error("watch needs {sandbox_id} or {course, lab}", "invalid")
        user = self.get_user()
        if self.user_key(user) is None:
            return self._error("sign in first", "forbidden")
        sandbox_id = data.get("sandbox_id")
        if sandbox_id is None and self.find_sandbox is not None and "course" in data:
            # The learner's own lab page: the sandbox its terminal opens, once it has.
            sandbox_id = self.find_sandbox(user, data.get("course"), data.get("lab"))
            if sandbox_id is None:
                return self._error("this lab has no sandbox yet", "no_sandbox")
        if not isinstance(sandbox_id, str) or not sandbox_id:
            return self._error("name the sandbox (sandbox_id) or its course and lab",
                               "invalid")
        if not self.authorize(user, sandbox_id, "read"):
            return self._error("you may not watch this sandbox's gauges", "forbidden",
                               sandbox_id=sandbox_id)
        old = self.gauges.watching.get(request.sid)
        if old is not None and old != sandbox_id:
            self.leave_room(request.sid, self.room(old))
        self.enter_room(request.sid, self.room(sandbox_id))
        self.gauges.watch(request.sid, sandbox_id)
        self.emit("watching", {"sandbox_id": sandbox_id}, room=request.sid)
        # A page joining a sampler already running sees its latest sample at once, not
        # an empty panel for up to a second.
        last = self.gauges.last(sandbox_id)
        if last is not None:
            self.emit("gauges", last, room=request.sid)

    def on_unwatch(self, data=None):
        old = self.gauges.watching.get(request.sid)
        if old is not None:
            self.leave_room(request.sid, self.room(old))
        self.gauges.unwatch(request.sid)
