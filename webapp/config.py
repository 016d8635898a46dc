"""Configuration, read from the environment when a Config is made (never at import time).

NSLAB_INSTANCE       instance dir: database, secret key (default: ./instance in a checkout)
DATABASE_URL         SQLAlchemy URL (default: the SQLite file <instance>/nslab.db)
SECRET_KEY           session signing key (default: made once into <instance>/secret_key, 0600)
NSLAB_SOCKET         sandboxd's socket, for the web app's client
NSLAB_LABS           lab content dir (default: labs/ beside this package)
NSLAB_COOKIE_SECURE  1: cookies only over HTTPS (set it when served over HTTPS)
NSLAB_PROXIES        number of trusted reverse proxies in front (X-Forwarded-For, -Proto)
NSLAB_IDLE_MINUTES   stop a learner's sandbox after this long without activity (default 30;
                     0: never); app config IDLE_TIMEOUT, in seconds
NSLAB_IDLE_WARNING_MINUTES  warn the page this long before (default 5); IDLE_WARNING, seconds
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRUE = {"1", "true", "yes", "on"}


class Config:
    SESSION_COOKIE_NAME = "nslab_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    PERMANENT_SESSION_LIFETIME = timedelta(hours=12)
    # A lab page stays open for hours; a form token that expires after one would lose work.
    WTF_CSRF_TIME_LIMIT = None
    MAX_CONTENT_LENGTH = 1 << 20
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    PASSWORD_HASH_METHOD = "scrypt"
    # The sign-in throttle (webapp/auth.py): within the window, a username takes this many
    # failures from browsers without its device token (any address, all together), an
    # address this many from such browsers (any usernames), and a browser with the user's
    # device token this many of its own.
    LOGIN_MAX_FAILURES = 5
    LOGIN_ADDRESS_MAX_FAILURES = 30
    LOGIN_FAILURE_WINDOW = timedelta(minutes=5)
    DEVICE_TOKEN_LIFETIME = timedelta(days=90)
    # Wrong join codes (sign-up, joining a course) within the window: per address, and per
    # signed-in user. 24^4 * 10^4 codes at 30 guesses a 10 minutes is no brute force.
    JOIN_MAX_FAILURES = 10
    JOIN_ADDRESS_MAX_FAILURES = 30
    JOIN_FAILURE_WINDOW = timedelta(minutes=10)
    # 'unsafe-inline' styles: xterm.js writes <style> elements for its themes.
    CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'self'; "
                               "form-action 'self'; frame-ancestors 'none'")

    # Idle stop (webapp/sandboxes/idle.py): the sweeper starts with the first request the app serves
    # (never in the admin commands); it looks every IDLE_SWEEP_INTERVAL seconds at most
    # and writes a sandbox's last activity to the database at most every
    # IDLE_PERSIST_INTERVAL seconds (keystrokes are only noted in memory).
    IDLE_SWEEPER = True
    IDLE_SWEEP_INTERVAL = 30.0
    IDLE_PERSIST_INTERVAL = 30.0
    # Upload and download through the lab page (webapp/files.py).
    UPLOAD_MAX = 16 << 20
    DOWNLOAD_MAX = 16 << 20

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.INSTANCE_PATH = env.get("NSLAB_INSTANCE") or None
        self.SQLALCHEMY_DATABASE_URI = _database_url(env.get("DATABASE_URL"))
        self.SECRET_KEY = env.get("SECRET_KEY") or None
        self.NSLAB_SOCKET = env.get("NSLAB_SOCKET") or None
        self.LABS_DIR = env.get("NSLAB_LABS") or str(ROOT / "labs")
        self.SESSION_COOKIE_SECURE = env.get("NSLAB_COOKIE_SECURE", "").lower() in TRUE
        self.PROXIES = int(env.get("NSLAB_PROXIES") or 0)
        self.IDLE_TIMEOUT = _minutes(env, "NSLAB_IDLE_MINUTES", 30)
        self.IDLE_WARNING = _minutes(env, "NSLAB_IDLE_WARNING_MINUTES", 5)


class TestConfig(Config):
    """Everything under one temp dir; the caller's environment is not read."""

    __test__ = False  # not a pytest test class, despite its name

    TESTING = True
    WTF_CSRF_ENABLED = False
    IDLE_SWEEPER = False  # a test that wants it sets it, with a short IDLE_TIMEOUT
    # scrypt takes ~140 ms a hash; the tests make dozens of accounts.
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"

    def __init__(self, instance_path: str | os.PathLike, **overrides):
        super().__init__(environ={})
        self.INSTANCE_PATH = str(instance_path)
        for key, value in overrides.items():
            setattr(self, key, value)


def _minutes(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of minutes from the environment, in seconds."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default * 60.0
    try:
        minutes = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of minutes, not {raw!r}") from None
    if not 0 <= minutes <= 7 * 24 * 60:
        raise ValueError(f"{name} must be between 0 and {7 * 24 * 60} minutes, not {raw!r}")
    return minutes * 60.0


def _database_url(url: str | None) -> str | None:
    # Heroku-style URLs say postgres://, which SQLAlchemy 2 no longer accepts.
    if url and url.startswith("postgres://"):
        return "postgresql://" + url[len("postgres://"):]
    return url or None
