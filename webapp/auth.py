"""Sign in, sign out, sign up (learners, with a course's join code); roles; the throttles.

Signing out revokes: the session cookie carries the user's session version (User.get_id),
and signing out bumps it, so a copy of a cookie saved before stops working everywhere (every
browser of that user is signed out).

The sign-in throttle follows OWASP's device cookies: a browser that signs in as a user gets
a signed device token for that username (the cookie `nslab_device` holds the last few
users of a browser, each with a nonce, for DEVICE_TOKEN_LIFETIME). A failure is recorded
with the token's nonce, or with none. Then
  - a browser with the user's valid token waits only after LOGIN_MAX_FAILURES failures of
    its own (per nonce): nobody else's guesses can lock it out;
  - any other browser waits once the username has LOGIN_MAX_FAILURES failures from
    browsers without a token (any address, together: a guesser gets that many a window),
    or once its address has LOGIN_ADDRESS_MAX_FAILURES such failures (any names).
So a stranger in a classroom (one shared address) can make amy's new browsers wait, never
the browser amy has signed in with before. Wrong join codes (sign-up, joining a course)
are throttled per address and per signed-in user (JOIN_*), so codes cannot be guessed.
"""

from __future__ import annotations

import math
import secrets
import time
from datetime import timedelta
from functools import cache, wraps
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template,
                   request, session, url_for)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import ColumnElement, delete, select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import EqualTo, InputRequired, Length

from . import services
from .extensions import db, login_manager
from .models import (Course, JoinFailure, LoginFailure, Role, User, as_utc, normalize_username,
                     utcnow)
from .sandboxes.service import TERMINAL

bp = Blueprint("auth", __name__)

DEVICE_COOKIE = "nslab_device"
DEVICE_SALT = "nslab-device-token"
DEVICE_KEEP = 8  # usernames one browser vouches for: the learners of a shared lab PC


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[InputRequired(), Length(max=256)],
                             render_kw={"autocomplete": "current-password"})
    next = HiddenField()


