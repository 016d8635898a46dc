"""The kernels the web app talks to: one per sandbox, each a `jupyter_client`
AsyncKernelManager (from `nslab.kernels.kernel_manager`, handed in) with one client, all
on one asyncio loop of their own (`KernelLoop`, a thread: the web app's handlers are
threads, jupyter_client's async clients belong to the loop that made them).

`Notebooks` is the registry: `run` queues cells (bounded per learner), a worker per
sandbox sends them one at a time, an IOPub reader relays what the kernel says about
each (rendered by `render`, bounded per cell) and its status, through `emit(sandbox_id,
event, data)`. Interrupt and restart drop what was queued. A kernel that died (its
sandbox stopped or was reset, the learner killed it) is noticed and the next run starts
one again (sandboxd starts or reattaches: a kernel outlives a restart of the web app).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sandbox.errors import SandboxError

from . import render

log = logging.getLogger(__name__)

MAX_QUEUED = 32                  # cells one learner may have waiting or running, in all
MAX_SOURCE = 64 * 1024           # characters of one cell
MAX_CELL_OUTPUT = 1024 * 1024    # bytes of output relayed per cell, then a notice
READY_TIMEOUT = 30.0             # seconds for a started kernel to answer kernel_info
ALIVE_EVERY = 2.0                # seconds between liveness checks while a cell runs
REAP_EVERY = 60.0                # seconds between sweeps for dead kernels nobody uses

MakeManager = Callable[[str], Any]          # sandbox id -> AsyncKernelManager (not started)
Emit = Callable[[str, str, dict], None]     # sandbox id, event, data
OnActivity = Callable[[str], None]


class NotebookError(Exception):
    """A request the registry refuses; `reason` is for programs, the text for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class KernelLoop:
    """One asyncio loop on a daemon thread, started on first use (never in a process
    that forks afterwards: gunicorn loads the app, then forks its worker)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main():
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name="nslab-kernels",
                                                daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._start())

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()


@dataclass
class Cell:
    cell_id: str
    source: str
    owner: Hashable
    msg_id: str | None = None
    sent: int = 0                  # bytes of output relayed so far
    truncated: bool = False
    error: bool = False
    cancelled: bool = False        # the kernel was restarted under it
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Session:
    """One sandbox's kernel: its manager, client, queue of cells and the tasks that
    serve them. Lives on the loop thread; only the loop touches it."""

    def __init__(self, notebooks: Notebooks, sandbox_id: str):
        self.nb = notebooks
        self.sandbox_id = sandbox_id
        self.km = None
        self.kc = None
        self.status = "starting"
        self.cells: asyncio.Queue[Cell] = asyncio.Queue()
        self.current: Cell | None = None
        self.reader: asyncio.Task | None = None
        self.worker: asyncio.Task | None = None
        self.ready: asyncio.Future | None = None  # the start under way (or done)

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.nb.emit(self.sandbox_id, "kernel", {"sandbox_id": self.sandbox_id,
                                                     "status": status})

    async def start(self) -> None:
        """Start or reattach to the sandbox's kernel and connect a client."""
        self.set_status("starting")
        km = self.nb.make_manager(self.sandbox_id)
        try:
            await km.start_kernel()
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=READY_TIMEOUT)
            except BaseException:
                kc.stop_channels()
                raise
        except Exception:
            km.context.destroy(linger=0)
            self.set_status("dead")
            raise
        self.km, self.kc = km, kc
        self.reader = asyncio.ensure_future(self._read())
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._work())
        self.set_status("idle")

    async def ensure(self) -> None:
        """A live, connected kernel, started (once, however many ask) if need be."""
        if self.ready is not None and self.ready.done():
            if self.ready.exception() is None and await self.alive():
                return
            self._disconnect()
            self.ready = None
        if self.ready is None:
            self.ready = asyncio.ensure_future(self.start())
        await asyncio.shield(self.ready)

    async def alive(self) -> bool:
        if self.km is None:
            return False
        try:
            return bool(await self.km.is_alive())
        except (SandboxError, OSError):
            return False

    def _stop_client(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            self.reader = None
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None

    def _disconnect(self) -> None:
        """Let go of the kernel (it goes on in its sandbox): the client's sockets and the
        manager's (its control socket for interrupts, in the zmq context it made)."""
        self._stop_client()
        if self.km is not None and not self.km.context.closed:
            self.km.context.destroy(linger=0)
        self.km = None

    async def _read(self) -> None:
        """Every IOPub message: statuses to the pages, outputs to the cell they belong to."""
        kc = self.kc
        while True:
            try:
                msg = await kc.get_iopub_msg()
            except queue.Empty:
                continue
            parent = (msg.get("parent_header") or {}).get("msg_id")
            kind = msg.get("msg_type") or (msg.get("header") or {}).get("msg_type")
            content = msg.get("content") or {}
            cell = self.current if self.current and self.current.msg_id == parent else None
            if kind == "status":
                state = content.get("execution_state")
                if state in ("busy", "idle", "starting"):
                    self.set_status(state)
                if cell is not None and state == "idle":
                    cell.done.set()
                continue
            if cell is None:
                continue  # another client's request (`nslab kernel run`), or a stale one
            if kind == "execute_input":
                count = content.get("execution_count")
                self.nb.emit(self.sandbox_id, "cell", {
                    "sandbox_id": self.sandbox_id, "cell_id": cell.cell_id, "state": "running",
                    "execution_count": count if isinstance(count, int) else None})
                continue
            if kind == "error":
                cell.error = True
            self._relay(cell, kind, content)

    def _relay(self, cell: Cell, kind: str, content: dict) -> None:
        """One output of `cell` to the pages, within the cell's budget: past it, what
        fits of a stream's text, then one notice, then nothing more."""
        if cell.truncated:
            return
        shown = render.render(kind, content)
        if shown is None:
            return
        cost = render.size(shown)
        if cell.sent + cost > MAX_CELL_OUTPUT:
            cell.truncated = True
            left = MAX_CELL_OUTPUT - cell.sent
            text = content.get("text")
            if kind == "stream" and isinstance(text, str) and left > 0:
                # What fits of the text: escaping lengthens it (& is &amp;), so halve
                # the cut until it fits.
                cut = left
                head = render.render(kind, {**content, "text": text[:cut]})
                while render.size(head) > left and cut > 1:
                    cut //= 2
                    head = render.render(kind, {**content, "text": text[:cut]})
                self._emit_output(cell, head)
            shown = {"type": "truncated",
                     "message": f"Output truncated: this cell printed more than "
                                f"{MAX_CELL_OUTPUT // 1024} KiB; the rest is not shown."}
        cell.sent += cost
        self._emit_output(cell, shown)

    def _emit_output(self, cell: Cell, shown: dict) -> None:
        self.nb.emit(self.sandbox_id, "output", {"sandbox_id": self.sandbox_id,
                                                 "cell_id": cell.cell_id, "output": shown})
        self.nb.on_activity(self.sandbox_id)

    async def _work(self) -> None:
        while True:
            cell = await self.cells.get()
            self.current = cell
            try:
                await self._execute(cell)
            except Exception as e:  # noqa: BLE001 - the kernel went away mid-cell; said so
                self.nb._tell(self.sandbox_id, e)
                self._finish(cell, "dead")
                self.drop_queued()
            finally:
                self.current = None
                self.nb.release(cell.owner)

    async def _execute(self, cell: Cell) -> None:
        await self.ensure()
        self.nb.on_activity(self.sandbox_id)
        self.nb.emit(self.sandbox_id, "cell", {"sandbox_id": self.sandbox_id,
                                               "cell_id": cell.cell_id, "state": "running"})
        cell.msg_id = self.kc.execute(cell.source, store_history=True, allow_stdin=False,
                                      stop_on_error=True)
        while not cell.done.is_set():
            try:
                await asyncio.wait_for(cell.done.wait(), ALIVE_EVERY)
            except asyncio.TimeoutError:
                if not await self.alive():
                    self.set_status("dead")
                    self._finish(cell, "dead")
                    self.drop_queued()
                    return
        if cell.cancelled:
            return  # restart said so already
        self._finish(cell, "error" if cell.error else "done")
        if cell.error:
            self.drop_queued()  # as Jupyter does: run all stops at the first error

    def _finish(self, cell: Cell, state: str) -> None:
        self.nb.emit(self.sandbox_id, "cell", {"sandbox_id": self.sandbox_id,
                                               "cell_id": cell.cell_id, "state": state})

    def drop_queued(self) -> None:
        while not self.cells.empty():
            cell = self.cells.get_nowait()
            self._finish(cell, "cancelled")
            self.nb.release(cell.owner)

    async def interrupt(self) -> None:
        self.drop_queued()
        if self.km is not None:
            await self.km.interrupt_kernel()

    async def restart(self) -> None:
        self.drop_queued()
        if self.km is None or not await self.alive():
            await self.ensure()
            return
        self.set_status("restarting")
        km = self.km
        if self.current is not None:
            self._finish(self.current, "cancelled")
            self.current.cancelled = True
            self.current.done.set()
        self._stop_client()
        try:
            await km.restart_kernel()
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=READY_TIMEOUT)
        except Exception:
            self.set_status("dead")
            self._disconnect()
            self.ready = None
            raise
        self.kc = kc
        self.reader = asyncio.ensure_future(self._read())
        self.set_status("idle")

    async def close(self) -> None:
        for task in (self.worker, self.reader):
            if task is not None:
                task.cancel()
        self.worker = None
        self.drop_queued()
        self._disconnect()


