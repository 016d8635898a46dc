"""What a Socket.IO request may hold: the gate in front of engine.io.

Under gunicorn's threads each open WebSocket (and each pending long-poll) holds a worker
thread for as long as it lasts. Left to engine.io, anyone could open them without
signing in, and 256 connections took every thread: no page answered any learner. So,
before engine.io sees it, a request to the socket.io path:
- without a signed-in user is refused at once (401), before a handshake is made;
- is counted while it runs, per signed-in user, per client address and in all, and is
  refused (429) past any bound: the threads beyond `total` stay free for pages, and no
  one account or address takes them all.
It also gives engine.io's own responses (handshake, polling) the security headers the
pages get from Flask's after_request, which engine.io's responses never pass through.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Callable, Iterable

from flask import Flask
from flask_login import current_user

# Defaults for a worker of 256 threads (nslab serve passes `total` for its thread count):
# 64 threads always left to pages; a learner's page is one connection (its terminals
# share it), so 32 covers many tabs and an instructor's shadowing.
PER_USER = 32
PER_ADDRESS = 128     # a classroom behind one NAT address: 30-60 pages
TOTAL = 192
PAGE_THREADS = 64     # nslab serve: total = threads - PAGE_THREADS


class SocketGate:
    """WSGI middleware around the app that engine.io wraps (socketio.init_app's)."""

    def __init__(self, app: Flask, wsgi_app: Callable, *, headers: list[tuple[str, str]],
                 path: str = "socket.io"):
        self.app = app
        self.wsgi_app = wsgi_app
        self.prefix = "/" + path.strip("/") + "/"
        self.headers = headers
        self.per_user = int(app.config.get("SOCKETS_PER_USER") or PER_USER)
        self.per_address = int(app.config.get("SOCKETS_PER_ADDRESS") or PER_ADDRESS)
        self.total = int(app.config.get("SOCKETS_MAX") or TOTAL)
        self._lock = threading.Lock()
        self._users: Counter = Counter()
        self._addresses: Counter = Counter()
        self._open = 0

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(self.prefix):
            return self.wsgi_app(environ, start_response)
        start = self._with_headers(start_response)
        user = self._user_id(environ)
        if user is None:
            return _refuse(start, "401 Unauthorized", "unauthorized",
                           "Sign in before opening a terminal.")
        address = environ.get("REMOTE_ADDR") or "?"
        with self._lock:
            if self._open >= self.total or self._users[user] >= self.per_user or \
                    self._addresses[address] >= self.per_address:
                full = True
            else:
                full = False
                self._open += 1
                self._users[user] += 1
                self._addresses[address] += 1
        if full:
            return _refuse(start, "429 Too Many Requests", "too_many_connections",
                           "Too many open terminal connections; close a tab and reload.")
        try:
            # engine.io returns once the WebSocket has closed or the poll is answered (its
            # body is a list): the thread is free again when this returns.
            return self.wsgi_app(environ, start)
        finally:
            with self._lock:
                self._open -= 1
                _drop(self._users, user)
                _drop(self._addresses, address)

    def counts(self) -> dict:
        with self._lock:
            return {"open": self._open, "users": dict(self._users),
                    "addresses": dict(self._addresses)}

    def _user_id(self, environ) -> str | None:
        # The whole sign-in check (the session cookie, then the user loader), the one the
        # pages get; once per HTTP request, not per socket.io event.
        with self.app.request_context(environ):
            user = current_user
            if user is None or not user.is_authenticated:
                return None
            return str(user.get_id())

    def _with_headers(self, start_response):
        def start(status, headers, exc_info=None):
            have = {name.lower() for name, _ in headers}
            extra = [(k, v) for k, v in self.headers if k.lower() not in have]
            return start_response(status, list(headers) + extra, exc_info)
        return start


def _refuse(start_response, status: str, error: str, message: str) -> Iterable[bytes]:
    body = json.dumps({"error": error, "message": message}).encode()
    # Connection: close, so a refused WebSocket upgrade does not linger as a kept-alive
    # connection either.
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), ("Connection", "close")])
    return [body]


def _drop(counter: Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
