"""The signed-in home page: my courses (taught or joined)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from .courses import JoinForm

bp = Blueprint("dashboard", __name__)


@bp.route("/dashboard")
@login_required
def home():
    if current_user.is_instructor:
        return render_template("dashboard.html", courses=current_user.teaching)
    courses = [e.course for e in current_user.enrollments]
    return render_template("dashboard.html", courses=courses, join=JoinForm())
