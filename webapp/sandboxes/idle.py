"""Idle stop: a learner's sandbox that saw no activity for IDLE_TIMEOUT seconds is stopped.

Activity is a keystroke in one of its terminals, a terminal opened (the lab page), a file
uploaded or downloaded, whatever calls `sandboxes.touch()` (a check, a cell run), and its
notebook kernel relaying messages (asked of sandboxd when a sandbox is near its timeout). It is noted in
memory (the app's `ActivityTracker`, cheap enough for every keystroke) and written to
`SandboxAssignment.last_active` by the sweeper at most every IDLE_PERSIST_INTERVAL.

The sweeper is one thread per app, in its own app context, started with the first request
the app serves (so never by the admin commands). Every IDLE_SWEEP_INTERVAL it looks at the
running assignments: IDLE_WARNING seconds before the stop the pages attached to the
sandbox get `idle {sandbox_id, seconds_left}` (again at each look, so a page that came
back knows too); at the timeout they get `stopped {sandbox_id, reason: "idle"}` and the
daemon stops the sandbox (processes end; its files and /root are kept), and the
assignment becomes STOPPED. Opening the lab again starts it (`sandbox_for`). The
sweeper never touches a terminal relay: it talks to the database and to sandboxd only.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from flask import Flask

from sandbox.errors import NotFound, SandboxError

from ..extensions import db
from ..models import SandboxAssignment, SandboxState, as_utc
from .service import client, notify, tracker

log = logging.getLogger("nslab.idle")

EXTENSION = "nslab.idle"  # app.extensions[EXTENSION]: the app's IdleSweeper


class IdleSweeper:
    def __init__(self, app: Flask):
        self.app = app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ settings

    @property
    def timeout(self) -> float:
        return float(self.app.config.get("IDLE_TIMEOUT") or 0)

    @property
    def warning(self) -> float:
        return min(float(self.app.config.get("IDLE_WARNING") or 0), self.timeout)

    @property
    def interval(self) -> float:
        configured = float(self.app.config.get("IDLE_SWEEP_INTERVAL") or 30)
        return max(0.05, min(configured, self.timeout / 20 or configured))

    # ------------------------------------------------------------ thread

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None and self.timeout > 0:
            self._thread = threading.Thread(target=self._run, name="nslab-idle", daemon=True)
            self._thread.start()

    def stop(self, wait: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.app.app_context():
                    self.sweep()
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad look
                log.exception("idle sweep failed")

    # ------------------------------------------------------------ one look

    def sweep(self, now: float | None = None) -> list[str]:
        """One look at every running sandbox; the ids of those it stopped."""
        now = time.time() if now is None else now
        timeout, warning = self.timeout, self.warning
        persist = float(self.app.config.get("IDLE_PERSIST_INTERVAL") or 30)
        activity = tracker()
        stopped = []
        running = db.session.execute(db.select(SandboxAssignment).where(
            SandboxAssignment.state == SandboxState.RUNNING,
            SandboxAssignment.sandbox_id.is_not(None))).scalars().all()
        for a in running:
            sid = a.sandbox_id
            last = last_activity(a)
            noted = activity.last(sid)
            if noted is not None and noted - _stamp(a.last_active) >= persist:
                a.last_active = datetime.fromtimestamp(noted, timezone.utc)
            idle = now - last
            if idle >= timeout - warning:
                # A notebook kernel at work (a long cell, output streaming) is activity
                # the web app may not have seen: asked of sandboxd only when near idle.
                kernel = _kernel_activity(sid)
                if kernel is not None and kernel > last:
                    activity.touch_at(sid, kernel)
                    idle = now - kernel
            if idle >= timeout:
                if self._stop_idle(a, idle):
                    stopped.append(sid)
            elif idle >= timeout - warning:
                activity.warn(sid)
                notify(sid, "idle", {"sandbox_id": sid, "seconds_left": round(timeout - idle, 1),
                                     "idle_seconds": round(idle, 1)})
        db.session.commit()
        return stopped

    def _stop_idle(self, a: SandboxAssignment, idle: float) -> bool:
        sid = a.sandbox_id
        # Activity may have come in while this look ran (a page opened): it wins.
        if time.time() - last_activity(a) < self.timeout:
            return False
        # The pages hear it first, so the shells that end next are explained.
        notify(sid, "stopped", {"sandbox_id": sid, "reason": "idle",
                                "idle_seconds": round(idle, 1)})
        try:
            client().stop(sid)
        except NotFound:
            pass  # destroyed meanwhile: stopped enough
        except SandboxError as e:
            log.warning("could not stop idle sandbox %s: %s", sid, e.message)
            return False
        log.info("stopped sandbox %s (user %s, course %s, lab %s) after %.0f s idle", sid,
                 a.user_id, a.course_id, a.lab_id, idle)
        a.state = SandboxState.STOPPED
        db.session.commit()
        tracker().forget(sid)
        return True


def _kernel_activity(sandbox_id: str) -> float | None:
    """When the sandbox's notebook kernel last relayed a message (not its heartbeat), or
    None: no kernel, or the daemon could not say."""
    try:
        return float(client().kernel(sandbox_id)["last_activity"])
    except NotFound:
        return None
    except SandboxError as e:
        log.warning("could not ask for sandbox %s's kernel: %s", sandbox_id, e.message)
        return None


def last_activity(assignment: SandboxAssignment) -> float:
    """When the sandbox last saw activity (epoch seconds): memory or database, the later."""
    return max(_stamp(assignment.last_active), tracker().last(assignment.sandbox_id or "") or 0.0)


def _stamp(value: datetime | None) -> float:
    return 0.0 if value is None else as_utc(value).timestamp()


def init_app(app: Flask) -> None:
    """Give the app its sweeper; it starts with the first request the app serves."""
    sweeper = IdleSweeper(app)
    app.extensions[EXTENSION] = sweeper
    if not app.config.get("IDLE_SWEEPER") or sweeper.timeout <= 0:
        return
    lock = threading.Lock()

    @app.before_request
    def start_idle_sweeper():
        if not sweeper.running:
            with lock:
                sweeper.start()