class Notebooks:
    """The kernels of one web app, by sandbox id. Its public methods are called from any
    thread (the Socket.IO handlers'); the work happens on its KernelLoop."""

    def __init__(self, make_manager: MakeManager, emit: Emit | None,
                 on_activity: OnActivity | None = None, *, max_queued: int = MAX_QUEUED):
        self.make_manager = make_manager
        self.emit = emit or (lambda sandbox_id, event, data: None)
        self.on_activity = on_activity or (lambda sandbox_id: None)
        self.max_queued = max_queued
        self.loop = KernelLoop()
        self.sessions: dict[str, Session] = {}   # touched on the loop only
        self._lock = threading.Lock()
        self._queued: dict[Hashable, int] = {}   # owner -> cells waiting or running
        self._reaper: asyncio.Task | None = None

    # ------------------------------------------------------------ from any thread

    def open(self, sandbox_id: str) -> concurrent.futures.Future:
        """Start (or reattach to) the sandbox's kernel in the background."""
        return self.loop.submit(self._ensure(sandbox_id))

    def run(self, sandbox_id: str, owner: Hashable, cells: list[tuple[str, str]]) -> None:
        """Queue `cells` ((cell id, source) each) in the sandbox's kernel, all or none."""
        with self._lock:
            held = self._queued.get(owner, 0)
            if held + len(cells) > self.max_queued:
                raise NotebookError("too_many_cells",
                                    f"{held} cells of yours are waiting or running; at most "
                                    f"{self.max_queued} may be. Wait for them, or interrupt.")
            self._queued[owner] = held + len(cells)
        self.loop.submit(self._enqueue(sandbox_id, owner, cells))

    def interrupt(self, sandbox_id: str) -> concurrent.futures.Future:
        return self.loop.submit(self._call(sandbox_id, "interrupt"))

    def restart(self, sandbox_id: str) -> concurrent.futures.Future:
        return self.loop.submit(self._call(sandbox_id, "restart"))

    def status(self, sandbox_id: str) -> str:
        """The last status heard from the sandbox's kernel ("none": not started here)."""
        session = self.sessions.get(sandbox_id)
        return session.status if session is not None else "none"

    def queued(self, owner: Hashable) -> int:
        with self._lock:
            return self._queued.get(owner, 0)

    def release(self, owner: Hashable, n: int = 1) -> None:
        with self._lock:
            left = self._queued.get(owner, 0) - n
            if left > 0:
                self._queued[owner] = left
            else:
                self._queued.pop(owner, None)

    def close(self, timeout: float = 20) -> None:
        """Disconnect from every kernel (they go on in their sandboxes) and stop the loop."""
        if self.loop.running:
            try:
                self.loop.submit(self._close_all()).result(timeout)
            except concurrent.futures.TimeoutError:
                log.warning("kernels did not disconnect in %s s", timeout)
        self.loop.stop()

    # ------------------------------------------------------------ on the loop

    def _session(self, sandbox_id: str) -> Session:
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap())
        session = self.sessions.get(sandbox_id)
        if session is None:
            session = self.sessions[sandbox_id] = Session(self, sandbox_id)
        return session

    async def _ensure(self, sandbox_id: str) -> None:
        try:
            await self._session(sandbox_id).ensure()
        except Exception as e:  # noqa: BLE001 - told to the pages, nothing else to do
            self._tell(sandbox_id, e)

    async def _enqueue(self, sandbox_id: str, owner: Hashable,
                       cells: list[tuple[str, str]]) -> None:
        session = self._session(sandbox_id)
        if session.worker is None:
            session.worker = asyncio.ensure_future(session._work())
        for cell_id, source in cells:
            session.cells.put_nowait(Cell(cell_id, source, owner))
            self.emit(sandbox_id, "cell", {"sandbox_id": sandbox_id, "cell_id": cell_id,
                                           "state": "queued"})

    async def _call(self, sandbox_id: str, what: str) -> None:
        session = self._session(sandbox_id)
        try:
            await getattr(session, what)()
        except Exception as e:  # noqa: BLE001 - told to the pages
            self._tell(sandbox_id, e)

    def _tell(self, sandbox_id: str, e: Exception) -> None:
        if isinstance(e, SandboxError):
            message, reason = e.message, e.reason.value
        else:
            message, reason = f"the kernel could not be reached: {e}", "kernel_unreachable"
        log.info("kernel of %s: %s", sandbox_id, message)
        self.emit(sandbox_id, "error", {"sandbox_id": sandbox_id, "message": message,
                                        "reason": reason})

    async def _reap(self) -> None:
        """Forget sessions whose kernel is gone and that have nothing queued (a sandbox
        reset or destroyed): their client sockets are closed."""
        while True:
            await asyncio.sleep(REAP_EVERY)
            for sid, session in list(self.sessions.items()):
                idle = session.current is None and session.cells.empty()
                starting = session.ready is not None and not session.ready.done()
                if idle and not starting and not await session.alive():
                    await session.close()
                    self.sessions.pop(sid, None)

    async def _close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for session in list(self.sessions.values()):
            await session.close()
        self.sessions.clear()
