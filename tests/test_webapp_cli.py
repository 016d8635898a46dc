"""The web app's admin commands (`nslab db|user|course`) as a real subprocess on a temp
database, and the migrations against the models."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nslab.cli.web import DEMO_LABS
from webapp import create_app
from webapp.config import Config

ROOT = Path(__file__).resolve().parent.parent
TABLES = {"users", "courses", "enrollments", "course_labs", "sandbox_assignments",
          "login_failures", "alembic_version"}


class Admin:
    """`python -m nslab` on one SQLite file (DATABASE_URL) and instance dir: as a real
    subprocess, or (`inproc`, about 1 s faster a call) through `nslab.cli.main`."""

    def __init__(self, base: Path, monkeypatch, capsys):
        self.db = base / "nslab.db"
        self.env = dict(os.environ, DATABASE_URL=f"sqlite:///{self.db}",
                        NSLAB_INSTANCE=str(base / "instance"))
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nslab", *args], input=input, text=True,
                              capture_output=True, env=self.env, cwd=ROOT, timeout=60)

    def inproc(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        from nslab.cli import main

        with self.monkeypatch.context() as m:
            for key in ("DATABASE_URL", "NSLAB_INSTANCE"):
                m.setenv(key, self.env[key])
            m.setattr(sys, "stdin", io.StringIO(input or ""))
            self.capsys.readouterr()
            code = main(list(args))
            out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    def dump(self) -> dict[str, list[tuple]]:
        with sqlite3.connect(self.db) as conn:
            return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}

    def password_ok(self, name: str, password: str) -> bool:
        from webapp.models import User

        app = create_app(Config(self.env))
        with app.app_context():
            return User.by_name(name).check_password(password)


@pytest.fixture
def admin(tmp_path, monkeypatch, capsys):
    """The admin commands on a fresh, empty SQLite file."""
    a = Admin(tmp_path, monkeypatch, capsys)
    a.db.touch()
    return a


def test_db_upgrade_creates_the_tables(admin):
    assert admin.db.stat().st_size == 0
    r = admin("db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert re.match(r"database sqlite:///\S+ is at revision \w+\n$", r.stdout)
    with sqlite3.connect(admin.db) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
    assert TABLES <= names
    assert admin.inproc("db", "upgrade").returncode == 0  # again: nothing to do, no error


def test_users_courses_enrollment(admin):
    assert admin.inproc("db", "upgrade").returncode == 0
    r = admin("user", "add", "--role", "instructor", "Ann")
    assert r.returncode == 0, r.stderr
    password = re.fullmatch(r"created instructor 'ann' with password: (\S+)\n", r.stdout)[1]
    assert len(password) >= 16 and admin.password_ok("ann", password)

    r = admin.inproc("user", "add", "--role", "learner", "bob", "--password-stdin",
                     input="a long secret\n")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert admin.password_ok("bob", "a long secret")

    r = admin("course", "create", "Containers from scratch", "--instructor", "ann")
    assert r.returncode == 0, r.stderr
    code = r.stdout.strip()
    assert re.fullmatch(r"[A-Z]{4}-[0-9]{4}", code)

    r = admin("course", "enroll", code.lower(), "bob")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"enrolled 'bob' in 'Containers from scratch' ({code})\n"
    rows = admin.dump()
    assert len(rows["enrollments"]) == 1 and len(rows["courses"]) == 1

    # Bad input: exit 1, one line `nslab: error: ...`, nothing changed. Two as real
    # processes (at once), the rest in this one.
    real = [
        (("course", "create", "X", "--instructor", "nobody"), None,
         "there is no user named 'nobody'"),
        (("course", "enroll", code, "ann"), None, "'ann' is an instructor; only learners"),
    ]
    bad = [
        (("user", "add", "--role", "learner", "BOB"), None, "the username 'bob' is taken"),
        (("user", "add", "--role", "learner", "x/y"), None, "a username is 2-32 characters"),
        (("user", "add", "--role", "learner", "carl", "--password-stdin"), "short\n",
         "a password needs at least 8 characters"),
        (("user", "add", "--role", "learner", "carl", "--password-stdin"), "",
         "--password-stdin: no password on standard input"),
        (("course", "create", "X", "--instructor", "bob"), None,
         "'bob' is a learner, not an instructor"),
        (("course", "enroll", code, "nobody"), None, "there is no user named 'nobody'"),
        (("course", "enroll", code, "bob"), None, "'bob' is already enrolled"),
        (("course", "enroll", "ZZZZ-0000", "bob"), None, "no course has the join code"),
    ]
    with ThreadPoolExecutor(max_workers=len(real)) as pool:
        results = list(pool.map(lambda case: admin(*case[0], input=case[1]), real))
    results += [admin.inproc(*args, input=input) for args, input, _ in bad]
    for (args, _, message), r in zip(real + bad, results):
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(f"nslab: error: {message}"), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr  # one line, no traceback
    assert admin.dump() == rows


def test_commands_need_an_upgraded_database(admin):
    r = admin("user", "add", "--role", "instructor", "ann")
    assert r.returncode == 1
    assert r.stderr.startswith("nslab: error: the database sqlite:///")
    assert "has no tables yet: run `nslab db upgrade` first" in r.stderr
    with pytest.raises(SystemExit) as exit:  # a usage error
        admin.inproc("user", "add", "--role", "teacher", "ann")
    assert exit.value.code == 2 and "invalid choice: 'teacher'" in admin.capsys.readouterr().err


def test_migrations_match_the_models(webapp_schema, tmp_path):
    """The committed migrations build exactly the schema the models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from webapp.config import TestConfig
    from webapp.extensions import db

    app = create_app(TestConfig(tmp_path, SQLALCHEMY_DATABASE_URI=f"sqlite:///{webapp_schema}"))
    with app.app_context():
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        db.engine.dispose()
    assert diff == []


