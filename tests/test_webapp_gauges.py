"""Live gauges of a learner's sandbox (webapp/gauges/): what one sample becomes
(`summarize`, from sandboxd's answers as they come), and the whole path with a real
sandboxd: one sampler per sandbox shared by its pages and stopped with the last, the
authorization matrix of `watch`, a stopped sandbox, child cgroups with their quotas, and
that watching is never sandbox activity."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager

import pytest
from webapp_helpers import SocketPage, logout, two_courses

from conftest import ROOT, ok
from webapp import create_app
from webapp.config import TestConfig
from webapp.extensions import db
from webapp.gauges import GAUGES, MAX_GROUPS, summarize
from webapp.gauges.sampler import UNLIMITED
from webapp.models import User
from webapp.sandboxes import sandbox_for

NS = "/gauges"


# ---------------------------------------------------------------- one sample (no daemon)

def _node(path: str, used: int, cpus=None) -> dict:
    return {"path": path, "limits": {"cpus": cpus, "memory_max": None, "pids_max": 20},
            "usage": {"cpu_usage_ns": used, "memory_current": 4096, "pids_current": 2},
            "procs": []}


def test_a_sample_gives_cpus_from_the_counters_rate_and_limits_or_none():
    stats = {"cpu_usage_ns": 10**9, "memory_current": 1 << 20, "memory_limit": 512 << 20,
             "pids_current": 3, "pids_limit": 512, "cpus": 2.0}
    counters: dict = {}
    first = summarize("sb", stats, [_node("/", 0), _node("/hog", 10**9, 0.3)], False,
                      counters, now=100.0)
    assert [g["path"] for g in first["groups"]] == ["/", "/hog"]
    assert first["groups"][0]["cpu"] is None  # one counter reading is no rate yet
    assert first["groups"][0] | {"cpu": 0} == {
        "path": "/", "cpu": 0, "cpu_max": 2.0, "memory": 1 << 20, "memory_max": 512 << 20,
        "pids": 3, "pids_max": 512, "throttled": None}
    # Two seconds later: the hog used 0.6 s of CPU (0.3 CPUs), the sandbox 1.4 s (0.7).
    stats = stats | {"cpu_usage_ns": 24 * 10**8}
    second = summarize("sb", stats, [_node("/hog", 16 * 10**8, 0.3)], False, counters,
                       now=102.0)
    root, hog = second["groups"]
    assert root["cpu"] == 0.7 and hog["cpu"] == 0.3 and hog["cpu_max"] == 0.3
    # v1's "no limit" and a missing file are both no limit.
    third = summarize("sb", stats | {"memory_limit": UNLIMITED + 4096, "cpus": None},
                      [_node("/hog", 10)], False, counters, now=103.0)
    root, hog = third["groups"]
    assert root["memory_max"] is None and root["cpu_max"] is None
    assert hog["cpu"] is None  # the counter went back: a new group of that name


def test_a_group_without_its_own_counter_is_measured_by_its_processes():
    """v1 with cpu and cpuacct mounted apart: a group made under cpu/ has no usage
    counter; its processes' CPU time gives the rate, a process moved in is no jump."""
    node = {"path": "/lim", "limits": {"cpus": 0.3}, "usage": {}, "procs": [11, 12]}
    counters: dict = {}
    first = summarize("sb", {}, [node], False, counters, 10.0, {11: 5 * 10**9, 12: 0})
    assert first["groups"][1]["cpu"] is None
    # One second on: 11 used 0.2 s, 12 used 0.1 s; 13 arrives with 100 s behind it.
    node["procs"] = [11, 12, 13]
    second = summarize("sb", {}, [node], False, counters, 11.0,
                       {11: 52 * 10**8, 12: 10**8, 13: 100 * 10**9})
    assert second["groups"][1]["cpu"] == pytest.approx(0.3)
    node["procs"] = []
    assert summarize("sb", {}, [node], False, counters, 12.0, {})["groups"][1]["cpu"] == 0
    assert counters == {}


def test_a_sample_shows_at_most_max_groups_and_counts_the_rest():
    tree = [_node("/", 0)] + [_node(f"/g{i:02d}", i) for i in range(MAX_GROUPS + 5)]
    counters: dict = {}
    data = summarize("sb", {}, tree, True, counters, now=1.0)
    assert len(data["groups"]) == 1 + MAX_GROUPS and data["hidden"] == 5
    assert data["truncated"] is True
    assert len(counters) == MAX_GROUPS  # the root had no counter; hidden ones are not kept


# ---------------------------------------------------------------- a real sandboxd

