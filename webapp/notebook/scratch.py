"""The Notebook tab's scratch notebook: `/root/scratch.ipynb` in the learner's sandbox.

  GET /courses/C/labs/L/notebook   JSON {path, cells: [{cell_type, source}], found}
  PUT /courses/C/labs/L/notebook   JSON {cells: [{cell_type, source}]} (X-CSRFToken)
                                   → {path, size}

It is the signed-in user's own sandbox for the lab (started if it was stopped). Read
through sandboxd's `/files` (resolved inside the sandbox); written inside the sandbox
as its root by `run` (host root could not make a file the sandbox's root owns through
its idmapped mounts): the bytes go base64 into a temporary file beside it, renamed into
place. Only the cells' sources are kept: outputs are the kernel's to make again, and a
notebook read back is never trusted to hold safe output. Download it with the files
route (`files.download`, path /root/scratch.ipynb).
"""

from __future__ import annotations

import base64
import secrets

import nbformat
from flask import Blueprint, abort, jsonify, request
from flask_login import current_user, login_required
from werkzeug.exceptions import HTTPException

from sandbox.errors import NotFound, SandboxError

from .. import sandboxes
from ..courses import course_for_member
from ..extensions import db

bp = Blueprint("notebook", __name__, url_prefix="/courses/<int:course_id>/labs/<lab_id>/notebook")

PATH = "/root/scratch.ipynb"
MAX_BYTES = 512 * 1024   # the notebook's JSON: one `run` call's stdin (the daemon takes 1 MiB)
MAX_CELLS = 200
RUN_TIMEOUT = 30.0
# Every value comes in as an argument, never spliced; the rename makes the write whole.
_WRITE = 'umask 022; base64 -d > "$1" && mv -fT -- "$1" "$2" || { rm -f -- "$1"; exit 1; }'


@bp.errorhandler(HTTPException)
def _error(e: HTTPException):
    return jsonify(error=e.name.lower().replace(" ", "_"), message=e.description), e.code


def _sandbox(course_id: int, lab_id: str) -> str:
    course = course_for_member(course_id)
    if course.lab(lab_id) is None:
        abort(404, description="This course has no such lab.")
    try:
        return sandboxes.sandbox_for(current_user, course_id, lab_id)
    except SandboxError as e:
        db.session.rollback()
        abort(e.status if 400 <= e.status < 600 else 502, description=e.message)


@bp.get("")
@login_required
def load(course_id: int, lab_id: str):
    sid = _sandbox(course_id, lab_id)
    try:
        data = sandboxes.client().read_file(sid, PATH, limit=MAX_BYTES)
    except NotFound:
        return jsonify(path=PATH, cells=[], found=False)
    except SandboxError as e:
        abort(e.status if 400 <= e.status < 600 else 502, description=e.message)
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except (UnicodeDecodeError, ValueError, nbformat.ValidationError) as e:
        # The learner's own file, changed in the terminal: say so, and leave it alone.
        abort(422, description=f"{PATH} is not a notebook this page can open ({e}); "
              "fix or remove it in the terminal, or save here to replace it.")
    cells = [{"cell_type": c.cell_type, "source": c.source} for c in nb.cells
             if c.cell_type in ("code", "markdown")]
    return jsonify(path=PATH, cells=cells, found=True)


@bp.put("")
@login_required
def save(course_id: int, lab_id: str):
    body = request.get_json(silent=True)
    cells = body.get("cells") if isinstance(body, dict) else None
    if not isinstance(cells, list) or len(cells) > MAX_CELLS or not all(
            isinstance(c, dict) and c.get("cell_type") in ("code", "markdown")
            and isinstance(c.get("source"), str) for c in cells):
        abort(400, description=f"Send {{cells: [{{cell_type: code|markdown, source}}]}}, at "
              f"most {MAX_CELLS} cells.")
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c["source"]) if c["cell_type"] == "code"
               else nbformat.v4.new_markdown_cell(c["source"]) for c in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"},
                  "language_info": {"name": "python"}})
    data = nbformat.writes(nb).encode("utf-8")
    if len(data) > MAX_BYTES:
        abort(413, description=f"The notebook is {len(data) // 1024} KiB; at most "
              f"{MAX_BYTES // 1024} KiB can be saved here.")
    sid = _sandbox(course_id, lab_id)
    tmp = f"/root/.scratch-{secrets.token_hex(6)}.ipynb"
    try:
        r = sandboxes.client().run(sid, ["sh", "-c", _WRITE, "sh", tmp, PATH],
                                   stdin=base64.b64encode(data).decode(), timeout=RUN_TIMEOUT)
    except SandboxError as e:
        abort(e.status if 400 <= e.status < 600 else 502, description=e.message)
    if r["exit_code"] != 0:
        said = (r.get("stderr") or "").strip().splitlines()
        abort(502, description=f"{PATH} could not be written: "
              f"{said[-1] if said else 'exit code ' + str(r['exit_code'])}")
    sandboxes.touch_sandbox(sid)
    return jsonify(path=PATH, size=len(data))
