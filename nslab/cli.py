"""The `nslab` command: one entry point for the daemon, sandboxes, images, benchmarks and
the web app's administration (database, users, courses).

Usage errors exit 2, operational errors exit 1 with one line `nslab: error: ...`;
`nslab sandbox exec` exits with the command's own exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from sandbox.errors import SandboxError

EXIT_ERROR = 1


class CommandError(Exception):
    """Bad input for a command; the message is printed after `nslab: error: `."""


def _add_socket(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="sandboxd's Unix socket (default: $NSLAB_SOCKET or "
                   "/run/nslab/sandboxd.sock)")


def _client(args):
    from sandbox.client import Client

    return Client(args.socket)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- sandboxd

def cmd_sandboxd(args) -> int:
    from sandbox.config import DEFAULT_STATE_DIR, HostConfig, default_socket_path
    from sandbox.requests import parse_size

    if os.geteuid() != 0:
        raise SandboxError("sandboxd must run as root (it creates namespaces, cgroups, "
                           "mounts and network devices)")
    config = HostConfig(name=args.name, state_dir=Path(args.state_dir or DEFAULT_STATE_DIR),
                        subnet=args.subnet, socket_group=args.socket_group, warm=args.warm,
                        storage_size=parse_size(args.storage_size, "storage-size",
                                                minimum=1 << 30))
    # The spawner is forked now, before the daemon's own imports (aiohttp, pyroute2):
    # every sandbox and exec is a fork of it, and a small process forks faster.
    from sandbox.spawner import SpawnerClient

    spawner = SpawnerClient.fork()
    from sandbox import daemon
    from sandbox.client import resolve_socket

    socket_path = Path(args.socket) if args.socket else (
        resolve_socket(None) if args.name == "default" else default_socket_path(args.name))
    return daemon.run(config, socket_path, listen=args.listen,
                      token_file=Path(args.token_file) if args.token_file else None,
                      teardown=args.teardown, spawner=spawner)


# ---------------------------------------------------------------- sandbox

def cmd_create(args) -> int:
    params = {"image": args.image, "cpus": args.cpus, "memory": args.memory, "pids": args.pids,
              "disk": args.disk, "hostname": args.hostname, "home": args.home,
              "cpu_weight": args.cpu_weight, "cpuset": args.cpuset, "swap": args.swap}
    sb = _client(args).create(**params)
    if args.json:
        _print_json(sb)
    else:
        print(sb["id"])
    return 0


def cmd_ls(args) -> int:
    boxes = _client(args).list()
    if args.json:
        _print_json(boxes)
        return 0
    rows = [[b["id"], b["state"], b["image"], b["hostname"], b["address"] or "-",
             b["home"] or "-"] for b in boxes]
    _table(rows, ["ID", "STATE", "IMAGE", "HOSTNAME", "ADDRESS", "HOME"])
    return 0


def cmd_inspect(args) -> int:
    _print_json(_client(args).inspect(args.id))
    return 0


def cmd_stats(args) -> int:
    s = _client(args).stats(args.id)
    if args.json:
        _print_json(s)
        return 0
    mib = 1 << 20
    lim = s.get("memory_limit")
    print(f"cpu time      {s.get('cpu_usage_ns', 0) / 1e9:.2f} s"
          f"   (limit {s['cpus']} CPU)" if s.get("cpus") else
          f"cpu time      {s.get('cpu_usage_ns', 0) / 1e9:.2f} s")
    print(f"memory        {s.get('memory_current', 0) / mib:.1f} MiB, peak "
          f"{(s.get('memory_peak') or 0) / mib:.1f} MiB"
          + (f", limit {lim / mib:.0f} MiB" if lim else ""))
    print(f"oom kills     {s.get('oom_kills', 0)}")
    print(f"pids          {s.get('pids_current', 0)} / {s.get('pids_limit') or 'max'}")
    disk = s.get("disk") or {}
    if disk:
        print(f"disk          {disk.get('used_bytes', 0) / mib:.1f} MiB / "
              f"{(disk.get('limit_bytes') or 0) / mib:.0f} MiB")
    return 0


def cmd_rm(args) -> int:
    client = _client(args)
    for sid in args.ids:
        client.destroy(sid, purge=args.purge)
    return 0


def cmd_stop(args) -> int:
    _client(args).stop(args.id)
    return 0


def cmd_start(args) -> int:
    _client(args).start(args.id)
    return 0


def cmd_exec(args) -> int:
    argv = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not argv:
        raise SandboxError("exec needs a command: nslab sandbox exec ID -- CMD [ARG...]")
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SandboxError(f"-e takes NAME=VALUE, not {item!r}")
        env[key] = value
    user = int(args.user) if args.user and args.user.isdigit() else (args.user or 0)
    return asyncio.run(_exec_stream(_client(args), args.id, argv, tty=args.tty, user=user,
                                    cwd=args.workdir, env=env))


async def _exec_stream(client, sid, argv, *, tty, user, cwd, env) -> int:
    from sandbox import sessions

    rows, cols = 24, 80
    if tty and sys.stdout.isatty():
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
    info = client.exec(sid, argv, tty=tty, user=user, cwd=cwd, env=env, rows=rows, cols=cols)
    loop = asyncio.get_running_loop()
    saved = None
    if tty and sys.stdin.isatty():
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
    code = 255
    try:
        async with client.session() as http:
            async with http.ws_connect(client.attach_url(info["id"]), max_msg_size=0) as ws:
                def send(frame: bytes):
                    if ws.closed:
                        return
                    task = asyncio.ensure_future(ws.send_bytes(frame))
                    # the stream may close under us (the process exited); nothing to report
                    task.add_done_callback(lambda t: t.cancelled() or t.exception())

                def pump_stdin():
                    while True:
                        try:
                            data = os.read(0, 65536)
                        except OSError:
                            data = b""
                        if not data:
                            loop.call_soon_threadsafe(send, bytes([sessions.CLOSE_STDIN]))
                            return
                        loop.call_soon_threadsafe(send, bytes([sessions.STDIN]) + data)

                threading.Thread(target=pump_stdin, daemon=True).start()
                if tty and sys.stdout.isatty():
                    def on_winch():
                        c, r = os.get_terminal_size(sys.stdout.fileno())
                        send(bytes([sessions.RESIZE]) + json.dumps({"rows": r, "cols": c}).encode())
                    loop.add_signal_handler(signal.SIGWINCH, on_winch)
                out, err = sys.stdout.buffer, sys.stderr.buffer
                async for msg in ws:
                    if msg.type.name != "BINARY" or not msg.data:
                        continue
                    channel, data = msg.data[0], msg.data[1:]
                    if channel == sessions.STDOUT:
                        out.write(data)
                        out.flush()
                    elif channel == sessions.STDERR:
                        err.write(data)
                        err.flush()
                    elif channel == sessions.EXIT:
                        code = json.loads(data)["exit_code"]
                        if code is None:
                            code = 255
                        elif code < 0:
                            code = 128 - code  # killed by a signal, as a shell reports it
                        break
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return code


# ---------------------------------------------------------------- images

def _image_store(args):
    from sandbox.config import DEFAULT_STATE_DIR, HostConfig
    from sandbox.images import ImageStore

    return ImageStore(HostConfig(state_dir=Path(args.state_dir or DEFAULT_STATE_DIR)))


def cmd_image_ls(args) -> int:
    images = [img.to_json() for img in _image_store(args).list()]
    if args.json:
        _print_json(images)
        return 0
    rows = [[i["name"], f"{i['size_bytes'] / (1 << 20):.1f} MiB", i["description"]] for i in images]
    _table(rows, ["NAME", "SIZE", "DESCRIPTION"])
    return 0


def cmd_image_build(args) -> int:
    from sandbox.images import progress_bar

    if args.name != "debian":
        raise SandboxError(f"can only build 'debian' (the 'host' image is made automatically), "
                           f"not {args.name!r}")
    if os.geteuid() != 0:
        raise SandboxError("building an image needs root")
    img = _image_store(args).build_debian(progress=progress_bar(), suite=args.suite)
    print(f"built image {img.name} at {img.rootfs}")
    return 0


# ---------------------------------------------------------------- bench

def cmd_bench_sandbox(args) -> int:
    from sandbox.bench import bench_sandbox

    result = bench_sandbox(_client(args), count=args.count, background=args.background)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    return 0


def cmd_bench_terminal(args) -> int:
    from nslab.bench_terminal import BenchError, bench_terminal, parse_counts

    password = args.password or os.environ.get("NSLAB_BENCH_PASSWORD") or \
        _demo_password(args.user)
    if not password:
        raise CommandError("--password is needed (or NSLAB_BENCH_PASSWORD, or a readable "
                           "demo-credentials.json in $NSLAB_INSTANCE or /var/lib/nslab-web)")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else \
        (lambda msg: None)
    try:
        result = bench_terminal(args.url, args.user, password, parse_counts(args.terminals),
                                seconds=args.seconds, rate=args.rate, tabs=args.tabs,
                                flood=not args.no_flood, pid=args.pid, log=log)
    except BenchError as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:28} {v}")
        for phase in ("steady", "flood"):
            for n, r in result[phase].items():
                print(f"{phase} {n:>4} terminals: p50 {r['echo_p50_ms']} ms, p99 "
                      f"{r['echo_p99_ms']} ms, max {r['echo_max_ms']} ms, lost {r['lost']}"
                      + (f", web RSS +{r['rss_growth_mib']} MiB" if phase == "flood" else ""))
    return 0


def _demo_password(user: str) -> str | None:
    """The demo account's password from `nslab demo`'s file, where this user may read it."""
    for base in filter(None, (os.environ.get("NSLAB_INSTANCE"), "/var/lib/nslab-web")):
        try:
            return json.loads((Path(base) / "demo-credentials.json").read_text()).get(user)
        except (OSError, ValueError):
            continue
    return None


# ---------------------------------------------------------------- web app administration
# The web app (Flask, SQLAlchemy) is imported inside these handlers only: the daemon and the
# sandbox commands never load it.

@contextmanager
def _webapp(require_schema: bool = True):
    """An app context on the database that DATABASE_URL (or NSLAB_INSTANCE) names. A
    ServiceError inside becomes a CommandError, and nothing of the transaction is kept."""
    from webapp import create_app
    from webapp.extensions import db
    from webapp.services import ServiceError

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
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask import current_app

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
    from flask_migrate import upgrade

    with _webapp(require_schema=False) as db:
        upgrade()
        from alembic.runtime.migration import MigrationContext

        with db.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
        print(f"database {db.engine.url.render_as_string(hide_password=True)} is at "
              f"revision {revision}")
    return 0


def cmd_user_add(args) -> int:
    import secrets

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin: no password on standard input")
    else:
        password = secrets.token_urlsafe(12)
    from webapp import services

    with _webapp() as db:
        user = services.create_user(args.name, password, args.role)
        db.session.commit()
        if not args.password_stdin:
            print(f"created {user.role.value} {user.username!r} with password: {password}")
    return 0


def cmd_course_create(args) -> int:
    from webapp import services
    from webapp.models import User

    with _webapp() as db:
        instructor = User.by_name(args.instructor)
        if instructor is None:
            raise CommandError(f"there is no user named {args.instructor!r}")
        course = services.create_course(args.title, instructor)
        db.session.commit()
        print(course.join_code)
    return 0


def cmd_course_enroll(args) -> int:
    from webapp import services
    from webapp.models import Course, User

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
DEMO_LABS = ("namespaces", "cgroups")


def cmd_demo(args) -> int:
    """Demo accounts and course, made once; prints the same credentials every run."""
    import secrets

    from flask import current_app

    from webapp import services
    from webapp.models import Course, User

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
            for lab in DEMO_LABS:
                services.add_lab(course, lab)
            services.enroll(users["learner"], course)
        db.session.commit()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        print(f"demo course {course.title!r}, join code {course.join_code}")
        for name in ("teacher", "learner"):
            print(f"  {users[name].role.value:10} {name:8} password: "
                  f"{creds.get(name, '(set before; unknown to this command)')}")
    return 0


def cmd_lab_validate(args) -> int:
    from nslab.labtest import find_labs, validate

    try:
        labs = validate(find_labs(args.path))
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    if not labs:
        raise CommandError(f"no labs (folders with a lab.yaml) in {args.path or 'labs/'}")
    bad = 0
    for lab in labs:
        for err in lab.errors:
            print(err)
        bad += bool(lab.errors)
        if not lab.errors:
            print(f"{lab.id}: ok ({len(lab.steps)} steps, {len(lab.exercises)} exercises, "
                  f"{lab.max_points} points)")
    if bad:
        print(f"{bad} of {len(labs)} labs have errors", file=sys.stderr)
    return EXIT_ERROR if bad else 0


def cmd_lab_test(args) -> int:
    from nslab.labtest import default_labs_dir, find_labs, replay_lab, validate

    base = default_labs_dir()
    paths = [p for name in args.labs for p in find_labs(name if "/" in name else base / name)] \
        if args.labs else find_labs(None)
    labs = validate(paths)
    broken = [lab for lab in labs if lab.errors]
    for lab in broken:
        for err in lab.errors:
            print(err, file=sys.stderr)
    if broken:
        raise CommandError("fix the errors above first (`nslab lab validate`)")
    client = _client(args)
    client.info()  # a clear "cannot reach sandboxd" before any lab starts
    ok = True
    for lab in labs:
        ok &= replay_lab(client, lab, seed=args.seed, only=args.exercise or None,
                         keep=args.keep)
    print("all exercises behave" if ok else "some exercises misbehave (FAIL lines above)")
    return 0 if ok else EXIT_ERROR


def cmd_serve(args) -> int:
    """The web app under gunicorn: one process (Socket.IO sessions live in it), threads."""
    if os.geteuid() == 0:
        raise SandboxError("the web app never runs as root: run `nslab serve` as an "
                           "unprivileged user (scripts/serve uses the user 'nslab')")
    with _webapp():
        pass  # fails clearly if the database is missing or not migrated
    argv = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
            "--threads", str(args.threads), "--bind", f"{args.host}:{args.port}",
            "--config", "python:webapp.gunicorn_conf",
            "--access-logfile", "-", "webapp:create_app()"]
    os.execv(sys.executable, argv)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nslab", description="A teaching lab for Linux container internals.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("sandboxd", help="run the sandbox daemon (root)")
    _add_socket(d)
    d.add_argument("--state-dir", help="where sandboxes, images and the storage pool live "
                   "(default /var/lib/nslab)")
    d.add_argument("--name", default="default", help="daemon name; several daemons with "
                   "different names and state dirs can run on one host")
    d.add_argument("--subnet", default="10.213.0.0/16", help="private IPv4 range for sandboxes")
    d.add_argument("--storage-size", default="64g", help="size of the sparse btrfs pool file")
    d.add_argument("--socket-group", help="group allowed to use the socket (mode 0660)")
    d.add_argument("--warm", type=int, default=2, choices=range(0, 65), metavar="N",
                   help="sandboxes kept half-built ahead of demand (default 2; 0 to disable)")
    d.add_argument("--listen", metavar="HOST:PORT", help="also listen on TCP (needs --token-file)")
    d.add_argument("--token-file", help="file holding the bearer token for --listen")
    d.add_argument("--teardown", action="store_true", help="instead of serving: destroy every "
                   "sandbox and home of this daemon and remove its bridge, firewall and pool mount")
    d.set_defaults(func=cmd_sandboxd)

    s = sub.add_parser("sandbox", help="create and use sandboxes")
    ss = s.add_subparsers(dest="sandbox_command", metavar="COMMAND")
    ss.required = True

    c = ss.add_parser("create", help="create a sandbox and print its id")
    _add_socket(c)
    c.add_argument("--image", default="host")
    c.add_argument("--cpus", type=float, help="CPU quota, e.g. 0.5")
    c.add_argument("--cpu-weight", type=int, help="relative CPU weight 1-10000 (default 100)")
    c.add_argument("--cpuset", help="CPUs allowed, e.g. 0 or 0-1")
    c.add_argument("--memory", help="memory limit, e.g. 256m")
    c.add_argument("--swap", help="swap allowed on top of --memory")
    c.add_argument("--pids", type=int, help="process limit")
    c.add_argument("--disk", help="size of the writable layer, e.g. 1g")
    c.add_argument("--hostname")
    c.add_argument("--home", help="name of a persistent home volume mounted at /root")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_create)

    ls = ss.add_parser("ls", help="list sandboxes")
    _add_socket(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    e = ss.add_parser("exec", help="run a command in a sandbox")
    _add_socket(e)
    e.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    e.add_argument("-u", "--user", help="user name or uid inside the sandbox (default root)")
    e.add_argument("-w", "--workdir", help="working directory inside the sandbox")
    e.add_argument("-e", "--env", action="append", help="NAME=VALUE (repeatable)")
    e.add_argument("id")
    e.add_argument("cmd", nargs=argparse.REMAINDER)
    e.set_defaults(func=cmd_exec)

    for name, func, text in (("inspect", cmd_inspect, "host-side facts as JSON"),
                             ("stop", cmd_stop, "stop all processes, keep the files"),
                             ("start", cmd_start, "start a stopped sandbox again")):
        x = ss.add_parser(name, help=text)
        _add_socket(x)
        x.add_argument("id")
        x.set_defaults(func=func)

    st = ss.add_parser("stats", help="resource usage")
    _add_socket(st)
    st.add_argument("id")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    rm = ss.add_parser("rm", help="destroy sandboxes (homes are kept unless --purge)")
    _add_socket(rm)
    rm.add_argument("--purge", action="store_true", help="also delete the home volume")
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=cmd_rm)

    im = sub.add_parser("image", help="sandbox images")
    ims = im.add_subparsers(dest="image_command", metavar="COMMAND")
    ims.required = True
    il = ims.add_parser("ls", help="list images")
    il.add_argument("--state-dir")
    il.add_argument("--json", action="store_true")
    il.set_defaults(func=cmd_image_ls)
    ib = ims.add_parser("build", help="build an image (debian)")
    ib.add_argument("name", choices=["debian"])
    ib.add_argument("--suite", default="bookworm")
    ib.add_argument("--state-dir")
    ib.set_defaults(func=cmd_image_build)

    b = sub.add_parser("bench", help="benchmarks")
    bs = b.add_subparsers(dest="bench_command", metavar="COMMAND")
    bs.required = True
    bsb = bs.add_parser("sandbox", help="sandbox create/exec/destroy latency and memory")
    _add_socket(bsb)
    bsb.add_argument("--count", type=int, default=50)
    bsb.add_argument("--background", type=int, default=0,
                     help="idle sandboxes to create first (load test)")
    bsb.add_argument("--json", action="store_true")
    bsb.set_defaults(func=cmd_bench_sandbox)
    bst = bs.add_parser("terminal", help="keystroke-to-echo latency through a running web "
                        "app's terminals, and its memory while one terminal floods")
    bst.add_argument("--url", default="http://127.0.0.1:8000", help="the running web app")
    bst.add_argument("--user", default="learner", help="a learner enrolled in a course with "
                     "labs (default: the demo's 'learner')")
    bst.add_argument("--password", help="(default: $NSLAB_BENCH_PASSWORD, else the demo "
                     "credentials file when readable)")
    bst.add_argument("--terminals", default="1,50,200", metavar="N,N,...",
                     help="terminal counts to measure (default 1,50,200)")
    bst.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    bst.add_argument("--rate", type=float, default=5.0,
                     help="keystrokes per second per terminal (default 5)")
    bst.add_argument("--tabs", type=int, default=1, metavar="K",
                     help="terminals per Socket.IO connection (a page's tabs; default 1)")
    bst.add_argument("--no-flood", action="store_true", help="skip the `yes` phases")
    bst.add_argument("--pid", type=int, help="the web process to watch (default: the one "
                     "listening on the URL's port)")
    bst.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bst.add_argument("--json", action="store_true")
    bst.set_defaults(func=cmd_bench_terminal)

    # The web app's commands find the database through DATABASE_URL, else the SQLite file
    # in NSLAB_INSTANCE (default ./instance); see webapp/config.py.
    dbp = sub.add_parser("db", help="the web app's database")
    dbs = dbp.add_subparsers(dest="db_command", metavar="COMMAND")
    dbs.required = True
    dbu = dbs.add_parser("upgrade", help="create or migrate the tables to the latest schema")
    dbu.set_defaults(func=cmd_db_upgrade)

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

    dm = sub.add_parser("demo", help="make the demo course and accounts (once) and print them")
    dm.set_defaults(func=cmd_demo)

    lb = sub.add_parser("lab", help="check labs before learners see them")
    lbs = lb.add_subparsers(dest="lab_command", required=True)
    lv = lbs.add_parser("validate", help="report every error of a lab (or of all labs) as "
                        "file:line")
    lv.add_argument("path", nargs="?", help="a lab folder or a folder of labs (default: labs/)")
    lv.set_defaults(func=cmd_lab_validate)
    lt = lbs.add_parser("test", help="replay solutions and wrong answers on real sandboxes "
                        "(needs sandboxd)")
    lt.add_argument("labs", nargs="*", help="lab ids or folders (default: every lab)")
    lt.add_argument("--exercise", action="append", metavar="ID",
                    help="only this exercise (repeatable)")
    lt.add_argument("--seed", type=int, help="seed for the drawn per-learner values")
    lt.add_argument("--keep", action="store_true", help="keep the sandboxes for a look")
    _add_socket(lt)
    lt.set_defaults(func=cmd_lab_test)

    sv = sub.add_parser("serve", help="serve the web app with gunicorn (not as root)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    # Each open page's WebSocket holds one gthread thread for as long as it is open: the
    # thread count caps the connected pages (64 refused the 65th; see the README).
    sv.add_argument("--threads", type=int, default=256,
                    help="worker threads; one per open page (default 256)")
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SandboxError as e:
        print(f"nslab: error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except CommandError as e:
        print(f"nslab: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