@contextmanager
def _app(tmp_path, webapp_schema, sandboxd, **config):
    """The web app wired to the session's real sandboxd, sampling every 0.2 s; its
    samplers and idle sweeper are stopped and its sandboxes destroyed after."""
    labs = tmp_path / "labs"
    shutil.copytree(ROOT / "labs" / "example", labs / "example")
    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                LABS_DIR=str(labs), GAUGES_INTERVAL=0.2, **config))
    try:
        yield app
    finally:
        app.extensions[GAUGES].gauges.close()
        app.extensions["nslab.idle"].stop()
        client = sandboxd.client()
        for sb in client.list():
            if sb["labels"].get("lab") == "example" and sb["labels"].get("course"):
                client.destroy(sb["id"], purge=True)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def g_app(tmp_path, webapp_schema, sandboxd):
    """`_app` as it is configured for tests."""
    with _app(tmp_path, webapp_schema, sandboxd) as app:
        yield app


@pytest.fixture
def idle_app(tmp_path, webapp_schema, sandboxd):
    """`_app` with an idle sweeper that stops a sandbox after 3 s without activity."""
    with _app(tmp_path, webapp_schema, sandboxd, IDLE_SWEEPER=True, IDLE_TIMEOUT=3.0,
              IDLE_WARNING=1.0, IDLE_SWEEP_INTERVAL=0.1, IDLE_PERSIST_INTERVAL=1.0) as app:
        yield app


class Page(SocketPage):
    """A signed-in browser: a Flask test client plus a socket.io test client on /gauges."""

    def __init__(self, app, name: str | None):
        super().__init__(app, name, NS)

    def watch(self, **data) -> dict:
        self.events.clear()
        self.sio.emit("watch", data, namespace=NS)
        return self.wait(lambda e: e["name"] in ("watching", "error"), "watch")

    def gauges(self, pred=lambda e: True, what="gauges", timeout: float = 20) -> dict:
        self.events.clear()
        return self.wait(lambda e: e["name"] == "gauges" and pred(e), what, timeout)

    def got_gauges(self) -> bool:
        self.pump()
        return any(e["name"] == "gauges" for e in self.events)


def _sandbox(app, name: str, course: int) -> str:
    """`name`'s sandbox for the course's lab, made as the terminal's first open makes it
    (the gauges never make one)."""
    with app.app_context():
        user = db.session.execute(db.select(User).filter_by(username=name)).scalar_one()
        return sandbox_for(user, course, "example")


def _course(app) -> int:
    """Alice and Bob learn in Teach's course; Olga in Other's."""
    return two_courses(app, "example")


@pytest.mark.privileged
def test_only_the_learner_and_the_courses_instructor_see_the_gauges(g_app):
    course = _course(g_app)
    alice = Page(g_app, "alice")
    # Before the terminal made it, watching makes no sandbox: the page is told to wait.
    early = alice.watch(course=course, lab="example")
    assert early["name"] == "error" and early["reason"] == "no_sandbox", early
    assert not g_app.extensions[GAUGES].gauges.samplers
    made = _sandbox(g_app, "alice", course)
    watching = alice.watch(course=course, lab="example")
    assert watching["name"] == "watching", watching
    sid = watching["sandbox_id"]
    assert sid == made
    first = alice.gauges(lambda e: e["status"] == "running")
    assert first["sandbox_id"] == sid and first["groups"][0]["path"] == "/"
    assert first["groups"][0]["pids"] >= 1

    teach = Page(g_app, "teach")
    assert teach.watch(sandbox_id=sid)["name"] == "watching"
    assert teach.gauges()["sandbox_id"] == sid

    # Anonymous sockets are refused at connect.
    anon = Page(g_app, None)
    assert not anon.sio.is_connected(NS)
    # Another learner of the course, a learner and the instructor of another course: an
    # error, and no gauges ever.
    others = [Page(g_app, n) for n in ("bob", "olga", "other")]
    for page in others:
        answer = page.watch(sandbox_id=sid)
        assert answer["name"] == "error" and answer["reason"] == "forbidden", answer
    # Another course's lab by name: nothing of Alice's (or anybody's) is found.
    assert others[1].watch(course=course, lab="example")["reason"] == "no_sandbox"
    # Bad input: a clear error, nothing watched.
    for bad in ("nope", {"sandbox_id": 7}, {"sandbox_id": ""}):
        alice.sio.emit("watch", bad, namespace=NS)
    time.sleep(1)
    for page in others:
        assert not page.got_gauges(), page.events
    alice.pump()
    assert [e["reason"] for e in alice.events if e["name"] == "error"] == ["invalid"] * 3
    # Alice still watches her sandbox after her bad watches.
    assert alice.gauges()["sandbox_id"] == sid

    # Signing out cuts the page: nothing more arrives to it.
    logout(teach.web)
    deadline = time.monotonic() + 5
    while teach.sio.is_connected(NS):
        assert time.monotonic() < deadline, "the signed-out page is still connected"
        time.sleep(0.05)
    assert len(g_app.extensions[GAUGES].gauges.watchers[sid]) == 1  # Alice's page alone


