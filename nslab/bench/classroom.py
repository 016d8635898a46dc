"""`nslab bench classroom`: what the instructor's live view costs with a class checking.

Self-contained: it makes a throwaway instance of the web app in a temp dir (its own
SQLite database, migrated; `learners` learner accounts, an instructor, a course with one
bench-owned lab whose exercise is a short-answer quiz, so that a check needs no sandbox),
gives every learner a small running sandbox of the running sandboxd (each labelled
`bench=<token of this run>`, recorded as that learner's sandbox for the lab, so that the
live view's usage sampler has a whole class to read), and serves that instance the way
`nslab serve` does: gunicorn with webapp/gunicorn_conf.py, as the unprivileged user
`nslab`, with the web app's own Python (/opt/nslab/venv, made by scripts/setup) on a copy
of this tree's code, on a free loopback port.

Then, with real Socket.IO clients (python-socketio's asyncio client over WebSocket, as
the pages do), each account signed in over HTTP as a browser is: every learner's page
joins `/classroom` (`hello`). Phase 0, `seconds` long: the web process's CPU (read from
/proc) with those pages open and no teacher watching, the figure to compare with. Then
one instructor page joins (the live view, which gets the `snapshot`). Phase 1, "at rest",
`seconds` long: nothing happens but the live view's own work (its usage sampler sending
`usage`); the web process's CPU over the phase. Phase 2: `checks` checks at random times
(a Poisson stream of `rate` checks a second in all), each by a learner drawn at random
among those not checking (a learner checks one exercise at a time, as the page does);
a check's latency runs from its HTTP request sent to the `learner` event on the
instructor's socket whose row shows this learner's cell with the new try counted (which
may come before the check's own answer); the check's own HTTP time and the web
process's CPU over the phase are reported too. The bench client runs on the same host.

Everything is bounded and cleaned up, also on Ctrl-C (and SIGTERM from the CLI): the
pages disconnect, the server is stopped by its pid (then its processes killed by pid),
the sandboxes labelled with this run's token are destroyed, the temp dir removed.

Writing the instance's database needs the web app's code, which this layer may not
import: the caller hands in `seed` (nslab/cli/bench_instance.py).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import aiohttp
import socketio
from sandbox.errors import SandboxError

from .grading import destroy_all
from .procs import alive, descendants, ppid
from .stats import percentile
from .terminal import BenchError as SignInError
from .terminal import Probe, login, server_pid

NAMESPACE = "/classroom"
WEB_USER = "nslab"
# The web app's Python, made by scripts/setup (the one scripts/serve runs it with).
WEB_PYTHON = Path("/opt/nslab/venv/bin/python")
# What the web app needs of this tree, copied where the user nslab can read it.
WEB_TREE = ("nslab", "sandbox", "webapp", "static")
TREE_ROOT = Path(__file__).resolve().parents[2]
LAB_ID = "bench-classroom"
EXERCISE = "answer"
RIGHT = "42"
WRONG = ("41", "43", "6*7", "forty")
RIGHT_SHARE = 0.25          # of the checks; the others are wrong answers (both count a try)
INSTRUCTOR = "bench-teacher"
LEARNER = "bench-learner{:03d}"
# A learner's sandbox: small, idle (catatonit alone), as a class that has just started.
SANDBOX = {"cpus": 0.25, "memory": "128m", "pids": 64, "disk": "256m"}
START_TIMEOUT = 60.0        # the server answering /api/health
STOP_TIMEOUT = 20.0
CONNECT_TIMEOUT = 15.0
JOIN_TIMEOUT = 15.0         # `snapshot` / `hello` after `join`
HTTP_TIMEOUT = 30.0
EVENT_TIMEOUT = 10.0        # a check whose cell never arrives by then counts as lost
SIGN_IN_CONCURRENCY = 8
SETTLE = 2.0                # after the joins, before phase 1: their own work done
# Each open page holds one of the server's threads: `nslab serve` keeps 64 of its 256 for
# pages, so 192 sockets at most, one of them the instructor's.
MAX_LEARNERS = 190

LAB_YAML = f"""\
id: {LAB_ID}
title: "Benchmark: the live classroom"
summary: The lab `nslab bench classroom` makes for its throwaway class.
minutes: 1
sandbox:
  cpus: {SANDBOX['cpus']}
  memory: {SANDBOX['memory']}
  pids: {SANDBOX['pids']}
  disk: {SANDBOX['disk']}
