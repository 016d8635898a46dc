"""The throwaway web instance `nslab bench classroom` measures: its database written
here, with the web app's own code (nslab.bench may not import it; nslab.cli may)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from flask_migrate import upgrade

from webapp import create_app, services
from webapp.extensions import db
from webapp.models import SandboxAssignment, SandboxState

COURSE_TITLE = "Benchmark class"
# Throwaway accounts with a throwaway password: a cheap hash keeps 50 sign-ins from
# costing the server seconds of scrypt that have nothing to do with the live view.
FAST_HASH = "pbkdf2:sha256:1000"


def seed_instance(*, instance: Path, labs: Path, lab: str, instructor: str,
                  learners: list[str], password: str, sandboxes: dict[str, str]) -> int:
    """Migrate the SQLite database in `instance`, make the accounts and the course with
    `lab`, each learner enrolled and `sandboxes[name]` recorded as their running sandbox
    for the lab; the course id."""
    app = create_app({"INSTANCE_PATH": str(instance), "LABS_DIR": str(labs),
                      "SQLALCHEMY_DATABASE_URI": None, "SECRET_KEY": None,
                      "PASSWORD_HASH_METHOD": FAST_HASH, "IDLE_SWEEPER": False})
    with app.app_context():
        try:
            upgrade()
            teacher = services.create_user(instructor, password, "instructor")
            course = services.create_course(COURSE_TITLE, teacher)
            services.add_lab(course, lab)
            now = datetime.now(timezone.utc)
            for name in learners:
                user = services.create_user(name, password, "learner")
                services.enroll(user, course)
                db.session.flush()
                if name in sandboxes:
                    db.session.add(SandboxAssignment(
                        user_id=user.id, course_id=course.id, lab_id=lab,
                        sandbox_id=sandboxes[name], state=SandboxState.RUNNING,
                        last_active=now))
            db.session.commit()
            return course.id
        finally:
            db.session.remove()
            db.engine.dispose()  # no file of the database stays open (it changes owner)