@pytest.mark.privileged
def test_one_sampler_per_sandbox_stopped_with_the_last_page(g_app):
    course = _course(g_app)
    gauges = g_app.extensions[GAUGES].gauges
    pages = [Page(g_app, "alice") for _ in range(3)] + [Page(g_app, "teach")]
    _sandbox(g_app, "alice", course)
    sid = pages[0].watch(course=course, lab="example")["sandbox_id"]
    for page in pages[1:-1]:
        assert page.watch(course=course, lab="example")["sandbox_id"] == sid
    assert pages[-1].watch(sandbox_id=sid)["name"] == "watching"
    assert list(gauges.samplers) == [sid] and len(gauges.watchers[sid]) == 4
    sampler = gauges.samplers[sid]
    for page in pages:
        page.gauges()
    # Each page gets one sample per 0.2 s (and the sampler read about that often): one
    # sampler for all of them, not one per page (which would send each page 4 times more).
    before, t0 = sampler.samples, time.monotonic()
    pages[0].events.clear()
    time.sleep(2)
    pages[0].pump()
    got = sum(e["name"] == "gauges" for e in pages[0].events)
    most = (time.monotonic() - t0) / 0.2 + 1
    assert 2 <= got <= most and 2 <= sampler.samples - before <= most, (got, most)
    for page in pages[:-1]:
        page.sio.disconnect(namespace=NS)
    assert not sampler.stopped
    pages[-1].sio.emit("unwatch", {}, namespace=NS)
    deadline = time.monotonic() + 5
    while gauges.samplers:
        assert time.monotonic() < deadline, gauges.samplers
        time.sleep(0.05)
    assert sampler.stopped
    count = sampler.samples
    time.sleep(0.6)
    assert sampler.samples <= count + 1  # at most the read in flight when it was stopped


@pytest.mark.privileged
def test_gauges_are_not_activity_and_say_stopped(g_app, client):
    course = _course(g_app)
    alice = Page(g_app, "alice")
    made = _sandbox(g_app, "alice", course)
    activity = g_app.extensions["nslab.activity"]
    before = activity.last(made)
    assert before is not None
    sid = alice.watch(course=course, lab="example")["sandbox_id"]
    for _ in range(5):
        alice.gauges()
    assert activity.last(sid) == before  # a watch and five samples later: no activity

    client.stop(sid)
    stopped = alice.gauges(lambda e: e["status"] == "stopped", "stopped")
    assert stopped["groups"] == []
    # A page (re)connecting to a stopped sandbox's gauges does not start it again.
    again = Page(g_app, "alice")
    assert again.watch(course=course, lab="example")["sandbox_id"] == sid
    assert again.gauges()["status"] == "stopped"
    assert client.get(sid)["state"] != "running" and activity.last(sid) == before
    client.start(sid)
    alice.gauges(lambda e: e["status"] == "running", "running again", timeout=60)


@pytest.mark.privileged
def test_a_child_cgroups_quota_clamps_its_line(g_app, client):
    course = _course(g_app)
    alice = Page(g_app, "alice")
    _sandbox(g_app, "alice", course)
    sid = alice.watch(course=course, lab="example")["sandbox_id"]
    ok(client, sid, "set -e\n"
       "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/hog; mkdir $G;"
       " echo '30000 100000' > $G/cpu.max\n"
       "else G=/sys/fs/cgroup/cpu/hog; mkdir $G; echo 100000 > $G/cpu.cfs_period_us;"
       " echo 30000 > $G/cpu.cfs_quota_us; fi\n"
       "setsid -f sh -c \"echo \\$\\$ > $G/cgroup.procs && exec sh -c 'while :; do :; done'\""
       " </dev/null >/dev/null 2>&1\n")
    try:
        rates = []
        deadline = time.monotonic() + 30
        while len(rates) < 10:
            assert time.monotonic() < deadline, (rates, repr(data["groups"]))
            data = alice.gauges()
            hog = next((g for g in data["groups"] if g["path"] == "/hog"), None)
            if hog is not None and hog["cpu"] is not None:
                assert hog["cpu_max"] == pytest.approx(0.3)
                rates.append(hog["cpu"])
                assert data["groups"][0]["cpu"] >= hog["cpu"] - 0.1
        # The last samples sit at the quota (0.2 s windows are coarse: CFS periods are
        # 0.1 s), never far above it.
        assert max(rates) <= 0.5, rates
        assert sum(rates[-5:]) / 5 == pytest.approx(0.3, abs=0.1), rates
    finally:
        ok(client, sid, "pkill -f 'whil[e] :' || true")  # [e]: not this script itself


@pytest.mark.privileged
def test_a_watched_sandbox_still_idles_out(idle_app, client):
    """Pages watching the gauges sample it five times a second here; the idle sweeper
    stops the sandbox anyway, and the gauges say so."""
    course = _course(idle_app)
    alice = Page(idle_app, "alice")   # the sweeper starts with this first request
    sid = _sandbox(idle_app, "alice", course)
    assert alice.watch(course=course, lab="example")["name"] == "watching"
    t0 = time.monotonic()
    alice.gauges(lambda e: e["status"] == "stopped", "the idle stop", timeout=20)
    assert time.monotonic() - t0 < 10
    assert client.get(sid)["state"] != "running"
