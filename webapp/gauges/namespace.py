"""The `/gauges` socket.io namespace (see `webapp.gauges` for the events).

Built like `/notebook`: it receives its collaborators (who may read a sandbox, the
sandbox of a course's lab), refuses anonymous sockets at connect, and checks the right to
a sandbox on every `watch`; a user who signs out has their pages cut.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any, Callable

from flask import request
from flask_socketio import Namespace

from ..socketusers import socket_user
from ..socketusers import user_key as socket_user_key
from .sampler import Gauges

NAMESPACE = "/gauges"

Authorize = Callable[[Any, str, str], bool]
FindSandbox = Callable[[Any, Any, Any], "str | None"]


def room(sandbox_id: str) -> str:
    return f"gauges:{sandbox_id}"


class GaugeNamespace(Namespace):
    """`/gauges` for one app; `gauges` (set by `init_app`) holds the samplers."""

    gauges: Gauges

    def __init__(self, namespace: str, *, authorize: Authorize,
                 find_sandbox: FindSandbox | None = None,
                 get_user: Callable[[], Any] | None = None,
                 user_key: Callable[[Any], Hashable | None] | None = None):
        super().__init__(namespace)
        self.authorize = authorize
        self.find_sandbox = find_sandbox
        self.get_user = get_user or socket_user
        self.user_key = user_key or socket_user_key
        self._emit_lock = threading.Lock()
        self._lock = threading.Lock()
        self.users: dict[str, Hashable] = {}   # sid -> user key of each connected page

    def to_sandbox(self, sandbox_id: str, event: str, data: dict) -> None:
        """`event` to every page watching this sandbox's gauges; from any thread."""
        with self._emit_lock:
            self.socketio.emit(event, data, to=room(sandbox_id), namespace=self.namespace)

    def _error(self, message: str, reason: str, **ids) -> None:
        self.emit("error", {"message": message, "reason": reason,
                            **{k: v for k, v in ids.items() if v is not None}},
                  room=request.sid)

    def on_connect(self, auth=None):
        key = self.user_key(self.get_user())
        if key is None:
            return False  # signed-in users only (the gate says so to real browsers first)
        with self._lock:
            self.users[request.sid] = key

    def on_disconnect(self, reason=None):
        with self._lock:
            self.users.pop(request.sid, None)
        self.gauges.unwatch(request.sid)

    def disconnect_user(self, key: Hashable) -> int:
        """The user `key` signed out: cut their pages (by a background task: closing a
        socket waits for what was queued to it). Returns the pages cut."""
        with self._lock:
            sids = [sid for sid, user in self.users.items() if user == key]
            for sid in sids:
                del self.users[sid]
        for sid in sids:
            self.gauges.unwatch(sid)
        if sids:
            self.socketio.start_background_task(self._hang_up, sids)
        return len(sids)

    def _hang_up(self, sids: list[str]) -> None:
        for sid in sids:
            with self._emit_lock:
                self.socketio.server.disconnect(sid, namespace=self.namespace)

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
            self.leave_room(request.sid, room(old))
        self.enter_room(request.sid, room(sandbox_id))
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
            self.leave_room(request.sid, room(old))
        self.gauges.unwatch(request.sid)
