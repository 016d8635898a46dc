"""gunicorn settings for `nslab serve` (nslab/cli/web.py passes this module with --config)."""

from __future__ import annotations

import gc
import time

from gunicorn import util
from gunicorn.workers.gthread import _DEFER, ThreadWorker


def post_worker_init(worker) -> None:
    """Once the worker has loaded the app: take what exists now (the code of every module
    and what create_app built, about 110,000 objects, none of them ever garbage) out of
    the cyclic garbage collector's sight. A full collection scans every tracked object
    with the GIL held: 60-100 ms during which no terminal of any learner moves, which is
    what the echo p99 caught. What is made afterwards is collected as before."""
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------- the worker

# A request's head (request line and headers) must be complete within this many seconds
# of its first byte, and no thread waits for it meanwhile.
HEAD_TIMEOUT = 10.0
# Larger than any head gunicorn accepts (limit_request_line 4094 + limit_request_fields
# 100 x limit_request_field_size 8190): past it the parser refuses the request.
HEAD_MAX = 1 << 20
# After the head, a request body (a form, an upload) or a response the client will not
# read may stall a thread this long per read or write; a WebSocket never times out.
BODY_TIMEOUT = 30.0
# How long a closing connection waits for the client's own close (so the kernel does not
# reset the connection under the last response).
CLOSE_LINGER = 0.05


class HeadFirstWorker(ThreadWorker):
    """gunicorn's gthread worker that gives a connection a thread only once its
    request's head has arrived whole.

    gthread commits a thread to a connection as soon as its first byte is there, then
    reads the rest of the head blocking, with no time limit: a client that sends a
    request line and then one header a second held a thread for as long as it liked, and
    a few hundred such clients left no thread for anyone (the slow-header attack of
    tests/test_web_dos.py). Here a thread takes what has arrived without blocking; while
    the head is incomplete the connection goes back to the worker's poller (gthread's
    own "pending" list, which closes it after `keepalive` seconds without a byte) and
    comes back when more arrives; a head still incomplete HEAD_TIMEOUT seconds after its
    first byte closes the connection."""

    def handle(self, conn):
        ready = self._head_ready(conn)
        if ready is None:
            return _DEFER if self.alive else False
        result = super().handle(conn) if ready else False
        if result is False:
            # Closed here, in this thread, lingering at most CLOSE_LINGER: gthread would
            # close it on its main thread, the one that accepts and polls for everyone,
            # lingering up to 2 s for the client to close first, so a few hundred
            # clients that never close (refused upgrades, expired heads) stalled it.
            util.close_graceful(conn.sock, timeout=CLOSE_LINGER)
        return result

    def _head_ready(self, conn) -> bool | None:
        """True: the head is whole (or the client closed), and waits in the parser's
        buffer; None: not yet; False: it took too long."""
        head = getattr(conn, "nslab_head", None)
        if head is None:
            head = conn.nslab_head = bytearray()
            conn.nslab_deadline = None
            if conn.parser is not None:  # a kept-alive connection: what it read ahead
                head += conn.parser.unreader.take_buffered()
        closed = False
        conn.sock.setblocking(False)
        try:
            while b"\r\n\r\n" not in head and len(head) < HEAD_MAX:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                head += chunk
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed = True  # reset: the parser finds no more data and the connection ends
        finally:
            conn.sock.setblocking(True)
        if not closed and b"\r\n\r\n" not in head and len(head) < HEAD_MAX:
            now = time.monotonic()
            if conn.nslab_deadline is None and head:
                conn.nslab_deadline = now + HEAD_TIMEOUT
            if conn.nslab_deadline is not None and now > conn.nslab_deadline:
                return False
            # Back to the poller: gthread's pending list waits for the next byte.
            conn.data_ready = True
            return None
        conn.nslab_head = None
        conn.init()
        conn.parser.unreader.unread(bytes(head))
        return True

    def handle_request(self, req, conn):
        upgrade = any(name == "UPGRADE" and value.lower() == "websocket"
                      for name, value in req.headers)
        conn.sock.settimeout(None if upgrade else BODY_TIMEOUT)
        try:
            return super().handle_request(req, conn)
        finally:
            conn.sock.settimeout(None)
