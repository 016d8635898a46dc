"""The labs the web app serves: a lab's content from LABS_DIR, the values drawn for one
learner (LearnerLab), and the host fact a lab's text may depend on (the cgroup version).

Progress (grading, hints) and sandboxes (a learner's sandbox made with the lab's limits
and setup) both build on this module; it imports neither.
"""

from __future__ import annotations

import threading

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sandbox.errors import SandboxError

from nslab.labkit import catalog
from nslab.labkit.model import Lab
from nslab.labkit.params import draw_params

from .extensions import db
from .models import Course, LearnerLab, User

HOSTS = "nslab.cgroup_versions"  # app.extensions[HOSTS]: the app's CgroupVersions


class CgroupVersions:
    """The cgroup version of each daemon's host, asked once per daemon (by where it listens):
    a host changes it only by rebooting, which restarts the web app too."""

    def __init__(self):
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def of(self, client) -> int | None:
        """1 or 2; None while the daemon cannot be asked (asked again next time)."""
        where = client.where()
        with self._lock:
            if where in self._known:
                return self._known[where]
        try:
            version = client.info().get("cgroup_version")
        except SandboxError:
            return None
        if version not in (1, 2):
            return None
        with self._lock:
            self._known[where] = version
        return version


def cgroup_version(client) -> int | None:
    """The cgroup version of the host of `client`'s daemon (cached on the app)."""
    # Made on first use by whichever request comes first, once per app (setdefault settles
    # a race between two first requests; later calls build nothing).
    versions = current_app.extensions.get(HOSTS) or \
        current_app.extensions.setdefault(HOSTS, CgroupVersions())
    return versions.of(client)


def load(lab_id: str) -> Lab | None:
    """The lab from the labs folder (None: no such folder, or a folder without lab.yaml —
    a plain lesson, see webapp/lesson.py)."""
    folder_lab = catalog.lab(current_app.config["LABS_DIR"], lab_id)
    if folder_lab is None or not (folder_lab.path / "lab.yaml").is_file():
        return None
    return folder_lab


def params_for(user: User, course: Course, lab: Lab) -> dict:
    """This learner's drawn values for the lab, drawn and stored (committed) on first use.

    Parallel first opens of one lab by one learner (several tabs, a page and its terminal)
    race to draw: the first commit wins and the others read its values. A lost race rolls
    the session back, so call this before changing anything else in the session."""
    query = select(LearnerLab).filter_by(user_id=user.id, course_id=course.id, lab_id=lab.id)
    row = db.session.execute(query).scalar_one_or_none()
    if row is None:
        db.session.add(LearnerLab(user_id=user.id, course_id=course.id, lab_id=lab.id,
                                  params=draw_params(lab.params)))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
        row = db.session.execute(query).scalar_one()
    missing = {k: v for k, v in lab.params.items() if k not in row.params}
    if missing:  # the author added a param after this learner started
        row.params = {**row.params, **draw_params(missing)}
    return dict(row.params)
