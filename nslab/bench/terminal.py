"""`nslab bench terminal`: keystroke-to-echo latency through a running web app's terminals.

It drives real Socket.IO clients (python-socketio's asyncio client, over WebSocket, as
the page does) against a running `nslab serve`: it signs in over HTTP like a browser
(CSRF token, session cookie), opens terminals in the signed-in learner's lab sandboxes
with `open {course, lab}`, and types one keystroke at a time at a steady rate in each:
'x', then DEL, so the line never grows; the round trip is from the `input` event to the
`output` event that holds the echo (the shell's readline echoes it). Output is
acknowledged as the page does (at once past 64 KiB, else after 250 ms).

Phases, for each terminal count in turn: the echo round trip with that many terminals
typing; then (for counts of at least 2) the same while one more terminal (in the second
lab's sandbox where the course has two labs) runs `yes` and acks like a browser.
The web process's resident memory (the gunicorn worker: the process listening on the
URL's port, found through /proc) is sampled during the flood; its growth is the peak
during the flood minus the figure just before it.

Everything is bounded: each phase lasts `seconds`, each wait has a timeout, and the whole
run has a deadline. The shells it opened are closed with `kill` at the end.

This module needs neither sandboxd nor the web app's code: only aiohttp and
python-socketio's client.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import socketio
from .procs import cpu_seconds, ppid, rss_bytes
from .stats import percentile

NAMESPACE = "/terminal"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_COUNTS = (1, 50, 200)
PROMPT = b"nslab-bench# "   # PS1 'nslab-bench\$ ' as root; the typed line never matches it
SETUP_LINE = "unset HISTFILE; PS1='nslab-bench\\$ '\r"
ACK_EVERY = 64 * 1024       # the page's flow control (static/js/terminal.js)
ACK_DELAY = 0.25
ECHO_TIMEOUT = 5.0          # a keystroke without its echo by then counts as lost
OPEN_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
OPEN_CONCURRENCY = 4
WARMUP = 1.0                # seconds at the start of each phase whose keystrokes are not kept
PROBES = (("x", b"x"), ("\x7f", b"\x08"))  # (keystroke, a byte of its echo)


class BenchError(Exception):
    """The benchmark could not run (server unreachable, wrong password, ...)."""


# ---------------------------------------------------------------- figures (pure)

def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def summarize(latencies_ms: list[float], lost: int = 0) -> dict:
    """Round-trip figures of one phase. A keystroke waits for the previous one's echo, so
    a saturated server shows as fewer keystrokes (keys_per_s below the rate), not as
    lost ones."""
    return {
        "keystrokes": len(latencies_ms) + lost,
        "lost": lost,
        "echo_p50_ms": _r(percentile(latencies_ms, 0.50)),
        "echo_p99_ms": _r(percentile(latencies_ms, 0.99)),
        "echo_max_ms": _r(max(latencies_ms) if latencies_ms else None),
        "echo_mean_ms": _r(statistics.fmean(latencies_ms) if latencies_ms else None),
    }


def headline_count(counts, target: int = 50) -> int | None:
    """The terminal count the headline figures come from: 50 (the targets' count) if it
    was measured, else the measured count closest to it."""
    counts = sorted(set(counts))
    if not counts:
        return None
    return min(counts, key=lambda n: (abs(n - target), -n))


def build_result(steady: dict[int, dict], flood: dict[int, dict], meta: dict) -> dict:
    """The JSON the command prints: headline figures (at 50 terminals, or the count
    closest to it), then every phase under "steady" and "flood" keyed by terminal count."""
    n = headline_count(steady)
    head = steady.get(n, {}) if n is not None else {}
    fn = headline_count(flood)
    fhead = flood.get(fn, {}) if fn is not None else {}
    return {
        "echo_p50_ms": head.get("echo_p50_ms"),
        "echo_p99_ms": head.get("echo_p99_ms"),
        "terminals": n,
        "flood_echo_p99_ms": fhead.get("echo_p99_ms"),
        "flood_rss_growth_mib": fhead.get("rss_growth_mib"),
        "flood_terminals": fn,
        **meta,
        "steady": {str(k): v for k, v in sorted(steady.items())},
        "flood": {str(k): v for k, v in sorted(flood.items())},
    }


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise BenchError(f"--terminals takes counts like 1,50,200, not {text!r}") from None
    if not counts or counts[0] < 1:
        raise BenchError("--terminals needs counts of at least 1")
    return counts


# ---------------------------------------------------------------- the web process

def server_pid(port: int) -> int | None:
    """The process serving `port` on this host: of the processes holding its listening
    socket, the one whose parent holds it too (gunicorn's worker, not its master). Needs
    the right to read those processes' fds (root, or the same user); None otherwise."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        except OSError:
            continue
    if not inodes:
        return None
    holders = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                holders[int(entry)] = ppid(int(entry))
        except OSError:
            continue
    children = [pid for pid, ppid in holders.items() if ppid in holders]
    if children:
        return max(children)
    return max(holders) if holders else None


class Probe:
    """The web process's memory and CPU, sampled while a phase runs."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def rss(self) -> int | None:
        return rss_bytes(self.pid) if self.pid else None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.pid else None


# ---------------------------------------------------------------- clients

@dataclass
class Terminal:
    conn: "Connection"
    lab: str
    exec_id: str = ""
    sandbox_id: str = ""
    seq: int = 0
    tail: bytearray = field(default_factory=bytearray)   # the last output, for prompts
    received: int = 0
    ack_pending: int = 0
    ack_timer: asyncio.TimerHandle | None = None
    expect: bytes | None = None
    echoed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def type(self, text: str) -> None:
        seq, self.seq = self.seq, self.seq + 1
        await self.conn.sio.emit("input", (self.exec_id, seq, text), namespace=NAMESPACE)

    def on_output(self, data: bytes) -> None:
        self.received += len(data)
        self.tail += data
        del self.tail[:-4096]
        if self.expect is not None and self.expect in data:
            self.expect = None
            self.echoed.set()
        # Acknowledge as the page does: big output at once, echoes batched.
        self.ack_pending += len(data)
        if self.ack_pending >= ACK_EVERY:
            self.flush_ack()
        elif self.ack_timer is None:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self.flush_ack)

    def flush_ack(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.ack_pending and self.conn.sio.connected and not self.closed:
            self.conn.spawn(self.conn.sio.emit("ack", {"exec_id": self.exec_id,
                                                       "bytes": self.ack_pending},
                                               namespace=NAMESPACE))
        self.ack_pending = 0

    async def wait_for(self, marker: bytes, timeout: float, since: int = 0) -> None:
        """Until `marker` is in the output received after byte `since`."""
        deadline = time.monotonic() + timeout
        while True:
            new = self.received - since
            if new > 0 and marker in self.tail[-min(new, len(self.tail)):]:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"terminal {self.exec_id}: no {marker!r} within {timeout:.0f} s; "
                                 f"last output {bytes(self.tail[-120:])!r}")
            await asyncio.sleep(0.01)

    async def keystroke(self, key: str, echo: bytes) -> float | None:
        """Type one key; the round trip to its echo in ms, None if it never came."""
        self.echoed.clear()
        self.expect = echo
        t0 = time.perf_counter()
        await self.type(key)
        try:
            await asyncio.wait_for(self.echoed.wait(), ECHO_TIMEOUT)
        except asyncio.TimeoutError:
            self.expect = None
            return None
        return (time.perf_counter() - t0) * 1000


class Connection:
    """One page: a Socket.IO connection to /terminal carrying one or more terminals."""

    def __init__(self, url: str, cookie: str):
        self.url, self.cookie = url, cookie
        # Its own HTTP session (closed here, whatever happens), which takes cookies for an
        # IP address such as 127.0.0.1.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sio = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.terms: dict[str, Terminal] = {}
        self.waiting: dict[str, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.sio.on("output", self._output, namespace=NAMESPACE)
        self.sio.on("opened", self._reply, namespace=NAMESPACE)
        self.sio.on("error", self._reply, namespace=NAMESPACE)
        self.sio.on("exit", self._exit, namespace=NAMESPACE)

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self) -> None:
        parts = urlsplit(self.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        # A server with no free thread accepts the TCP connection and never answers the
        # handshake: give up after CONNECT_TIMEOUT.
        await asyncio.wait_for(
            self.sio.connect(self.url, headers={"Cookie": self.cookie, "Origin": origin},
                             transports=["websocket"], namespaces=[NAMESPACE],
                             wait_timeout=CONNECT_TIMEOUT),
            CONNECT_TIMEOUT)

    async def _output(self, exec_id, data) -> None:
        term = self.terms.get(exec_id)
        if term is not None:
            term.on_output(bytes(data))
        elif isinstance(data, (bytes, bytearray)):
            self.spawn(self.sio.emit("ack", {"exec_id": exec_id, "bytes": len(data)},
                                     namespace=NAMESPACE))

    async def _reply(self, msg) -> None:
        tag = msg.get("tag") if isinstance(msg, dict) else None
        fut = self.waiting.pop(tag, None) if tag else None
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _exit(self, msg) -> None:
        term = self.terms.get(msg.get("exec_id")) if isinstance(msg, dict) else None
        if term is not None:
            term.closed = True

    async def open(self, course: str, lab: str) -> Terminal:
        tag = f"bench-{time.monotonic_ns()}-{random.randrange(1 << 30)}"
        fut = asyncio.get_running_loop().create_future()
        self.waiting[tag] = fut
        await self.sio.emit("open", {"course": course, "lab": lab, "rows": 24, "cols": 80,
                                     "tag": tag}, namespace=NAMESPACE)
        try:
            msg = await asyncio.wait_for(fut, OPEN_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(f"no answer to open {course}/{lab} within {OPEN_TIMEOUT:.0f} s") \
                from None
        finally:
            self.waiting.pop(tag, None)
        if "exec_id" not in msg or msg.get("message"):
            raise BenchError(f"open {course}/{lab} failed: {msg.get('message', msg)}")
        term = Terminal(self, lab, exec_id=msg["exec_id"], sandbox_id=msg.get("sandbox_id", ""))
        self.terms[term.exec_id] = term
        # A known prompt, then the shell is idle.
        mark = term.received
        await term.type(SETUP_LINE)
        await term.wait_for(PROMPT, OPEN_TIMEOUT, since=mark)
        await asyncio.sleep(0.05)
        return term

    async def close(self) -> None:
        for term in self.terms.values():
            if term.ack_timer is not None:
                term.ack_timer.cancel()
            if self.sio.connected:
                try:
                    await self.sio.emit("close", {"exec_id": term.exec_id, "kill": True},
                                        namespace=NAMESPACE)
                except Exception:  # noqa: BLE001 - best effort while cleaning up
                    pass
            term.closed = True
        try:
            if self.sio.connected:
                await asyncio.sleep(0.05)  # let the close events go out before the socket
                await self.sio.disconnect()
        finally:
            for task in list(self.tasks):
                task.cancel()
            await self.http.close()


# ---------------------------------------------------------------- signing in

async def login(http, url: str, user: str, password: str) -> str:
    """Sign in as a browser does; the Cookie header for the Socket.IO connections."""
    try:
        async with http.get(f"{url}/login") as r:
            html = await r.text()
    except OSError as e:
        raise BenchError(f"cannot reach {url}: {e}") from None
    m = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    if not m:
        raise BenchError(f"{url}/login has no sign-in form")
    async with http.post(f"{url}/login", allow_redirects=False,
                         data={"csrf_token": m.group(1), "username": user,
                               "password": password, "next": ""}) as r:
        location = r.headers.get("Location", "")
        if r.status not in (302, 303) or "/login" in location:
            raise BenchError(f"signing in as {user!r} failed (HTTP {r.status}); "
                             "check --user and --password")
    cookies = http.cookie_jar.filter_cookies(url)
    if not cookies:
        raise BenchError("signed in, but the server set no session cookie")
    return "; ".join(f"{k}={v.value}" for k, v in cookies.items())


async def find_labs(http, url: str) -> tuple[str, list[str]]:
    """The first course on the learner's dashboard that has labs: (course id, lab ids)."""
    async with http.get(f"{url}/dashboard") as r:
        html = await r.text()
    for course in dict.fromkeys(re.findall(r'href="/courses/(\d+)"', html)):
        async with http.get(f"{url}/courses/{course}") as r:
            page = await r.text()
        labs = list(dict.fromkeys(re.findall(
            rf'href="/courses/{course}/labs/([a-z0-9-]+)"', page)))
        if labs:
            return course, labs
    raise BenchError("this user has no course with a lab: sign in as a learner enrolled in "
                     "one (the demo's 'learner')")


# ---------------------------------------------------------------- phases

async def _typist(term: Terminal, start: float, stop: float, interval: float,
                  keep_from: float, out: list[float], lost: list[int]) -> None:
    """Keystrokes at a steady rate from a random offset; round trips after keep_from."""
    k = 0
    due = start + random.uniform(0, interval)
    while True:
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        if time.monotonic() >= stop or term.closed:
            return
        key, echo = PROBES[k % 2]
        sent = time.monotonic()
        rtt = await term.keystroke(key, echo)
        if sent >= keep_from:
            if rtt is None:
                lost[0] += 1
            else:
                out.append(rtt)
        k += 1
        due = max(due + interval, time.monotonic())


async def measure(terms: list[Terminal], seconds: float, rate: float) -> tuple[list[float], int]:
    start = time.monotonic()
    keep_from = start + min(WARMUP, seconds / 4)
    stop = keep_from + seconds
    out: list[float] = []
    lost = [0]
    await asyncio.gather(*(_typist(t, start, stop, 1 / rate, keep_from, out, lost)
                           for t in terms))
    return out, lost[0]


async def _sample_rss(probe: Probe, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        value = probe.rss()
        if value is not None:
            samples.append(value)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / (1 << 20), 2)


async def steady_phase(terms, seconds, rate, probe: Probe) -> dict:
    rss0, cpu0, own0, t0 = probe.rss(), probe.cpu(), time.process_time(), time.monotonic()
    lat, lost = await measure(terms, seconds, rate)
    took = time.monotonic() - t0
    cpu1 = probe.cpu()
    return {**summarize(lat, lost), "terminals": len(terms),
            "keys_per_s": round((len(lat) + lost) / seconds, 1),
            "web_rss_mib": _mib(probe.rss()), "web_rss_before_mib": _mib(rss0),
            "web_cpu_pct": None if cpu0 is None or cpu1 is None
            else round((cpu1 - cpu0) / took * 100, 1),
            "bench_cpu_pct": round((time.process_time() - own0) / took * 100, 1)}


async def flood_phase(terms, flooder: Terminal, seconds, rate, probe: Probe) -> dict:
    await asyncio.sleep(1.0)  # let the last phase's output and acks settle
    rss_before, cpu0 = probe.rss(), probe.cpu()
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample_rss(probe, samples, stop))
    own0 = time.process_time()
    try:
        mark = flooder.received
        await flooder.type("yes\r")
        deadline = time.monotonic() + 10
        while flooder.received - mark < 1 << 20:  # the flood is on: 1 MiB has come
            if time.monotonic() > deadline:
                raise BenchError(f"`yes` gave only {flooder.received - mark} bytes in 10 s")
            await asyncio.sleep(0.01)
        t0, b0 = time.monotonic(), flooder.received
        lat, lost = await measure(terms, seconds, rate)
        took, flowed = time.monotonic() - t0, flooder.received - b0
        cpu1 = probe.cpu()
        own = time.process_time() - own0
        t_int = time.monotonic()
        mark = flooder.received
        await flooder.type("\x03")
        await flooder.wait_for(PROMPT, 15, since=mark)
        prompt_ms = (time.monotonic() - t_int) * 1000
    finally:
        stop.set()
        await sampler
    await asyncio.sleep(1.0)
    rss_after = probe.rss()
    peak = max(samples) if samples else None
    return {**summarize(lat, lost), "terminals": len(terms), "flooding": 1,
            "keys_per_s": round((len(lat) + lost) / seconds, 1),
            "flood_mb_per_s": round(flowed / took / 1e6, 1),
            "prompt_after_ctrl_c_ms": round(prompt_ms, 1),
            "web_rss_before_mib": _mib(rss_before), "web_rss_peak_mib": _mib(peak),
            "web_rss_after_mib": _mib(rss_after),
            "rss_growth_mib": None if peak is None or rss_before is None
            else round(max(0, peak - rss_before) / (1 << 20), 2),
            "web_cpu_pct": None if cpu0 is None or cpu1 is None
            else round((cpu1 - cpu0) / took * 100, 1),
            "bench_cpu_pct": round(own / took * 100, 1)}


# ---------------------------------------------------------------- the run

async def _run(url: str, user: str, password: str, counts: list[int], seconds: float,
               rate: float, tabs: int, flood: bool, pid: int | None,
               log) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--url must be http(s)://HOST:PORT, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if pid is None:
        pid = server_pid(port)
    if pid is None:
        log(f"bench: no process found listening on port {port} (not this host, or its "
            "fds are not readable): memory figures are null")
    probe = Probe(pid)
    conns: list[Connection] = []
    started = time.monotonic()
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address such as 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        cookie = await login(http, url, user, password)
        course, labs = await find_labs(http, url)
        typing_lab = labs[0]
        flood_lab = labs[1] if len(labs) > 1 else labs[0]
        sem = asyncio.Semaphore(OPEN_CONCURRENCY)
        terms: list[Terminal] = []

        async def new_connection() -> Connection:
            conn = Connection(url, cookie)
            conns.append(conn)
            try:
                await conn.connect()
            except asyncio.TimeoutError:
                raise BenchError(
                    f"Socket.IO connection {len(conns)} to {url}: no handshake within "
                    f"{CONNECT_TIMEOUT:.0f} s (each open WebSocket holds one of the server's "
                    f"threads: is `nslab serve --threads` below the connection count?)") from None
            except Exception as e:  # noqa: BLE001 - socketio's errors, with context
                raise BenchError(f"Socket.IO connection {len(conns)} to {url} failed: "
                                 f"{type(e).__name__} {e}") from None
            return conn

        async def open_one(conn: Connection, lab: str) -> Terminal:
            async with sem:
                return await conn.open(course, lab)

        typing_conns: list[Connection] = []

        async def grow(n: int) -> None:
            """Open terminals up to n, `tabs` to a connection."""
            todo = []
            for i in range(len(terms), n):
                if i // tabs >= len(typing_conns):
                    typing_conns.append(await new_connection())
                todo.append(typing_conns[i // tabs])
            t0 = time.monotonic()
            terms.extend(await asyncio.gather(*(open_one(c, typing_lab) for c in todo)))
            if todo:
                log(f"bench: {len(terms)} terminals open ({len(todo)} opened in "
                    f"{time.monotonic() - t0:.1f} s)")

        steady: dict[int, dict] = {}
        floods: dict[int, dict] = {}
        try:
            flooder = None
            for n in counts:
                await grow(n)
                log(f"bench: {n} terminals typing at {rate:g} keys/s for {seconds:g} s")
                steady[n] = await steady_phase(terms[:n], seconds, rate, probe)
                log(f"bench:   echo p50 {steady[n]['echo_p50_ms']} ms, "
                    f"p99 {steady[n]['echo_p99_ms']} ms")
                if not flood or (n < 2 and len(counts) > 1):
                    continue
                if flooder is None:
                    flooder = await (await new_connection()).open(course, flood_lab)
                log(f"bench: {n} terminals typing while one more runs `yes`")
                floods[n] = await flood_phase(terms[:n], flooder, seconds, rate, probe)
                log(f"bench:   echo p50 {floods[n]['echo_p50_ms']} ms, p99 "
                    f"{floods[n]['echo_p99_ms']} ms, web RSS +"
                    f"{floods[n]['rss_growth_mib']} MiB")
        finally:
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in conns),
                                                  return_exceptions=True), 30)
        sandboxes = sorted({t.sandbox_id for c in conns for t in c.terms.values()})
        meta = {
            "url": url,
            "rate_keys_per_s": rate,
            "seconds": seconds,
            "terminals_per_connection": tabs,
            "connections": len(conns),
            "sandboxes": len(sandboxes),
            "layout": f"typing terminals in lab {typing_lab}'s sandbox, the flooding one in "
                      f"lab {flood_lab}'s",
            "web_pid": pid,
            "cpus": os.cpu_count(),
            "took_s": round(time.monotonic() - started, 1),
        }
        return build_result(steady, floods, meta)


def bench_terminal(url: str = DEFAULT_URL, user: str = "learner", password: str = "",
                   counts=DEFAULT_COUNTS, seconds: float = 10.0, rate: float = 5.0,
                   tabs: int = 1, flood: bool = True, pid: int | None = None,
                   deadline: float | None = None, log=lambda msg: None) -> dict:
    counts = sorted(set(counts))
    if seconds <= 0 or rate <= 0 or tabs < 1:
        raise BenchError("--seconds and --rate must be positive, --tabs at least 1")
    if deadline is None:  # phases, opening (up to ~20 ms a shell, with margins), settling
        deadline = 120 + (2 * len(counts) + 1) * (seconds + 20) + max(counts) * 0.5
    url = url.rstrip("/")

    async def main():
        try:
            return await asyncio.wait_for(
                _run(url, user, password, counts, seconds, rate, tabs, flood, pid, log),
                deadline)
        except asyncio.TimeoutError:
            raise BenchError(f"the benchmark did not finish within {deadline:.0f} s") from None

    return asyncio.run(main())
