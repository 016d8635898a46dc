"""The `/notebook` socket.io namespace (see `webapp.notebook` for the events).

Like `/terminal`, it receives its collaborators (`register_notebook`): who the user is,
whether they may use a sandbox ("write": run, interrupt, restart; "read": watch), the
sandbox of a course's lab, and the kernel registry. Every event is authorized on its
own: a page's right to a sandbox is never remembered from an earlier event, so a user
who signed out or lost the right gets nothing more.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from flask import request

from sandbox.errors import SandboxError

from ..socketusers import Authorize, FindSandbox, SandboxRoomNamespace
from .kernels import MAX_SOURCE, NotebookError, Notebooks

NAMESPACE = "/notebook"
CELL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")  # a step id (64) and a cell index

class NotebookNamespace(SandboxRoomNamespace):
    """`/notebook` for one app; `notebooks` holds the kernels."""

    ROOM_PREFIX = "notebook:"

    def __init__(self, namespace: str, *, notebooks: Notebooks, **kwargs):
        super().__init__(namespace, **kwargs)
        self.notebooks = notebooks

    def _allowed(self, data, mode: str) -> tuple[Any, str] | None:
        """(user, sandbox id) when the signed-in user may `mode` the sandbox the event
        names; else an `error` to this page and None."""
        sandbox_id = data.get("sandbox_id") if isinstance(data, dict) else None
        user = self.get_user()
        if not isinstance(sandbox_id, str) or not sandbox_id:
            self._error("name the sandbox (sandbox_id)", "invalid")
            return None
        if self.user_key(user) is None or not self.authorize(user, sandbox_id, mode):
            self._error("you may not use this sandbox's notebook" if mode == "write"
                        else "you may not watch this sandbox's notebook", "forbidden",
                        sandbox_id=sandbox_id)
            return None
        return user, sandbox_id

    # ------------------------------------------------------------ events

    def on_open(self, data):
        """{sandbox_id | course+lab, readonly?, start?, tag?} → opened {tag, sandbox_id,
        readonly, status}; with start, a writer's open starts (or reattaches to) the kernel
        (a lab page opens without: a kernel costs the sandbox memory, so it starts when
        the Notebook tab opens or a cell runs)."""
        if not isinstance(data, dict):
            return self._error("open needs {sandbox_id} or {course, lab}", "invalid")
        tag = data.get("tag") if isinstance(data.get("tag"), str) else None
        readonly = bool(data.get("readonly"))
        user = self.get_user()
        if self.user_key(user) is None:
            return self._error("sign in first", "forbidden", tag=tag)
        sandbox_id = data.get("sandbox_id")
        if sandbox_id is None and self.find_sandbox is not None and not readonly:
            try:
                sandbox_id = self.find_sandbox(user, data.get("course"), data.get("lab"))
            except SandboxError as e:
                return self._error(e.message, e.reason.value, tag=tag)
        if not isinstance(sandbox_id, str) or not sandbox_id:
            return self._error("there is no sandbox for this notebook", "invalid", tag=tag)
        mode = "read" if readonly else "write"
        if not self.authorize(user, sandbox_id, mode):
            return self._error("you may not use this sandbox's notebook", "forbidden",
                               tag=tag, sandbox_id=sandbox_id)
        self.enter_room(request.sid, self.room(sandbox_id))
        if not readonly and data.get("start"):
            self.notebooks.open(sandbox_id)
            self.notebooks.on_activity(sandbox_id)
        self.emit("opened", {"tag": tag, "sandbox_id": sandbox_id, "readonly": readonly,
                             "status": self.notebooks.status(sandbox_id)}, room=request.sid)

    def on_run(self, data):
        """{sandbox_id, cell_id, source}: queue one cell."""
        allowed = self._allowed(data, "write")
        if allowed is not None:
            cell = _cell(data)
            if cell is None:
                return self._error(f"a cell needs an id (letters, digits, _.:-; at most 80) "
                                   f"and a source of at most {MAX_SOURCE} characters",
                                   "invalid", sandbox_id=allowed[1])
            self._queue(allowed, [cell])

    def on_run_all(self, data):
        """{sandbox_id, cells: [{cell_id, source}, ...]}: queue them in order."""
        allowed = self._allowed(data, "write")
        if allowed is not None:
            raw = data.get("cells")
            cells = [_cell(c) for c in raw] if isinstance(raw, list) else [None]
            if not cells or None in cells or len({c[0] for c in cells}) != len(cells):
                return self._error("run_all needs a list of cells, each with its own id and "
                                   "a source", "invalid", sandbox_id=allowed[1])
            self._queue(allowed, cells)

    def _queue(self, allowed, cells) -> None:
        user, sandbox_id = allowed
        try:
            self.notebooks.run(sandbox_id, self.user_key(user), cells)
        except NotebookError as e:
            return self._error(e.message, e.reason, sandbox_id=sandbox_id)
        self.notebooks.on_activity(sandbox_id)

    def on_interrupt(self, data):
        allowed = self._allowed(data, "write")
        if allowed is not None:
            self.notebooks.interrupt(allowed[1])

    def on_restart(self, data):
        allowed = self._allowed(data, "write")
        if allowed is not None:
            self.notebooks.restart(allowed[1])

    def on_status(self, data):
        """{sandbox_id} → kernel {sandbox_id, status} to this page."""
        allowed = self._allowed(data, "read")
        if allowed is not None:
            self.emit("kernel", {"sandbox_id": allowed[1],
                                 "status": self.notebooks.status(allowed[1])}, room=request.sid)


def register_notebook(socketio, *, notebooks: Notebooks, authorize: Authorize,
                      find_sandbox: FindSandbox | None = None,
                      get_user: Callable[[], Any] | None = None,
                      namespace: str = NAMESPACE) -> NotebookNamespace:
    """Serve notebooks on `namespace` (collaborators as in `webapp.terminal`)."""
    ns = NotebookNamespace(namespace, notebooks=notebooks, authorize=authorize,
                           find_sandbox=find_sandbox, get_user=get_user)
    socketio.on_namespace(ns)
    return ns


def _cell(data) -> tuple[str, str] | None:
    if not isinstance(data, dict):
        return None
    cell_id, source = data.get("cell_id"), data.get("source")
    if not isinstance(cell_id, str) or not CELL_ID.match(cell_id):
        return None
    if not isinstance(source, str) or len(source) > MAX_SOURCE:
        return None
    return cell_id, source

