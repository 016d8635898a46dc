"""Sign in, sign out, sign up (learners, with a course's join code); roles; the login rate limit."""

from __future__ import annotations

import math
from functools import cache, wraps
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template,
                   request, session, url_for)
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import delete, select
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import EqualTo, InputRequired, Length

from . import services
from .extensions import db, login_manager
from .models import Course, LoginFailure, Role, User, as_utc, normalize_username, utcnow

bp = Blueprint("auth", __name__)


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
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


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
    wait = _seconds_until_allowed(name, address)
    if wait:
        minutes = math.ceil(wait / 60)
        flash(f"Too many failed sign-ins for {name!r} from your address. Try again in "
              f"{minutes} minute{'s' if minutes != 1 else ''}.", "error")
        response = current_app.make_response((render_template("landing.html", form=form), 429))
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    user = User.by_name(name)
    if not _password_matches(user, form.password.data):
        db.session.add(LoginFailure(username=name, address=address))
        db.session.commit()
        flash("Wrong username or password.", "error")
        return render_template("landing.html", form=form)
    db.session.execute(delete(LoginFailure).where(LoginFailure.username == name,
                                                  LoginFailure.address == address))
    db.session.commit()
    session.clear()
    login_user(user)
    session.permanent = True
    return redirect(_safe_next(form.next.data) or url_for("dashboard.home"))


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = SignupForm()
    if request.method == "GET" and request.args.get("code"):
        form.join_code.data = request.args["code"]
    if form.validate_on_submit():
        course = Course.by_code(form.join_code.data)
        if course is None:
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
                session.clear()
                login_user(user)
                session.permanent = True
                flash(f"Welcome, {user.username}! You joined {course.title}.", "success")
                return redirect(url_for("courses.show", course_id=course.id))
    return render_template("auth/signup.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    LogoutForm()  # CSRFProtect has already checked the token of this POST
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


# ---------------------------------------------------------------- helpers

def _client_address() -> str:
    # Behind a reverse proxy, NSLAB_PROXIES makes ProxyFix put the client's address here.
    return (request.remote_addr or "unknown")[:64]


def _seconds_until_allowed(name: str, address: str) -> float:
    """0 if this username may try from this address now, else the seconds to wait."""
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    window = current_app.config["LOGIN_FAILURE_WINDOW"]
    now = utcnow()
    # Failures older than the window never count again; dropping them keeps the table small.
    db.session.execute(delete(LoginFailure).where(LoginFailure.at <= now - window))
    recent = db.session.scalars(
        select(LoginFailure.at)
        .where(LoginFailure.username == name, LoginFailure.address == address,
               LoginFailure.at > now - window)
        .order_by(LoginFailure.at.desc()).limit(limit)).all()
    db.session.commit()
    if len(recent) < limit:
        return 0
    oldest = as_utc(recent[-1])
    return max(1.0, (oldest + window - now).total_seconds())


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
