"""`nslab db upgrade`, `nslab user add`, `nslab course create|enroll`, `nslab demo` and
`nslab serve`: the web app's administration, on the database that DATABASE_URL (or
NSLAB_INSTANCE) names, and serving it under gunicorn."""

from __future__ import annotations

import json
import os
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import upgrade

from sandbox.errors import SandboxError
from webapp import create_app, services
from webapp.extensions import db
from webapp.models import Course, User
from webapp.services import ServiceError
from webapp.terminal.gate import PAGE_THREADS, PER_USER

from .common import CommandError


@contextmanager
def _webapp(require_schema: bool = True):
    """An app context on the database that DATABASE_URL (or NSLAB_INSTANCE) names. A
    ServiceError inside becomes a CommandError, and nothing of the transaction is kept."""
    app = create_app()
    with app.app_context():
        if require_schema:
            _check_schema(db)
        try:
            yield db
        except ServiceError as e:
            db.session.rollback()
            raise CommandError(str(e)) from None


def _check_schema(db) -> None:
    config = current_app.extensions["migrate"].migrate.get_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    with db.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    where = db.engine.url.render_as_string(hide_password=True)
    if current is None:
        raise CommandError(f"the database {where} has no tables yet: run `nslab db upgrade` "
                           "first")
    if current != head:
        raise CommandError(f"the database {where} is not up to date (revision {current}, "
                           f"latest {head}): run `nslab db upgrade` first")


def cmd_db_upgrade(args) -> int:
    with _webapp(require_schema=False) as db:
        upgrade()
        with db.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
        print(f"database {db.engine.url.render_as_string(hide_password=True)} is at "
              f"revision {revision}")
    return 0


def cmd_user_add(args) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: no password on standard input")
    else:
        password = secrets.token_urlsafe(12)
    with _webapp() as db:
        user = services.create_user(args.name, password, args.role)
        db.session.commit()
        if not args.password_stdin:
            print(f"created {user.role.value} {user.username!r} with password: {password}")
    return 0


def cmd_course_create(args) -> int:
    with _webapp() as db:
        instructor = User.by_name(args.instructor)
        if instructor is None:
            raise CommandError(f"there is no user named {args.instructor!r}")
        course = services.create_course(args.title, instructor)
        db.session.commit()
        print(course.join_code)
    return 0


def cmd_course_enroll(args) -> int:
    with _webapp() as db:
        course = Course.by_code(args.code)
        if course is None:
            raise CommandError(f"no course has the join code {args.code!r}")
        user = User.by_name(args.name)
        if user is None:
            raise CommandError(f"there is no user named {args.name!r}")
        services.enroll(user, course)
        db.session.commit()
        print(f"enrolled {user.username!r} in {course.title!r} ({course.join_code})")
    return 0


DEMO_COURSE = "Containers from scratch"
# The course document's order: the kernel first, then Docker on top of it.
DEMO_LABS = ("namespaces", "cgroups", "docker-basics", "dockerfile", "docker-limits",
             "containers-vs-vms")


def cmd_demo(args) -> int:
    """Demo accounts and course, made once; prints the same credentials every run."""
    with _webapp() as db:
        path = Path(current_app.instance_path) / "demo-credentials.json"
        creds = json.loads(path.read_text()) if path.exists() else {}
        users = {}
        for name, role in (("teacher", "instructor"), ("learner", "learner")):
            user = User.by_name(name)
            if user is None:
                creds[name] = secrets.token_urlsafe(9)
                user = services.create_user(name, creds[name], role)
            users[name] = user
        db.session.flush()
        course = db.session.execute(db.select(Course).filter_by(
            title=DEMO_COURSE, instructor_id=users["teacher"].id)).scalar_one_or_none()
        if course is None:
            course = services.create_course(DEMO_COURSE, users["teacher"])
            db.session.flush()
            services.enroll(users["learner"], course)
        # A demo course made by an older version gets the labs added since, at its end.
        for lab in DEMO_LABS:
            if course.lab(lab) is None:
                services.add_lab(course, lab)
        db.session.commit()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        print(f"demo course {course.title!r}, join code {course.join_code}")
        for name in ("teacher", "learner"):
            print(f"  {users[name].role.value:10} {name:8} password: "
                  f"{creds.get(name, '(set before; unknown to this command)')}")
    return 0