steps:
  - id: only
    title: One question
    file: steps/01-only.md
exercises:
  - id: {EXERCISE}
    title: Six times seven
    points: 1
    text: What is six times seven?
    quiz:
      answer: "{RIGHT}"
    wrong:
      - answer: "{WRONG[0]}"
        feedback: "not"
"""
STEP_MD = f"""\
# One question

::: exercise {EXERCISE}
"""


class BenchError(Exception):
    """The benchmark cannot run as asked, or the server did not do its part."""


# ---------------------------------------------------------------- figures (pure)

def validate(learners: int, checks: int, rate: float, seconds: float) -> None:
    """Bad arguments, before anything is made."""
    if not 1 <= learners <= MAX_LEARNERS:
        raise BenchError(f"--learners must be 1 to {MAX_LEARNERS}, not {learners}")
    if checks < 1:
        raise BenchError(f"--checks must be at least 1, not {checks}")
    if not rate > 0 or rate > 1000:
        raise BenchError(f"--rate must be more than 0 and at most 1000 checks a second, "
                         f"not {rate}")
    if not seconds > 0 or seconds > 3600:
        raise BenchError(f"--seconds must be more than 0 and at most 3600, not {seconds}")


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def summarize(ms: list[float]) -> dict:
    """p50 / p95 / max / mean of a list of milliseconds (None each when it is empty)."""
    return {"p50_ms": _r(percentile(ms, 0.50)), "p95_ms": _r(percentile(ms, 0.95)),
            "max_ms": _r(max(ms) if ms else None),
            "mean_ms": _r(statistics.fmean(ms) if ms else None)}


def cpu_pct(cpu0: float | None, cpu1: float | None, seconds: float) -> float | None:
    """CPU seconds used over a wall-clock span, as a percentage of one core."""
    if cpu0 is None or cpu1 is None or seconds <= 0:
        return None
    return round((cpu1 - cpu0) / seconds * 100, 2)


def arrivals(n: int, rate: float, rng: random.Random) -> list[float]:
    """Offsets (s from the start) of n events of a Poisson stream of `rate` a second."""
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def build_result(without: dict, rest: dict, checking: dict, meta: dict) -> dict:
    """The JSON the command prints: the headline figures first (the two of the issue,
    and the same CPU without the live view open), then each phase."""
    return {
        "check_to_cell_p50_ms": checking["check_to_cell"]["p50_ms"],
        "check_to_cell_p95_ms": checking["check_to_cell"]["p95_ms"],
        "web_cpu_at_rest_pct": rest["web_cpu_pct"],
        "web_cpu_without_view_pct": without["web_cpu_pct"],
        **meta,
        "without_view": without,
        "at_rest": rest,
        "checking": checking,
    }


# ---------------------------------------------------------------- the throwaway instance

def write_lab(labs: Path) -> Path:
    """The bench's own lab folder under `labs`."""
    lab = labs / LAB_ID
    (lab / "steps").mkdir(parents=True)
    (lab / "lab.yaml").write_text(LAB_YAML)
    (lab / "steps" / "01-only.md").write_text(STEP_MD)
    (lab / "checks.py").write_text('"""No checks: the exercise is a short-answer quiz."""\n')
    return lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