class SignupForm(FlaskForm):
    join_code = StringField("Course join code", validators=[InputRequired(), Length(max=16)],
                            render_kw={"placeholder": "ABCD-1234", "autocomplete": "off",
                                       "autocapitalize": "characters"})
    username = StringField("Username", validators=[InputRequired(), Length(max=32)],
                           render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[InputRequired(), Length(max=256)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat password",
                            validators=[InputRequired(), EqualTo("password",
                                                                 "The passwords differ.")],
                            render_kw={"autocomplete": "new-password"})


class LogoutForm(FlaskForm):
    pass


login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to see that page."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a session that carries "id.version" (User.get_id); nobody if the user
    has signed out since (the version moved on), or for a cookie of another format."""
    uid, _, version = user_id.partition(".")
    if not (uid.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(uid))
    return user if user is not None and user.session_version == int(version) else None


@login_manager.unauthorized_handler
def unauthorized():
    if request.path.startswith("/api/"):
        return jsonify(error="unauthorized", message="sign in first"), 401
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def role_required(role: Role):
    """Signed in, with this role; anyone else gets 403."""
    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role != role:
                abort(403, description=f"Only {role.value}s can do that.")
            return view(*args, **kwargs)
        return wrapped
    return decorator


# ---------------------------------------------------------------- views

@bp.route("/", methods=["GET"])
@bp.route("/login", methods=["GET", "POST"])  # registered first (inner), so url_for gives it
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if not form.validate_on_submit():
        return render_template("landing.html", form=form)
    name, address = normalize_username(form.username.data)[:64], _client_address()
    device = _device_for(name)
    wait, why = _login_wait(name, address, device)
    if wait:
        flash(f"{why} {_try_again(wait)}", "error")
        return _throttled(render_template("landing.html", form=form), wait)
    user = User.by_name(name)
    if not _password_matches(user, form.password.data):
        db.session.add(LoginFailure(username=name, address=address, device=device))
        db.session.commit()
        flash("Wrong username or password.", "error")
        return render_template("landing.html", form=form)
    # A success wipes this client's failures (and only this client's).
    mine = LoginFailure.device == device if device is not None else \
        (LoginFailure.address == address) & LoginFailure.device.is_(None)
    db.session.execute(delete(LoginFailure).where(LoginFailure.username == name, mine))
    db.session.commit()
    return _signed_in(user, redirect(_safe_next(form.next.data) or url_for("dashboard.home")),
                      device)


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = SignupForm()
    if request.method == "GET" and request.args.get("code"):
        form.join_code.data = request.args["code"]
    if form.validate_on_submit():
        wait = join_code_wait(None)
        if wait:
            flash(f"Too many wrong join codes from your address. {_try_again(wait)}", "error")
            return _throttled(render_template("auth/signup.html", form=form), wait)
        course = Course.by_code(form.join_code.data)
        if course is None:
            note_wrong_join_code(None)
            form.join_code.errors.append("No course has this join code; ask your instructor.")
        else:
            try:
                user = services.create_user(form.username.data, form.password.data,
                                            Role.LEARNER)
                services.enroll(user, course)
            except services.ServiceError as e:
                db.session.rollback()
                form.username.errors.append(str(e)[0].upper() + str(e)[1:] + ".")
            else:
                db.session.commit()
                response = _signed_in(user, redirect(url_for("courses.show",
                                                             course_id=course.id)), None)
                flash(f"Welcome, {user.username}! You joined {course.title}.", "success")
                return response
    return render_template("auth/signup.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    LogoutForm()  # CSRFProtect has already checked the token of this POST
    if current_user.is_authenticated:
        revoke_sessions(current_user)  # copies of this session's cookie die with it
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


# ---------------------------------------------------------------- helpers

def revoke_sessions(user: User) -> None:
    """Sign `user` out everywhere, committed: every session cookie issued so far is
    refused, and their open terminals on this process are cut. A terminal's keystrokes
    skip the per-event sign-in check (for speed), so without the cut one opened before
    would go on taking keys from a copied cookie until its socket closed."""
    user.revoke_sessions()
    db.session.commit()  # first: a terminal connecting from now on reads the new version
    terminals = current_app.extensions.get(TERMINAL)
    if terminals is not None:
        terminals.disconnect_user(user.id)


def _client_address() -> str:
    # Behind a reverse proxy, NSLAB_PROXIES makes ProxyFix put the client's address here.
    return (request.remote_addr or "unknown")[:64]


def _signed_in(user: User, response, device: str | None):
    """`response`, with `user` signed in (a fresh session) and the browser's device token
    for them renewed (made, if it had none)."""
    session.clear()
    login_user(user)
    session.permanent = True
    _remember_device(response, user.username, device)
    return response


def _throttled(body: str, wait: float):
    response = current_app.make_response((body, 429))
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


def _try_again(wait: float) -> str:
    minutes = math.ceil(wait / 60)
    return f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _wait(model, limit: int, window: timedelta, *where: ColumnElement) -> float:
    """0 if fewer than `limit` rows of `model` (LoginFailure, JoinFailure) match `where`
    within `window`, else the seconds until the oldest of the last `limit` leaves it."""
    now = utcnow()
    recent = db.session.scalars(
        select(model.at).where(*where, model.at > now - window)
        .order_by(model.at.desc()).limit(limit)).all()
    if len(recent) < limit:
        return 0.0
    return max(1.0, (as_utc(recent[-1]) + window - now).total_seconds())


def _forget_old(model, window: timedelta) -> None:
    # Failures older than the window never count again; dropping them keeps the table small.
    db.session.execute(delete(model).where(model.at <= utcnow() - window))


def _login_wait(name: str, address: str, device: str | None) -> tuple[float, str]:
    """(0, "") if this client may try to sign in as `name` now, else (the seconds to
    wait, why). `device`: the nonce of the client's device token for `name`, if any."""
    config = current_app.config
    window, limit = config["LOGIN_FAILURE_WINDOW"], config["LOGIN_MAX_FAILURES"]
    _forget_old(LoginFailure, window)
    if device is not None:
        checks = [(limit, f"Too many failed sign-ins for {name!r} from this browser.",
                   (LoginFailure.username == name, LoginFailure.device == device))]
    else:
        untrusted = LoginFailure.device.is_(None)
        checks = [(limit, f"Too many failed sign-ins for {name!r} from browsers it has not "
                          "signed in with before.", (LoginFailure.username == name, untrusted)),
                  (config["LOGIN_ADDRESS_MAX_FAILURES"],
                   "Too many failed sign-ins from your address.",
                   (LoginFailure.address == address, untrusted))]
    for n, why, where in checks:
        wait = _wait(LoginFailure, n, window, *where)
        if wait:
            db.session.commit()
            return wait, why
    db.session.commit()
    return 0.0, ""


def join_code_wait(user_id: int | None) -> float:
    """0 if this client (its address, and `user_id` when signed in) may try a join code
    now, else the seconds to wait."""
    config = current_app.config
    window = config["JOIN_FAILURE_WINDOW"]
    _forget_old(JoinFailure, window)
    wait = _wait(JoinFailure, config["JOIN_ADDRESS_MAX_FAILURES"], window,
                 JoinFailure.address == _client_address())
    if not wait and user_id is not None:
        wait = _wait(JoinFailure, config["JOIN_MAX_FAILURES"], window,
                     JoinFailure.user_id == user_id)
    db.session.commit()
    return wait


def note_wrong_join_code(user_id: int | None) -> None:
    db.session.add(JoinFailure(address=_client_address(), user_id=user_id))
    db.session.commit()


def _device_tokens() -> list[list]:
    """The browser's unexpired device tokens, [username, nonce, issued (epoch s)] each;
    none if the cookie is missing, forged or signed with another key."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return []
    try:
        tokens = URLSafeSerializer(current_app.secret_key, salt=DEVICE_SALT).loads(raw)
    except BadSignature:
        return []
    oldest = time.time() - current_app.config["DEVICE_TOKEN_LIFETIME"].total_seconds()
    if not isinstance(tokens, list):
        return []
    return [t for t in tokens if isinstance(t, list) and len(t) == 3 and
            isinstance(t[0], str) and isinstance(t[1], str) and
            isinstance(t[2], int) and t[2] > oldest]


def _device_for(name: str) -> str | None:
    """The nonce of this browser's device token for `name`, if it has a valid one."""
    return next((nonce for user, nonce, _ in _device_tokens() if user == name), None)


def _remember_device(response, name: str, device: str | None) -> None:
    tokens = [t for t in _device_tokens() if t[0] != name]
    tokens.insert(0, [name, device or secrets.token_urlsafe(12), int(time.time())])
    lifetime = current_app.config["DEVICE_TOKEN_LIFETIME"]
    response.set_cookie(DEVICE_COOKIE,
                        URLSafeSerializer(current_app.secret_key, salt=DEVICE_SALT)
                        .dumps(tokens[:DEVICE_KEEP]),
                        max_age=int(lifetime.total_seconds()), httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])


@cache
def _dummy_hash(method: str) -> str:
    return generate_password_hash("nslab-unknown-user", method=method)


def _password_matches(user: User | None, password: str) -> bool:
    if user is None:
        # Hash anyway, so the answer for an unknown name takes as long as for a wrong password.
        check_password_hash(_dummy_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return False
    return user.check_password(password)


def _safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site (never another host: no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return None
    return target