def cmd_serve(args) -> int:
    """The web app under gunicorn: one process (Socket.IO sessions live in it), threads."""
    if os.geteuid() == 0:
        raise SandboxError("the web app never runs as root: run `nslab serve` as an "
                           "unprivileged user (scripts/serve uses the user 'nslab')")
    with _webapp():
        pass  # fails clearly if the database is missing or not migrated
    if args.sockets_per_user < 1:
        raise CommandError("--sockets-per-user must be at least 1")
    if args.threads <= PAGE_THREADS:
        raise CommandError(f"--threads must be more than {PAGE_THREADS}: that many are kept "
                           "for pages, the rest may hold terminal connections")
    # gthread's worker that waits for a request's whole head without holding a thread
    # (slow-header clients took every thread); socket.io connections may hold all threads
    # but PAGE_THREADS, which stay for pages (webapp/terminal/gate.py).
    argv = [sys.executable, "-m", "gunicorn",
            "--worker-class", "webapp.gunicorn_conf.HeadFirstWorker", "--workers", "1",
            "--threads", str(args.threads), "--bind", f"{args.host}:{args.port}",
            "--config", "python:webapp.gunicorn_conf",
            "--access-logfile", "-",
            f"webapp:create_app({{'SOCKETS_MAX': {args.threads - PAGE_THREADS}, "
            f"'SOCKETS_PER_USER': {args.sockets_per_user}}})"]
    os.execv(sys.executable, argv)


# ---------------------------------------------------------------- parser

# The web app's commands find the database through DATABASE_URL, else the SQLite file in
# NSLAB_INSTANCE (default ./instance); see webapp/config.py.

def add_db_commands(sub) -> None:
    dbp = sub.add_parser("db", help="the web app's database")
    dbs = dbp.add_subparsers(dest="db_command", metavar="COMMAND")
    dbs.required = True
    dbu = dbs.add_parser("upgrade", help="create or migrate the tables to the latest schema")
    dbu.set_defaults(func=cmd_db_upgrade)


def add_user_commands(sub) -> None:
    u = sub.add_parser("user", help="web app accounts")
    us = u.add_subparsers(dest="user_command", metavar="COMMAND")
    us.required = True
    ua = us.add_parser("add", help="add an account (prints a generated password unless "
                       "--password-stdin)")
    ua.add_argument("--role", required=True, choices=["instructor", "learner"])
    ua.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")
    ua.add_argument("name")
    ua.set_defaults(func=cmd_user_add)


def add_course_commands(sub) -> None:
    co = sub.add_parser("course", help="web app courses")
    cos = co.add_subparsers(dest="course_command", metavar="COMMAND")
    cos.required = True
    cc = cos.add_parser("create", help="create a course and print its join code")
    cc.add_argument("title")
    cc.add_argument("--instructor", required=True, metavar="NAME")
    cc.set_defaults(func=cmd_course_create)
    ce = cos.add_parser("enroll", help="enroll a learner in the course with this join code")
    ce.add_argument("code", metavar="CODE")
    ce.add_argument("name", metavar="NAME")
    ce.set_defaults(func=cmd_course_enroll)


def add_demo_command(sub) -> None:
    dm = sub.add_parser("demo", help="make the demo course and accounts (once) and print them")
    dm.set_defaults(func=cmd_demo)


def add_serve_command(sub) -> None:
    sv = sub.add_parser("serve", help="serve the web app with gunicorn (not as root)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    # Each open page's WebSocket holds one thread for as long as it is open: all but 64
    # threads (kept for pages) cap the connected pages; see the README.
    sv.add_argument("--threads", type=int, default=256,
                    help="worker threads; one per open page, 64 kept for pages (default 256)")
    # One account's open pages may hold this many threads: a learner's page is one
    # connection; `nslab bench terminal --terminals N` opens N as the demo learner.
    sv.add_argument("--sockets-per-user", type=int, default=PER_USER, metavar="N",
                    help=f"Socket.IO connections one account may hold (default {PER_USER})")
    sv.set_defaults(func=cmd_serve)


COMMANDS = {"db": add_db_commands, "user": add_user_commands, "course": add_course_commands,
            "demo": add_demo_command, "serve": add_serve_command}