def test_demo_makes_accounts_once_and_prints_the_same_credentials(admin):
    assert admin("db", "upgrade").returncode == 0
    first = admin.inproc("demo")
    assert first.returncode == 0, first.stderr
    again = admin.inproc("demo")
    assert again.stdout == first.stdout, "a second run makes nothing new and prints the same"
    passwords = dict(re.findall(r"(teacher|learner)\s+password: (\S+)", first.stdout))
    assert set(passwords) == {"teacher", "learner"}
    assert admin.password_ok("teacher", passwords["teacher"])
    assert admin.password_ok("learner", passwords["learner"])
    assert re.search(r"join code [A-Z]{4}-\d{4}", first.stdout)
    creds = Path(admin.env["NSLAB_INSTANCE"]) / "demo-credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600


def test_demo_course_gets_the_labs_added_since_in_course_order(admin):
    """A demo course made by an older version (the first two labs) gets the Docker labs
    appended, in the document's order, on the next `nslab demo`; nothing twice."""
    assert admin("db", "upgrade").returncode == 0
    assert admin.inproc("demo").returncode == 0

    def labs() -> list[str]:
        with sqlite3.connect(admin.db) as conn:
            return [r[0] for r in conn.execute("SELECT lab_id FROM course_labs "
                                               "ORDER BY position")]

    assert labs() == list(DEMO_LABS) and DEMO_LABS[:3] == ("namespaces", "cgroups",
                                                           "docker-basics")
    with sqlite3.connect(admin.db) as conn:
        conn.execute("DELETE FROM course_labs WHERE lab_id NOT IN ('namespaces', 'cgroups')")
    assert admin.inproc("demo").returncode == 0
    assert labs() == list(DEMO_LABS)
    assert admin.inproc("demo").returncode == 0
    assert labs() == list(DEMO_LABS)


@pytest.mark.privileged
def test_serve_refuses_to_run_as_root(admin):
    assert os.geteuid() == 0, "this test checks the refusal, so it must run as root"
    assert admin("db", "upgrade").returncode == 0
    r = admin("serve", "--port", "1")
    assert r.returncode == 1 and "never runs as root" in r.stderr, r.stderr


def test_gunicorn_worker_freezes_the_startup_heap(monkeypatch):
    # `nslab serve` loads webapp/gunicorn_conf.py: once the worker has the app, what exists
    # is out of the cyclic GC's sight, so a full collection no longer stalls the terminals
    # for 60-100 ms (README, Terminal).
    import contextlib
    import gc

    from nslab.cli import build_parser, web
    from webapp import gunicorn_conf

    execs = []
    monkeypatch.setattr(web.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(web, "_webapp", contextlib.nullcontext)
    monkeypatch.setattr(web.os, "execv", lambda path, argv: execs.append(argv))
    web.cmd_serve(build_parser().parse_args(["serve", "--port", "8123"]))
    argv = execs[0]
    assert argv[argv.index("--config") + 1] == "python:webapp.gunicorn_conf"
    gc.unfreeze()
    try:
        gunicorn_conf.post_worker_init(None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
