"""The signed-in home page: my courses (taught or joined)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from .courses import JoinForm
from .staff import co_taught

bp = Blueprint("dashboard", __name__)


@bp.route("/dashboard")
@login_required
def home():
    if current_user.is_instructor:
        # Their own courses, then those they teach as a co-instructor.
        return render_template("dashboard.html",
                               courses=current_user.teaching + co_taught(current_user))
    courses = [e.course for e in current_user.enrollments]
    return render_template("dashboard.html", courses=courses, join=JoinForm())
