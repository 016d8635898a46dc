"""The `/terminal` socket.io namespace: the pages' events, the relays of each page, and
events to every page attached to a sandbox (see `webapp.terminal` for the protocol).

A namespace receives its collaborators (`register_terminal`): it knows nothing of
accounts, courses or the database, and the test suite serves it from a bare Flask app.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Hashable
from typing import Any, Callable

from flask import request
from flask_socketio import Namespace

from sandbox.client import Client
from sandbox.errors import CapacityExhausted, DaemonUnavailable, NotFound, SandboxError

from ..socketusers import socket_user
from ..socketusers import user_key as socket_user_key
from .relay import Relay

NAMESPACE = "/terminal"
SHELL = ["bash", "-l"]
DEFAULT_SIZE = (24, 80)

Authorize = Callable[[Any, str, str], bool]
FindSandbox = Callable[[Any, Any, Any], "str | None"]
OnActivity = Callable[[str], None]
UserKey = Callable[[Any], "Hashable | None"]


def room(sandbox_id: str) -> str:
    return f"sandbox:{sandbox_id}"


class TerminalNamespace(Namespace):
    """`/terminal` for one app, and its registry of terminals: the relays of each page
    (by socket.io sid and exec id), the user of each page (sid → user key, for
    `disconnect_user`) and the last shell opened in each sandbox. The web app keeps it
    on `app.extensions` (see `webapp.sandboxes`)."""

    def __init__(self, namespace: str, *, get_client: Callable[[], Client], authorize: Authorize,
                 get_user: Callable[[], Any] | None = None,
                 find_sandbox: FindSandbox | None = None,
                 on_activity: OnActivity | None = None, user_key: UserKey | None = None):
        super().__init__(namespace)
        self.get_client = get_client
        self.authorize = authorize
        self.get_user = get_user or socket_user
        self.find_sandbox = find_sandbox
        self.on_activity = on_activity or (lambda sandbox_id: None)
        self.user_key = user_key or socket_user_key
        self.relays: dict[str, dict[str, Relay]] = {}   # sid → exec id → relay
        self.users: dict[str, Hashable] = {}            # sid → user key (signed-in pages)
        # Revocations (`disconnect_user`), counted, and the count at each user's last one:
        # a page that connects while its user signs out is refused (see on_connect).
        self._revocations = 0
        self._revoked_at: dict[Hashable, int] = {}
        self.latest_shell: dict[str, str] = {}          # sandbox id → last shell opened
        self._lock = threading.Lock()
        # python-socketio sends a binary event as several engine.io packets, unlocked:
        # two relay threads emitting at once could interleave them.
        self._emit_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing

    def send(self, sid: str, event: str, *args) -> None:
        with self._emit_lock:
            # A tuple is several event arguments to python-socketio: output(exec_id, bytes).
            data = args[0] if len(args) == 1 else tuple(args)
            self.socketio.emit(event, data, to=sid, namespace=self.namespace)

    def to_sandbox(self, sandbox_id: str, event: str, data: dict) -> None:
        """`event` to every page attached to a terminal of this sandbox; from any thread."""
        with self._emit_lock:
            self.socketio.emit(event, data, to=room(sandbox_id), namespace=self.namespace)

    def _error(self, message: str, **ids) -> None:
        self.send(request.sid, "error", {"message": message, **{k: v for k, v in ids.items()
                                                                 if v is not None}})

    def forget(self, relay: Relay, ended: bool = False) -> None:
        with self._lock:
            terms = self.relays.get(relay.sid, {})
            if terms.get(relay.exec_id) is relay:
                del terms[relay.exec_id]
            if ended and self.latest_shell.get(relay.sandbox_id) == relay.exec_id:
                del self.latest_shell[relay.sandbox_id]

    def _relay(self, data, sid: str | None = None) -> Relay | None:
        exec_id = data.get("exec_id") if isinstance(data, dict) else data
        if not isinstance(exec_id, str):
            return None
        return self.relays.get(sid or request.sid, {}).get(exec_id)

    # Keystrokes and acks, the events that come by the hundred a second, are handled
    # without Flask-SocketIO's wrapping: it pushes an app and request context for each
    # event, which decodes the signed session cookie every time, all under the GIL that
    # every other terminal's echo waits for. These two need only the sid (who the page
    # is was settled when it opened the terminal). Every other event goes through Flask.
    _BARE = {"input": "_on_input", "ack": "_on_ack"}

    def trigger_event(self, event, *args):
        bare = self._BARE.get(event)
        if bare is not None and args:
            return getattr(self, bare)(*args)  # the sid, then the event's arguments
        return super().trigger_event(event, *args)

    def stats(self) -> list[dict]:
        with self._lock:
            return [r.stats() for terms in self.relays.values() for r in terms.values()]

    # ------------------------------------------------------------ events

    def on_connect(self, auth=None):
        _no_delay(request.environ)
        with self._lock:
            before = self._revocations
        # Loading the user reads the database; a sign-out may commit and run
        # disconnect_user meanwhile, before this page is in `users` for it to find. Such
        # a page was signed in with a cookie that is revoked now: refuse it.
        key = self.user_key(self.get_user())
        with self._lock:
            if key is not None and self._revoked_at.get(key, 0) > before:
                return False
            self.relays[request.sid] = {}
            if key is not None:
                self.users[request.sid] = key

    def on_disconnect(self, reason=None):
        with self._lock:
            terms = self.relays.pop(request.sid, {})
            self.users.pop(request.sid, None)
        for relay in terms.values():
            relay.close()  # the shells go on; the page reattaches when it comes back

    def disconnect_user(self, key: Hashable) -> int:
        """The user `key` signed out (their sessions are revoked): cut every page of theirs
        on this process, from any thread (the sign-out request's). Keystrokes and acks
        skip the per-event sign-in check (`_BARE`), so without this a terminal opened
        before would go on taking keys until its socket closed. The relays close here and
        now (the shells go on, as when a page closes; signed in again, the page
        reattaches); the sockets are disconnected by a background task, since closing an
        engine.io socket waits until the client has been sent what was queued, and a
        client that stops reading must not hold up the sign-out. Returns the pages cut."""
        with self._lock:
            self._revocations += 1
            self._revoked_at[key] = self._revocations
            sids = [sid for sid, user in self.users.items() if user == key]
            # Out of `relays`: from now on this page's keystrokes find no relay.
            terms = [self.relays.pop(sid, {}) for sid in sids]
        for relay in (r for t in terms for r in t.values()):
            relay.close()
        if sids:
            self.socketio.start_background_task(self._hang_up, sids)
        return len(sids)

    def cut_writers(self, key: Hashable, sandbox_id: str, message: str, reason: str, *,
                    viewers_too: bool = False) -> int:
        """Close the relays through which user `key`'s pages type into this sandbox (their
        read-only ones stay, unless `viewers_too`: the user may not even watch it any
        more), from any thread: their right to type is gone (a take-over ended). Each page
        hears `error {message, reason, exec_id}`; the shell goes on. Returns the relays
        cut."""
        with self._lock:
            cut = []
            for sid in [sid for sid, user in self.users.items() if user == key]:
                terms = self.relays.get(sid, {})
                for exec_id, relay in list(terms.items()):
                    if relay.sandbox_id == sandbox_id and (viewers_too or not relay.readonly):
                        # Out of `relays` first: the page's next keystroke finds no relay.
                        del terms[exec_id]
                        cut.append(relay)
        for relay in cut:
            relay.close()
            self.send(relay.sid, "error", {"message": message, "reason": reason,
                                           "exec_id": relay.exec_id,
                                           "sandbox_id": relay.sandbox_id})
        return len(cut)

    def _hang_up(self, sids: list[str]) -> None:
        server = self.socketio.server
        for sid in sids:
            eio_sid = server.manager.eio_sid_from_sid(sid, self.namespace)
            # The namespace first: the page hears "io server disconnect" and does not
            # reconnect; then the transport, for a client that would keep it open anyway
            # (it holds a server thread while it is open). The disconnect packet takes
            # the emit lock: it must not land between the packets of a binary event.
            with self._emit_lock:
                server.disconnect(sid, namespace=self.namespace)
            if eio_sid is not None:
                server.eio.disconnect(eio_sid)

    def on_open(self, data):
        if not isinstance(data, dict):
            return self._error("open needs {sandbox_id, rows, cols}")
        tag = data.get("tag")
        sandbox_id = data.get("sandbox_id")
        exec_id = data.get("exec_id") or None
        readonly = bool(data.get("readonly"))
        guest = bool(data.get("guest")) and not readonly
        rows, cols = _size(data)
        if exec_id is not None and not isinstance(exec_id, str):
            return self._error("exec_id must be a string", tag=tag)
        user = self.get_user()
        if sandbox_id is None and self.find_sandbox is not None:
            try:
                sandbox_id = self.find_sandbox(user, data.get("course"), data.get("lab"))
            except SandboxError as e:
                return self._error(e.message, tag=tag, retry=_retryable(e))
        if not isinstance(sandbox_id, str) or not sandbox_id:
            return self._error("there is no sandbox for this terminal", tag=tag)
        if not self.authorize(user, sandbox_id, "read" if readonly else "write"):
            return self._error("you may not use this sandbox's terminal", tag=tag,
                               sandbox_id=sandbox_id)
        client = self.get_client()
        try:
            if readonly and exec_id is None:
                exec_id = self.latest_shell.get(sandbox_id)
            reattached = exec_id is not None and _alive_shell(client, exec_id, sandbox_id)
            if not reattached:
                if readonly or guest:
                    return self._error("there is no terminal to watch in this sandbox",
                                       tag=tag, exec_id=exec_id)
                exec_id = client.exec(sandbox_id, SHELL, tty=True, rows=rows, cols=cols)["id"]
            elif not (readonly or guest):
                client.resize(exec_id, rows, cols)  # this page's size, before the replay
            stream = client.attach(exec_id, readonly=readonly, replay=True)
        except SandboxError as e:
            return self._error(e.message, tag=tag, exec_id=exec_id, retry=_retryable(e))
        relay = Relay(self, request.sid, exec_id, sandbox_id, readonly, stream, self.get_client,
                      new_shell=not reattached)
        with self._lock:
            terms = self.relays.get(request.sid)
            if terms is None:  # the page went away while we were opening
                stream.close()
                return
            old = terms.get(exec_id)
            terms[exec_id] = relay
            if not readonly:
                self.latest_shell[sandbox_id] = exec_id
        if old is not None:
            old.close()
        if not readonly and not self.authorize(user, sandbox_id, "write"):
            # The right to type was withdrawn while this open was under way (a take-over
            # ended): `cut_writers` ran before the relay was in `relays`, so it is cut here.
            self.forget(relay)
            stream.close()   # its relay never ran: nothing else closes the stream
            return self._error("you may not use this sandbox's terminal", tag=tag,
                               sandbox_id=sandbox_id)
        self.enter_room(request.sid, room(sandbox_id))
        if not readonly:
            self.on_activity(sandbox_id)
        # 'opened' goes out before the relay starts, so the page resets its screen before
        # the scrollback arrives.
        self.send(request.sid, "opened", {"tag": tag, "exec_id": exec_id,
                                          "sandbox_id": sandbox_id, "readonly": readonly,
                                          "reattached": reattached})
        self.socketio.start_background_task(relay.run)

    def _on_input(self, sid, exec_id, seq=None, data=None, binary=False):
        # Text, not a binary event: python-socketio rebuilds a binary event from two
        # engine.io messages, and with async handlers (threading mode's default) each
        # message is handled in its own thread, so the two can be taken out of order.
        if data is None and isinstance(seq, (str, bytes)):
            seq, data = None, seq  # input(exec_id, data), unnumbered
        relay = self._relay(exec_id, sid)
        if relay is None:
            return
        if isinstance(data, str):
            try:
                data = data.encode("latin-1" if binary else "utf-8", "replace")
            except UnicodeEncodeError:
                return  # "binary" text with a char above 255
        if not isinstance(data, (bytes, bytearray)) or isinstance(seq, bool):
            return
        relay.input(seq if isinstance(seq, int) else None, bytes(data))
        if not relay.readonly:
            self.on_activity(relay.sandbox_id)

    def on_touch(self, data):
        """Activity without a keystroke ("keep working" on the page), for a sandbox this
        page types into."""
        sandbox_id = data.get("sandbox_id") if isinstance(data, dict) else None
        if not isinstance(sandbox_id, str):
            return
        terms = self.relays.get(request.sid, {})
        if any(r.sandbox_id == sandbox_id and not r.readonly for r in list(terms.values())):
            self.on_activity(sandbox_id)

    def on_resize(self, data):
        relay = self._relay(data) if isinstance(data, dict) else None
        if relay is not None:
            rows, cols = _size(data)
            relay.resize(rows, cols)

    def _on_ack(self, sid, data):
        relay = self._relay(data, sid)
        n = data.get("bytes") if isinstance(data, dict) else None
        if relay is not None and isinstance(n, int) and n > 0:
            relay.ack(n)

    def on_close(self, data):
        relay = self._relay(data) if isinstance(data, dict) else None
        if relay is None:
            return
        kill = bool(data.get("kill")) and not relay.readonly
        self.forget(relay, ended=kill)
        relay.close()
        if kill:
            try:  # SIGKILL to the shell; the PTY's hangup ends what it started
                self.get_client().forget_exec(relay.exec_id)
            except SandboxError:
                pass


def register_terminal(socketio, *, get_client: Callable[[], Client], authorize: Authorize,
                      get_user: Callable[[], Any] | None = None,
                      find_sandbox: FindSandbox | None = None,
                      on_activity: OnActivity | None = None,
                      user_key: UserKey | None = None,
                      namespace: str = NAMESPACE) -> TerminalNamespace:
    """Serve terminals on `namespace`. `get_client()` gives a sandbox.client.Client;
    `authorize(user, sandbox_id, mode)` with mode "write" (type into it) or "read"
    (watch it) says whether the user may; `get_user()` defaults to flask_login's
    current_user where the app has a login manager, else None. `find_sandbox(user,
    course, lab)` gives the sandbox id for an `open` that names a course and lab
    instead (the page need not know it); it may raise SandboxError with a message.
    `on_activity(sandbox_id)` is called on every keystroke, `touch` and writable open (it
    must be cheap: it runs on the keystroke's path). `user_key(user)` is what
    `disconnect_user` knows a user's pages by (default: the user's `id`, for a signed-in
    user; None: the page is not recorded)."""
    ns = TerminalNamespace(namespace, get_client=get_client, authorize=authorize,
                           get_user=get_user, find_sandbox=find_sandbox,
                           on_activity=on_activity, user_key=user_key)
    socketio.on_namespace(ns)
    return ns


def _retryable(e: SandboxError) -> bool | None:
    """The daemon is down or out of capacity: the page says so and tries again."""
    return True if isinstance(e, (DaemonUnavailable, CapacityExhausted)) else None



def _no_delay(environ) -> None:
    """Turn Nagle's algorithm off for this connection: a binary socket.io event is two
    WebSocket messages, and the second would wait for the peer's delayed ACK, 40 ms per
    keystroke's echo. gunicorn sets TCP_NODELAY itself; Werkzeug's server does not."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _size(data) -> tuple[int, int]:
    rows, cols = data.get("rows"), data.get("cols")
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000
             for v in (rows, cols))
    return (rows, cols) if ok else DEFAULT_SIZE


def _alive_shell(client: Client, exec_id: str, sandbox_id: str) -> bool:
    """Whether exec_id is a running terminal session of this sandbox."""
    try:
        info = client.exec_info(exec_id)
    except NotFound:
        return False
    return info.get("sandbox") == sandbox_id and bool(info.get("running")) and bool(info.get("tty"))
