"""The labs the web app serves: a lab's content from LABS_DIR, and the values drawn for one
learner (LearnerLab).

Progress (grading, hints) and sandboxes (a learner's sandbox made with the lab's limits
and setup) both build on this module; it imports neither.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from nslab.labkit import catalog
from nslab.labkit.model import Lab
from nslab.labkit.params import draw_params

from .extensions import db
from .models import Course, LearnerLab, User


def load(lab_id: str) -> Lab | None:
    """The lab from the labs folder (None: no such folder, or a folder without lab.yaml —
    a plain lesson, see webapp/lesson.py)."""
    folder_lab = catalog.lab(current_app.config["LABS_DIR"], lab_id)
    if folder_lab is None or not (folder_lab.path / "lab.yaml").is_file():
        return None
    return folder_lab


def params_for(user: User, course: Course, lab: Lab) -> dict:
    """This learner's drawn values for the lab, drawn and stored on first use."""
    row = db.session.execute(select(LearnerLab).filter_by(
        user_id=user.id, course_id=course.id, lab_id=lab.id)).scalar_one_or_none()
    if row is None:
        row = LearnerLab(user_id=user.id, course_id=course.id, lab_id=lab.id,
                         params=draw_params(lab.params))
        db.session.add(row)
        db.session.flush()
    missing = {k: v for k, v in lab.params.items() if k not in row.params}
    if missing:  # the author added a param after this learner started
        row.params = {**row.params, **draw_params(missing)}
    return dict(row.params)