class WebServer:
    """`nslab serve` as the user nslab on the instance in `base`, this tree's code copied
    beside it; stopped by pid."""

    def __init__(self, base: Path, socket_path: str, python: Path = WEB_PYTHON):
        self.base = base
        self.instance = base / "instance"
        self.labs = base / "labs"
        self.code = base / "code"
        self.socket = socket_path
        self.python = python
        self.port = 0
        self.url = ""
        self.log = base / "gunicorn.log"
        self.proc: subprocess.Popen | None = None
        self.pids: set[int] = set()

    def prepare(self) -> None:
        """The dirs, the lab and the code copy; the instance dir belongs to nslab."""
        try:
            user = pwd.getpwnam(WEB_USER)
        except KeyError:
            raise BenchError(f"there is no user {WEB_USER!r}: scripts/serve makes it (or "
                             f"useradd --system --user-group {WEB_USER})") from None
        if not os.access(self.python, os.X_OK):
            raise BenchError(f"{self.python} is missing: run scripts/setup (it makes the web "
                             "app's venv)")
        os.chmod(self.base, 0o711)  # nslab passes through to its instance and the code
        self.instance.mkdir(mode=0o700)
        os.chown(self.instance, user.pw_uid, user.pw_gid)
        self.labs.mkdir(mode=0o755)
        write_lab(self.labs)
        self.code.mkdir(mode=0o755)
        for name in WEB_TREE:
            shutil.copytree(TREE_ROOT / name, self.code / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if not self._web_user_may("-w", self.instance):
            raise BenchError(f"the user {WEB_USER} cannot reach {self.instance}: put the temp "
                             f"dir where it can pass through (TMPDIR)")
        # The web app reaches sandboxd through its socket: the user must be let in.
        if not self._web_user_may("-w", self.socket):
            raise BenchError(f"the user {WEB_USER} cannot use sandboxd's socket {self.socket}: "
                             f"start sandboxd with --socket-group {WEB_USER} (scripts/serve does)")

    @staticmethod
    def _web_user_may(test: str, path) -> bool:
        return subprocess.run(["runuser", "-u", WEB_USER, "--", "test", test, str(path)],
                              capture_output=True).returncode == 0

    def handover(self) -> None:
        """What the seed wrote as root, to nslab."""
        user = pwd.getpwnam(WEB_USER)
        _chown_tree(self.instance, user.pw_uid, user.pw_gid)

    def command(self) -> list[str]:
        # PYTHONPATH puts the copy ahead of the venv's installed tree; idle stop off, so
        # that nothing stops the class's sandboxes during a long run.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": str(self.instance), "NSLAB_INSTANCE": str(self.instance),
               "NSLAB_SOCKET": self.socket, "NSLAB_LABS": str(self.labs),
               "NSLAB_IDLE_MINUTES": "0", "PYTHONPATH": str(self.code)}
        return ["runuser", "-u", WEB_USER, "--", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), str(self.python), "-m", "nslab",
                "serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The log is opened here (root) and handed over as stdout; the working directory
        # is the copy, first on `python -m`'s import path.
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.code, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"nslab serve exited with {self.proc.returncode}: "
                                 f"{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"nslab serve did not answer within {START_TIMEOUT:.0f} s: "
                                 f"{self.tail()}")
            time.sleep(0.1)
        self.pids = descendants(self.proc.pid)

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def worker_pid(self) -> int | None:
        """The gunicorn worker (the process serving the port whose parent serves it too)."""
        return server_pid(self.port)

    def stop(self) -> list[int]:
        """SIGTERM to gunicorn's master (its worker goes too), then SIGKILL by pid to what
        is left of the processes this server started; the pids still alive after."""
        if self.proc is None:
            return []
        self.pids |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            master = [p for p in self.pids if ppid(p) == self.proc.pid]
            for pid in master or [self.proc.pid]:
                _signal(pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in self.pids | descendants(self.proc.pid):
                    _signal(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 5
        while (left := [p for p in self.pids if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            _signal(pid, signal.SIGKILL)
        self.proc = None
        return [p for p in left if alive(p)]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def make_sandboxes(client, names: list[str], token: str, made: list[str], log) -> dict[str, str]:
    """A small running sandbox for each learner, labelled with this run's token; each id
    goes into `made` as soon as it exists (the caller destroys them)."""
    out = {}
    for i, name in enumerate(names, 1):
        sb = client.create(**SANDBOX, labels={"purpose": "bench-classroom", "bench": token,
                                              "user": name, "lab": LAB_ID})
        made.append(sb["id"])
        out[name] = sb["id"]
        if i % 10 == 0 or i == len(names):
            log(f"bench: {i}/{len(names)} sandboxes running")
    return out


# ---------------------------------------------------------------- the pages

@dataclass
class Page:
    """One signed-in account: its HTTP session, CSRF token and `/classroom` socket."""

    name: str
    http: aiohttp.ClientSession
    cookie: str = ""
    csrf: str = ""
    uid: int | None = None
    sio: socketio.AsyncClient | None = None
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    error: dict | None = None
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    tries: int = 0          # tries of the exercise the server has counted (as expected)

    async def connect(self, url: str) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.sio.on("error", self._error, namespace=NAMESPACE)
        self.sio.on("hello", self._hello, namespace=NAMESPACE)
        try:
            await asyncio.wait_for(
                self.sio.connect(url, headers={"Cookie": self.cookie, "Origin": url},
                                 transports=["websocket"], namespaces=[NAMESPACE],
                                 wait_timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.name}: no Socket.IO handshake on {NAMESPACE} within "
                             f"{CONNECT_TIMEOUT:.0f} s") from None
        except socketio.exceptions.ConnectionError as e:
            raise BenchError(f"{self.name}: Socket.IO {NAMESPACE} refused: {e}") from None

    async def _hello(self, data) -> None:
        self.joined.set()

    async def _error(self, data) -> None:
        self.error = data if isinstance(data, dict) else {"message": str(data)}
        self.joined.set()

    async def join(self, course: int) -> None:
        await self.sio.emit("join", {"course": course}, namespace=NAMESPACE)
        try:
            await asyncio.wait_for(self.joined.wait(), JOIN_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(f"{self.name}: no answer to join within {JOIN_TIMEOUT:.0f} s "
                             f"(does the web app have the {NAMESPACE} namespace?)") from None
        if self.error is not None:
            raise BenchError(f"{self.name}: join refused: {self.error.get('reason')} "
                             f"{self.error.get('message')}")

    async def close(self) -> None:
        try:
            if self.sio is not None and self.sio.connected:
                await self.sio.disconnect()
        finally:
            await self.http.close()


async def _sign_in(url: str, name: str, password: str, course: int) -> Page:
    # Its own cookie jar, which takes cookies for an IP address such as 127.0.0.1.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
    page = Page(name, http)
    try:
        try:
            page.cookie = await login(http, url, name, password)
        except SignInError as e:
            raise BenchError(f"{name}: {e}") from None
        # The course page carries the CSRF token the lab page's fetch() sends.
        async with http.get(f"{url}/courses/{course}") as r:
            html = await r.text()
            if r.status != 200:
                raise BenchError(f"{name}: /courses/{course} answered HTTP {r.status}")
        m = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
        if not m:
            raise BenchError(f"{name}: /courses/{course} has no csrf-token")
        page.csrf = m.group(1)
    except BaseException:
        await http.close()
        raise
    return page


class Watch:
    """The instructor's socket: the snapshot, then `learner` rows and `usage` events;
    each check waits here for the row that shows its try."""

    def __init__(self, page: Page, lab: str, exercise: str):
        self.page = page
        self.lab, self.exercise = lab, exercise
        self.column: int | None = None
        self.ids: dict[str, int] = {}   # username -> user id, from the snapshot
        self.waiting: dict[int, list[tuple[int, asyncio.Future]]] = {}
        self.usage: list[tuple[float, int]] = []   # (time, sandboxes in it)
        self.rows = 0
        page.sio.on("snapshot", self._snapshot, namespace=NAMESPACE)
        page.sio.on("learner", self._learner, namespace=NAMESPACE)
        page.sio.on("usage", self._usage, namespace=NAMESPACE)

    async def _snapshot(self, data) -> None:
        for i, col in enumerate(data.get("columns") or []):
            if col.get("lab") == self.lab and col.get("exercise") == self.exercise:
                self.column = i
        self.ids = {row.get("username"): row.get("id") for row in data.get("learners") or []}
        self.page.joined.set()

    async def _usage(self, data) -> None:
        self.usage.append((time.monotonic(), len((data or {}).get("sandboxes") or {})))

    async def _learner(self, data) -> None:
        at = time.perf_counter()
        self.rows += 1
        row = (data or {}).get("row") or {}
        waits = self.waiting.get(row.get("id"))
        if not waits or self.column is None:
            return
        cells = row.get("cells") or []
        cell = cells[self.column] if self.column < len(cells) else None
        tries = (cell or {}).get("attempts") or 0
        for n, fut in list(waits):
            if n <= tries and not fut.done():
                fut.set_result(at)
        waits[:] = [(n, f) for n, f in waits if not f.done()]

    def expect(self, uid: int, tries: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(uid, []).append((tries, fut))
        return fut


@dataclass
class Tally:
    cell_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    lost: int = 0
    failed: list[str] = field(default_factory=list)


async def _check(url: str, course: int, page: Page, watch: Watch, rng: random.Random,
                 tally: Tally) -> None:
    """One check by one learner; its HTTP time, and the time to its cell on the
    instructor's socket."""
    async with page.busy:
        answer = RIGHT if rng.random() < RIGHT_SHARE else rng.choice(WRONG)
        fut = watch.expect(page.uid, page.tries + 1)
        t0 = time.perf_counter()
        try:
            async with page.http.post(
                    f"{url}/api/labs/{LAB_ID}/exercises/{EXERCISE}/check",
                    json={"answer": answer, "course": course},
                    headers={"X-CSRFToken": page.csrf}) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            fut.cancel()
            tally.failed.append(f"{page.name}: {type(e).__name__} {e}")
            return
        t_http = time.perf_counter()
        if status != 200:
            fut.cancel()
            tally.failed.append(f"{page.name}: HTTP {status} {body[:200]!r}")
            return
        page.tries += 1
        tally.http_ms.append((t_http - t0) * 1000)
        try:
            t1 = await asyncio.wait_for(asyncio.shield(fut), max(0.0, EVENT_TIMEOUT -
                                                                 (t_http - t0)))
        except asyncio.TimeoutError:
            fut.cancel()
            tally.lost += 1
            return
        tally.cell_ms.append((t1 - t0) * 1000)


async def _idle(probe: Probe, seconds: float) -> dict:
    """The learners' pages open, no teacher's: what the live view's figures compare with."""
    cpu0, own0, t0 = probe.cpu(), time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    took = time.monotonic() - t0
    return {"seconds": round(took, 1), "web_cpu_pct": cpu_pct(cpu0, probe.cpu(), took),
            "bench_cpu_pct": cpu_pct(own0, time.process_time(), took)}


async def _at_rest(probe: Probe, watch: Watch, seconds: float) -> dict:
    n0 = len(watch.usage)
    cpu0, own0, t0 = probe.cpu(), time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    took = time.monotonic() - t0
    cpu1 = probe.cpu()
    usage = watch.usage[n0:]
    gaps = [b[0] - a[0] for a, b in zip(usage, usage[1:])]
    return {"seconds": round(took, 1), "web_cpu_pct": cpu_pct(cpu0, cpu1, took),
            "usage_events": len(usage),
            "usage_interval_s": _r(statistics.median(gaps), 2) if gaps else None,
            # Sandboxes in the fullest `usage` event so far (the sampler's whole class).
            "usage_sandboxes": max((n for _, n in watch.usage), default=0),
            "bench_cpu_pct": cpu_pct(own0, time.process_time(), took)}


async def _checking(url: str, course: int, pages: list[Page], watch: Watch, probe: Probe,
                    checks: int, rate: float, rng: random.Random) -> dict:
    tally = Tally()
    rows0 = watch.rows
    offsets = arrivals(checks, rate, rng)
    tasks = []
    cpu0, own0, t0 = probe.cpu(), time.process_time(), time.monotonic()
    for due in offsets:
        wait = t0 + due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        idle = [p for p in pages if not p.busy.locked()]
        page = rng.choice(idle or pages)
        tasks.append(asyncio.ensure_future(_check(url, course, page, watch, rng, tally)))
    await asyncio.gather(*tasks)
    took = time.monotonic() - t0
    cpu1 = probe.cpu()
    return {"checks": checks, "rate_per_s": rate,
            "achieved_rate_per_s": round(checks / took, 2) if took > 0 else None,
            "seconds": round(took, 1),
            "check_to_cell": {"n": len(tally.cell_ms), **summarize(tally.cell_ms)},
            "check_http": {"n": len(tally.http_ms), **summarize(tally.http_ms)},
            "lost": tally.lost, "failed": len(tally.failed), "failures": tally.failed[:10],
            "learner_events": watch.rows - rows0,
            "web_cpu_pct": cpu_pct(cpu0, cpu1, took),
            "bench_cpu_pct": cpu_pct(own0, time.process_time(), took)}


async def _drive(url: str, course: int, instructor: str, learners: list[str], password: str,
                 probe: Probe, checks: int, rate: float, seconds: float, rng: random.Random,
                 log) -> tuple[dict, dict, dict]:
    pages: list[Page] = []
    sem = asyncio.Semaphore(SIGN_IN_CONCURRENCY)

    async def sign_in(name: str) -> Page:
        async with sem:
            page = await _sign_in(url, name, password, course)
            pages.append(page)
            await page.connect(url)
            return page

    try:
        class_pages = await asyncio.gather(*(sign_in(n) for n in learners))
        await asyncio.gather(*(p.join(course) for p in class_pages))
        log(f"bench: {len(class_pages)} learner pages joined; {seconds:g} s without the "
            "live view")
        await asyncio.sleep(SETTLE)
        without = await _idle(probe, seconds)
        log(f"bench:   web CPU {without['web_cpu_pct']} % of a core")
        teacher = await sign_in(instructor)
        watch = Watch(teacher, LAB_ID, EXERCISE)
        await teacher.join(course)
        if watch.column is None:
            raise BenchError(f"the snapshot has no column for {LAB_ID}/{EXERCISE}")
        for p in class_pages:
            p.uid = watch.ids.get(p.name)
            if p.uid is None:
                raise BenchError(f"{p.name} is not in the live view's snapshot")
        log(f"bench: the instructor's live view is open; at rest for {seconds:g} s")
        await asyncio.sleep(SETTLE)
        rest = await _at_rest(probe, watch, seconds)
        log(f"bench:   web CPU at rest {rest['web_cpu_pct']} % of a core, "
            f"{rest['usage_events']} usage events")
        log(f"bench: {checks} checks at {rate:g}/s")
        checking = await _checking(url, course, class_pages, watch, probe, checks, rate, rng)
        cell = checking["check_to_cell"]
        log(f"bench:   check to cell p50 {cell['p50_ms']} ms, p95 {cell['p95_ms']} ms, "
            f"lost {checking['lost']}, failed {checking['failed']}")
        return without, rest, checking
    finally:
        await asyncio.wait_for(asyncio.gather(*(p.close() for p in pages),
                                              return_exceptions=True), 30)


# ---------------------------------------------------------------- the run

Seed = Callable[..., int]


def bench_classroom(client, seed: Seed, *, socket_path: str, learners: int = 50,
                    checks: int = 250, rate: float = 5.0, seconds: float = 30.0,
                    seed_rng: int | None = None, python: Path = WEB_PYTHON,
                    workdir: str | None = None, log=lambda msg: None) -> dict:
    """The whole run (see the module's docstring). `seed(instance=, labs=, lab=,
    instructor=, learners=, password=, sandboxes=)` writes the instance's database and
    returns the course id. `workdir`: where the temp dir goes (default: the system's)."""
    validate(learners, checks, rate, seconds)
    rng = random.Random(seed_rng)
    token = secrets.token_hex(4)
    password = secrets.token_urlsafe(12)
    names = [LEARNER.format(i) for i in range(1, learners + 1)]
    base = Path(tempfile.mkdtemp(prefix="nslab-bench-classroom-", dir=workdir))
    server = WebServer(base, socket_path, python)
    made: list[str] = []
    started = time.monotonic()
    left_pids: list[int] = []
    left_sandboxes: list[str] = []
    asked_daemon = False    # whether any sandbox may exist (one being made when stopped)
    try:
        server.prepare()
        client.info()  # a clear "cannot reach sandboxd" before anything is made
        asked_daemon = True
        sandboxes = make_sandboxes(client, names, token, made, log)
        course = seed(instance=server.instance, labs=server.labs, lab=LAB_ID,
                      instructor=INSTRUCTOR, learners=names, password=password,
                      sandboxes=sandboxes)
        server.handover()
        server.start()
        pid = server.worker_pid()
        if pid is None:
            raise BenchError(f"no gunicorn worker found serving port {server.port}")
        log(f"bench: web app (pid {pid}) at {server.url}, course {course}, "
            f"{learners} learners")
        without, rest, checking = asyncio.run(_drive(server.url, course, INSTRUCTOR, names, password,
                                            Probe(pid), checks, rate, seconds, rng, log))
    except SandboxError as e:
        raise BenchError(f"sandboxd: {e.message}") from None
    finally:
        try:
            left_pids = server.stop()
        finally:
            if asked_daemon:
                left_sandboxes = destroy_all(client, made, token)
            shutil.rmtree(base, ignore_errors=True)
        if left_pids:
            log(f"bench: web processes left running: {left_pids}")
        if left_sandboxes:
            log(f"bench: could not destroy {len(left_sandboxes)} sandboxes: "
                f"{', '.join(left_sandboxes)}")
    meta = {"learners": learners, "sandboxes": len(made), "web_pid": pid,
            "cpus": os.cpu_count(), "took_s": round(time.monotonic() - started, 1)}
    return build_result(without, rest, checking, meta)
