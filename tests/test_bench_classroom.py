"""`nslab bench classroom`: the instructor's live view with a class checking.

The figures come from `--learners 50` (README); here: its arguments, its figures' maths,
its lab and instance, and that it leaves nothing behind when it fails or is stopped (a
real sandboxd whose socket the group nslab may use, the server as nslab), then one short
real run with three learners."""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import NSLAB, ROOT, require_root
from test_browser import web_daemon  # noqa: F401 - the fixture
from nslab.bench import classroom as bc
from nslab.cli import build_parser
from nslab.cli.bench_instance import seed_instance
from nslab.labkit.grade import grade
from nslab.labkit.loader import load_lab
from sandbox.client import Client
from webapp import create_app
from webapp.extensions import db
from webapp.models import Course, SandboxAssignment, SandboxState, User


class NoDaemon:
    """A client that fails the test if the benchmark touches the daemon at all."""

    def __getattr__(self, name):
        raise AssertionError(f"the benchmark called client.{name} on arguments it refuses")


def _no_seed(**kwargs):
    raise AssertionError("the benchmark seeded an instance on arguments it refuses")


@pytest.mark.parametrize("kwargs, why", [
    ({"learners": 0}, "--learners"),
    ({"learners": bc.MAX_LEARNERS + 1}, "--learners"),
    ({"checks": 0}, "--checks"),
    ({"rate": 0}, "--rate"),
    ({"rate": float("nan")}, "--rate"),
    ({"seconds": -1}, "--seconds"),
])
def test_bad_arguments_are_refused_before_anything_is_made(tmp_path, kwargs, why):
    with pytest.raises(bc.BenchError, match=why):
        bc.bench_classroom(NoDaemon(), _no_seed, socket_path="/nonexistent", workdir=str(tmp_path),
                           **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_command_says_what_is_wrong():
    r = subprocess.run([*NSLAB, "bench", "classroom", "--learners", "0", "--socket",
                        "/nonexistent"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("nslab: error: --learners must be 1 to"), r.stderr
    args = build_parser().parse_args(["bench", "classroom", "--learners", "3", "--checks", "9",
                                      "--rate", "2", "--seconds", "4", "--json"])
    assert (args.learners, args.checks, args.rate, args.seconds, args.json) == (3, 9, 2.0, 4.0,
                                                                               True)


def test_summary_maths():
    s = bc.summarize([10.0, 20.0, 30.0, 40.0, 1000.0])
    assert s == {"p50_ms": 30.0, "p95_ms": 808.0, "max_ms": 1000.0, "mean_ms": 220.0}
    assert bc.summarize([]) == {"p50_ms": None, "p95_ms": None, "max_ms": None,
                                "mean_ms": None}
    assert bc.cpu_pct(10.0, 10.5, 10.0) == 5.0
    assert bc.cpu_pct(None, 10.5, 10.0) is None
    assert bc.cpu_pct(10.0, 10.5, 0) is None
    offsets = bc.arrivals(4000, 5.0, random.Random(1))
    assert all(b > a for a, b in zip(offsets, offsets[1:]))
    # A Poisson stream of 5 a second: 4000 arrivals take about 800 s.
    assert 760 < offsets[-1] < 840
    without, rest = {"web_cpu_pct": 0.5}, {"web_cpu_pct": 1.5}
    checking = {"check_to_cell": {"p50_ms": 12.0, "p95_ms": 40.0}}
    result = bc.build_result(without, rest, checking, {"learners": 50})
    assert list(result)[:5] == ["check_to_cell_p50_ms", "check_to_cell_p95_ms",
                                "web_cpu_at_rest_pct", "web_cpu_without_view_pct", "learners"]
    assert (result["check_to_cell_p95_ms"], result["web_cpu_at_rest_pct"],
            result["web_cpu_without_view_pct"]) == (40.0, 1.5, 0.5)
    assert (result["without_view"], result["at_rest"], result["checking"]) == \
        (without, rest, checking)


def test_the_bench_lab_is_valid_and_its_quiz_needs_no_sandbox(tmp_path):
    lab = load_lab(bc.write_lab(tmp_path))
    assert lab.errors == [], [str(e) for e in lab.errors]
    ex = lab.exercises[bc.EXERCISE]
    assert grade(lab, ex, client=NoDaemon(), sandbox_id=None, params={}, answer=bc.RIGHT).passed
    for wrong in bc.WRONG:
        result = grade(lab, ex, client=NoDaemon(), sandbox_id=None, params={}, answer=wrong)
        assert not result.passed and result.counted
    assert lab.sandbox_limits == {**bc.SANDBOX}


def test_seed_makes_the_class_with_its_sandboxes(tmp_path):
    instance, labs = tmp_path / "instance", tmp_path / "labs"
    labs.mkdir()
    bc.write_lab(labs)
    names = ["bench-learner001", "bench-learner002", "bench-learner003"]
    course_id = seed_instance(instance=instance, labs=labs, lab=bc.LAB_ID,
                              instructor=bc.INSTRUCTOR, learners=names, password="pw-" * 4,
                              sandboxes={"bench-learner001": "sb-a", "bench-learner002": "sb-b"})
    app = create_app({"INSTANCE_PATH": str(instance), "SQLALCHEMY_DATABASE_URI": None,
                      "SECRET_KEY": None, "IDLE_SWEEPER": False})
    with app.app_context():
        course = db.session.get(Course, course_id)
        assert course.instructor.username == bc.INSTRUCTOR
        assert [cl.lab_id for cl in course.labs] == [bc.LAB_ID]
        for name in names:
            assert course.has_learner(User.by_name(name))
        rows = db.session.scalars(db.select(SandboxAssignment)).all()
        assert sorted((r.user.username, r.sandbox_id, r.state, r.lab_id) for r in rows) == [
            ("bench-learner001", "sb-a", SandboxState.RUNNING, bc.LAB_ID),
            ("bench-learner002", "sb-b", SandboxState.RUNNING, bc.LAB_ID)]
        assert User.by_name(bc.INSTRUCTOR).check_password("pw-" * 4)
        db.engine.dispose()


# ---------------------------------------------------------------- against a real daemon

def _bench_sandboxes(client) -> list[str]:
    return [s["id"] for s in client.list()
            if (s.get("labels") or {}).get("purpose") == "bench-classroom"]


@pytest.fixture
def class_daemon(web_daemon):
    """A sandboxd of this test's own whose socket the group nslab may use (the browser
    tests' fixture); the bench serves its instance from /opt/nslab/venv."""
    if not Path("/opt/nslab/venv/bin/python").exists():
        pytest.fail("/opt/nslab/venv is missing: run scripts/setup")
    return web_daemon


@pytest.fixture
def workdir():
    """Where the bench's temp dir goes: one the user nslab can pass through (pytest's
    tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="nslab-bench-classroom-work-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gunicorns_under(path: Path) -> list[int]:
    """Processes whose environment names `path` (the bench's server: PYTHONPATH is its
    code copy)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.privileged
def test_a_failed_start_leaves_no_sandbox_no_process_no_file(class_daemon, workdir):
    client = Client(class_daemon.socket)
    logged = []
    with pytest.raises(bc.BenchError, match="nslab serve exited"):
        # /bin/false for the web app's Python: the server exits at once, after the
        # sandboxes and the database were made.
        bc.bench_classroom(client, seed_instance, socket_path=str(class_daemon.socket),
                           learners=3, python=Path("/bin/false"), workdir=str(workdir),
                           log=logged.append)
    assert any("3/3 sandboxes running" in line for line in logged), logged
    assert _bench_sandboxes(client) == []
    assert list(workdir.iterdir()) == []


@pytest.mark.privileged
def test_sigterm_stops_the_server_and_destroys_the_sandboxes(class_daemon, workdir):
    client = Client(class_daemon.socket)
    env = dict(os.environ, TMPDIR=str(workdir))
    proc = subprocess.Popen([*NSLAB, "bench", "classroom", "--learners", "3", "--seconds", "600",
                             "--socket", str(class_daemon.socket)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Until its server answers (it logs the worker's pid): then SIGTERM, as a service
        # manager would.
        pid = None
        said = []
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            said.append(line)
            if line.startswith("bench: web app (pid "):
                pid = int(line.split("(pid ")[1].split(")")[0])
                break
            assert time.monotonic() < deadline, "the bench never served its instance"
        assert pid is not None, f"the bench ended first ({proc.wait()}): {''.join(said)[-2000:]}"
        assert len(_bench_sandboxes(client)) == 3
        # The web app runs as nslab, never as root.
        uids = Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[:2]
        assert {int(u) for u in uids} == {pwd.getpwnam(bc.WEB_USER).pw_uid}
        base = next(workdir.iterdir())
        assert _gunicorns_under(base / "code")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert _bench_sandboxes(client) == []
    assert not Path(f"/proc/{pid}").exists()
    assert _gunicorns_under(base / "code") == []
    assert list(workdir.iterdir()) == []


@pytest.mark.privileged
def test_a_short_real_run(class_daemon, workdir):
    env = dict(os.environ, TMPDIR=str(workdir))
    r = subprocess.run([*NSLAB, "bench", "classroom", "--learners", "3", "--seconds", "2",
                        "--checks", "12", "--rate", "6", "--seed", "1", "--json",
                        "--socket", str(class_daemon.socket)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    checking = result["checking"]
    assert (checking["failed"], checking["lost"]) == (0, 0), checking
    assert checking["check_to_cell"]["n"] == checking["check_http"]["n"] == 12
    assert 0 < result["check_to_cell_p50_ms"] <= result["check_to_cell_p95_ms"]
    assert result["web_cpu_at_rest_pct"] is not None
    assert result["web_cpu_without_view_pct"] is not None
    assert result["at_rest"]["usage_sandboxes"] == 3
    assert result["sandboxes"] == 3
    assert Client(class_daemon.socket).list() == []
    assert list(workdir.iterdir()) == []


@pytest.mark.privileged
def test_a_temp_dir_the_web_user_cannot_reach_is_refused_before_anything_is_made(tmp_path):
    require_root()
    # pytest's tmp is 0700 root: nslab cannot pass through it.
    with pytest.raises(bc.BenchError, match="cannot reach"):
        bc.bench_classroom(NoDaemon(), _no_seed, socket_path="/nonexistent", learners=3,
                           workdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
