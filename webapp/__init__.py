"""nslab's web app: accounts, courses, lessons, grades, and learners' sandboxes with their
terminals (`webapp.sandboxes`, `webapp.terminal`).

Run it with `nslab serve` (gunicorn, one worker of threads: Socket.IO sessions live in
one process; its worker class is webapp.gunicorn_conf.HeadFirstWorker).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from . import models  # noqa: F401 - the tables must be known before migrate/metadata use
from . import (auth, classroom, courses, dashboard, errors, files, gauges, gradebook, health,
               lab_api, labs, notebook, progress, sandboxes, staff)
from .classroom import actions as classroom_actions
from .classroom import stats as classroom_stats
from .config import ROOT, Config
from .extensions import csrf, db, login_manager, migrate, socketio
from .terminal.gate import SocketGate

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_app(config: Config | Mapping | None = None) -> Flask:
    """Make the app. `config` is a Config (or TestConfig), or a mapping laid over Config()."""
    if config is None or isinstance(config, Mapping):
        overrides = config or {}
        config = Config()
        for key, value in overrides.items():
            setattr(config, key, value)
    app = Flask(__name__, instance_path=_abs(config.INSTANCE_PATH),
                static_folder=str(ROOT / "static"), template_folder="templates")
    app.config.from_object(config)
    instance = Path(app.instance_path)
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{instance / 'nslab.db'}"
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret_key(instance / "secret_key")
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    csrf.init_app(app)
    login_manager.init_app(app)
    socketio.init_app(app, async_mode="threading")

    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(courses.bp)
    app.register_blueprint(labs.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(lab_api.bp)
    app.register_blueprint(gradebook.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(classroom_stats.bp)
    app.register_blueprint(classroom_actions.bp)  # the live page and its actions
    errors.register(app)

    progress.init_app(app)  # one check at a time per learner
    # The daemon's client, the activity tracker, the idle sweeper (started with the first
    # request served) and the /terminal namespace. After socketio.init_app: the namespace
    # goes onto the socket.io server init_app just made for this app.
    sandboxes.init_app(app, socketio)
    # Python cells in the learner's kernel (/notebook), and the scratch notebook's routes.
    notebook.init_app(app, socketio)
    # Live gauges of a learner's sandbox's cgroups beside the terminal (/gauges).
    gauges.init_app(app, socketio)
    # The instructor's live classroom (/classroom): pushes to teachers' and learners' pages,
    # one usage sampler per watched course.
    classroom.init_app(app, socketio)

    headers = security_headers(app.config)

    @app.after_request
    def add_security_headers(response):
        for name, value in headers:
            response.headers.setdefault(name, value)
        return response

    # In front of engine.io (which socketio.init_app put around the Flask app): a socket.io
    # request without a signed-in user is refused before it can hold a worker thread, and
    # the threads those requests hold are bounded (webapp/terminal/gate.py).
    app.wsgi_app = SocketGate(app, app.wsgi_app, headers=headers)
    app.extensions["nslab.socket_gate"] = app.wsgi_app
    if app.config.get("PROXIES"):
        # Outermost, so the gate, engine.io and the Socket.IO handlers see the client's
        # address as the pages do.
        n = app.config["PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    return app


def security_headers(config: Mapping) -> list[tuple[str, str]]:
    """The headers every response gets, pages and socket.io's alike."""
    headers = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
               ("X-Frame-Options", "DENY")]
    if config.get("CONTENT_SECURITY_POLICY"):
        headers.append(("Content-Security-Policy", config["CONTENT_SECURITY_POLICY"]))
    return headers


def load_secret_key(path: Path) -> str:
    """The key in `path`, made once (mode 0600) if it is not there yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Written aside and linked into place: two workers starting together agree on one key,
    # and nobody ever reads a half-written file.
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text().strip()
    finally:
        tmp.unlink()
    return key


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets page loads read while a request writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
