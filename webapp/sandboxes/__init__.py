"""Learners' sandboxes: made, reused and started again (`service`), their activity
(`activity`), their idle stop (`idle`), and the terminals of their lab pages.

`init_app(app, socketio)` gives an app what it holds for its sandboxes, all on the app
(`app.extensions`, keys in `service`): the client of sandboxd, the locks that make
parallel opens of one learner's lab take turns, the activity tracker, the idle sweeper,
and the `/terminal` namespace wired to them. Features reach them
through the functions re-exported here (`sandboxes.client()`, `sandboxes.touch(...)`).
"""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from sandbox.client import Client

from ..terminal import register_terminal
from . import idle
from .activity import ActivityTracker
from .service import (ACTIVITY, CLIENT, OPENING, TERMINAL, KeyedLocks, client,
                      find_for_terminal, may_use, notify, reset, sandbox_for, touch,
                      touch_sandbox, tracker)

__all__ = ["init_app", "client", "tracker", "sandbox_for", "reset", "may_use", "touch",
           "touch_sandbox", "notify", "ActivityTracker"]


def init_app(app: Flask, socketio: SocketIO) -> None:
    """The daemon's client, the activity tracker, the idle sweeper (it starts with the
    first request served) and the terminals, on `app`."""
    daemon = Client(app.config.get("NSLAB_SOCKET"))
    app.extensions[CLIENT] = daemon
    app.extensions[OPENING] = KeyedLocks()

    def all_clear(sandbox_id: str) -> None:
        notify(sandbox_id, "idle", {"sandbox_id": sandbox_id, "seconds_left": None}, app=app)

    activity = ActivityTracker(on_all_clear=all_clear)
    app.extensions[ACTIVITY] = activity
    idle.init_app(app)
    # Relay threads and the keystroke path run outside any app context: they get this
    # app's client and tracker themselves, never through current_app.
    app.extensions[TERMINAL] = register_terminal(
        socketio, get_client=lambda: daemon, authorize=may_use,
        find_sandbox=find_for_terminal, on_activity=activity.touch)
