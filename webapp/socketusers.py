"""Who is on a Socket.IO connection, and the namespace of signed-in pages that follow
sandboxes in rooms (the notebook and gauges namespaces build on it; the terminal namespace
uses the two functions).

`socket_user` is the signed-in user of the request (None in an app without Flask-Login, as
some tests make); `user_key` a hashable key for per-user bookkeeping (None: anonymous)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from flask import current_app, request
from flask_login import current_user, user_logged_out
from flask_socketio import Namespace

Authorize = Callable[[Any, str, str], bool]   # (user, sandbox id, "read"|"write") -> allowed
FindSandbox = Callable[[Any, Any, Any], "str | None"]   # (user, course, lab) -> sandbox id


def socket_user():
    if getattr(current_app, "login_manager", None) is None:
        return None
    return current_user._get_current_object()


def user_key(user) -> Hashable | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "id", None)


_default_user_key = user_key  # the parameter of the same name shadows it below


class SandboxRoomNamespace(Namespace):
    """Signed-in pages only (an anonymous socket is refused at connect), each remembered
    with its user so that signing out cuts them; events to a sandbox's room (`ROOM_PREFIX`
    + its id) from any thread; errors to the page that asked. Subclasses add the events,
    and `_left(sid)` to forget what a page that left was doing."""

    ROOM_PREFIX = ""

    def __init__(self, namespace: str, *, authorize: Authorize,
                 find_sandbox: FindSandbox | None = None,
                 get_user: Callable[[], Any] | None = None,
                 user_key: Callable[[Any], Hashable | None] | None = None):
        super().__init__(namespace)
        self.authorize = authorize
        self.find_sandbox = find_sandbox
        self.get_user = get_user or socket_user
        self.user_key = user_key or _default_user_key
        self._emit_lock = threading.Lock()
        self._lock = threading.Lock()
        self.users: dict[str, Hashable] = {}   # sid -> user key of each connected page

    def room(self, sandbox_id: str) -> str:
        return f"{self.ROOM_PREFIX}{sandbox_id}"

    def to_sandbox(self, sandbox_id: str, event: str, data: dict) -> None:
        """`event` to every page in this sandbox's room; from any thread."""
        with self._emit_lock:
            self.socketio.emit(event, data, to=self.room(sandbox_id), namespace=self.namespace)

    def _error(self, message: str, reason: str, **ids) -> None:
        self.emit("error", {"message": message, "reason": reason,
                            **{k: v for k, v in ids.items() if v is not None}},
                  room=request.sid)

    def _left(self, sid: str) -> None:
        """The page `sid` is gone (disconnected, or cut at sign-out)."""

    def on_connect(self, auth=None):
        key = self.user_key(self.get_user())
        if key is None:
            return False  # signed-in users only (the gate says so to real browsers first)
        with self._lock:
            self.users[request.sid] = key

    def on_disconnect(self, reason=None):
        with self._lock:
            self.users.pop(request.sid, None)
        self._left(request.sid)

    def disconnect_user(self, key: Hashable) -> int:
        """The user `key` signed out: cut their pages, from any thread (every event is
        checked on its own, but a page in a room would go on receiving). The sockets are
        cut by a background task: closing one waits for what was queued to it. Returns the
        pages cut."""
        with self._lock:
            sids = [sid for sid, user in self.users.items() if user == key]
            for sid in sids:
                del self.users[sid]
        for sid in sids:
            self._left(sid)
        if sids:
            self.socketio.start_background_task(self._hang_up, sids)
        return len(sids)

    def cut_at_sign_out(self, app) -> None:
        """Signing out of `app` cuts the user's pages here: a page in a room would go on
        receiving its events (each event it sends is checked, but not what it is sent)."""
        def signed_out(sender, user=None, **extra):
            if user is not None and getattr(user, "id", None) is not None:
                self.disconnect_user(user.id)

        user_logged_out.connect(signed_out, app, weak=False)

    def _hang_up(self, sids: list[str]) -> None:
        for sid in sids:
            with self._emit_lock:
                self.socketio.server.disconnect(sid, namespace=self.namespace)
