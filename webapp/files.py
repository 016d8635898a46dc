"""Upload and download between the learner's computer and /root in their lab sandbox.

  GET  /courses/C/labs/L/files?path=/root/x[&sandbox=ID]       the file, as an attachment
  GET  /courses/C/labs/L/files/list?path=/root[&sandbox=ID]    JSON {path, parent, entries}
  POST /courses/C/labs/L/files  (multipart: file, dir=/root, overwrite=1?; CSRF token)
                                                               JSON {path, size}

Without `sandbox` they act on the signed-in user's own sandbox for the lab (started if it
was stopped: that is activity). With `sandbox`, the course's instructor may read a
learner's files (download, list) but never write them; nobody else may do either.

Paths are confined to /root (normalised; `..`, NUL and control characters refused).
Reading goes through sandboxd's /files and /dir, which resolve the path inside the
sandbox. Writing happens inside the sandbox, as its root (host root could not create a
file owned by the sandbox's root through its idmapped mounts): the bytes go base64 in
the stdin of `run` calls of at most CHUNK bytes each (the daemon takes bodies up to
1 MiB) into a temporary file beside the target, which is then renamed into place, so a
half-written upload never shows under its name.
"""

from __future__ import annotations

import base64
import io
import posixpath
import re
import secrets

from flask import (Blueprint, abort, current_app, jsonify, make_response, render_template,
                   request, send_file)
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from sandbox.errors import Conflict, NotFound, SandboxError, TooLarge

from . import sandboxes
from .courses import course_for_member
from .extensions import db
from .models import SandboxAssignment

bp = Blueprint("files", __name__, url_prefix="/courses/<int:course_id>/labs/<lab_id>/files")

HOME = "/root"
CHUNK = 512 * 1024          # raw bytes per run call: 683 KiB of base64, under 1 MiB
RUN_TIMEOUT = 30.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# sh scripts run inside the sandbox; every value comes in as an argument, never spliced.
# LC_ALL=C: the only word of why a write failed is the tools' message (strerror), read
# below to tell a full disk from other failures; it must not come in the sandbox's language.
_BEGIN = r'''
export LC_ALL=C
[ -d "$1" ] || exit 3
[ -d "$2" ] && exit 4
[ -e "$2" ] && [ "$4" != 1 ] && exit 5
umask 022
base64 -d > "$3"
'''
_APPEND = 'export LC_ALL=C; base64 -d >> "$1"'
_FINISH = 'export LC_ALL=C; mv -fT -- "$1" "$2"'
_ABANDON = 'rm -f -- "$1"'


class InsufficientStorage(HTTPException):
    """507: Werkzeug has no class for it, so abort(507) would be a LookupError (a 500)."""

    code = 507
    description = "Your sandbox's disk is full."


# ---------------------------------------------------------------- paths

def clean_path(raw: str | None, *, what: str = "path") -> str:
    """`raw` as an absolute, normalised path under /root (a relative one is taken from
    /root); 400 with a clear message otherwise."""
    if raw is None or not raw.strip():
        return HOME
    if len(raw) > 4096:
        abort(400, description=f"The {what} is too long.")
    if _CONTROL.search(raw):
        abort(400, description=f"The {what} may not hold control characters or NUL bytes.")
    parts = raw.split("/")
    if raw.startswith("/"):
        parts = [p for p in parts if p not in ("", ".")]
        if not parts or parts[0] != "root":
            abort(400, description=f"Only files under {HOME} can be moved here, not {raw}.")
        parts = parts[1:]
    parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        abort(400, description=f"'..' is not allowed in the {what}; give a path under {HOME}.")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        abort(400, description=f"A name in the {what} is longer than 255 bytes.")
    return posixpath.join(HOME, *parts)


def _file_name(raw: str | None) -> str:
    # Browsers send a base name; old ones sent a whole Windows path.
    name = re.split(r"[/\\]", raw or "")[-1].strip()
    if not name or name in (".", ".."):
        abort(400, description="The uploaded file has no usable name.")
    if _CONTROL.search(name):
        abort(400, description="The file name may not hold control characters.")
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        abort(400, description="The file name is longer than 255 bytes.")
    return name


def _size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- whose sandbox

def _sandbox(course_id: int, lab_id: str, mode: str) -> str:
    """The sandbox to act on: `sandbox` from the request if the user may (mode "read" or
    "write"), else the user's own for this lab (made or started: activity)."""
    course = course_for_member(course_id)
    if course.lab(lab_id) is None:
        abort(404, description="This course has no such lab.")
    wanted = request.values.get("sandbox")
    if wanted:
        assignment = db.session.execute(db.select(SandboxAssignment).filter_by(
            sandbox_id=wanted)).scalar_one_or_none()
        if assignment is None or assignment.course_id != course.id or assignment.lab_id != lab_id:
            abort(404, description="There is no such sandbox in this lab.")
        if not sandboxes.may_use(current_user, wanted, mode):
            abort(403, description="You may not read this sandbox's files." if mode == "read"
                  else "Only the learner can put files in their sandbox.")
        if assignment.user_id == current_user.id:
            sandboxes.touch_sandbox(wanted)
        return wanted
    try:
        return sandboxes.sandbox_for(current_user, course_id, lab_id)
    except SandboxError as e:
        db.session.rollback()
        _fail(e)


def _fail(e: SandboxError, path: str | None = None):
    if isinstance(e, TooLarge):
        abort(413, description=f"{path or 'The file'} is larger than "
              f"{_size(current_app.config['DOWNLOAD_MAX'])}, the most a download may be. "
              "Compress or split it in the terminal first.")
    if isinstance(e, Conflict):
        abort(409, description=f"The sandbox is not running ({e.message}). The learner's "
              "next visit to the lab starts it.")
    abort(e.status if 400 <= e.status < 600 else 502, description=e.message)


# ---------------------------------------------------------------- routes

@bp.url_value_preprocessor
def _upload_limit(endpoint, values):
    # Runs before every before_request hook, CSRFProtect's too, which is the first to read
    # the body: an upload may be bigger than the app's MAX_CONTENT_LENGTH.
    if endpoint == "files.upload":
        request.max_content_length = current_app.config["UPLOAD_MAX"] + 64 * 1024


@bp.errorhandler(HTTPException)
def _error(e: HTTPException):
    if isinstance(e, CSRFError):
        e.description = ("This form has expired or did not come from this site. Reload the "
                         "page and try again.")
    if e.code == 413 and request.endpoint == "files.upload":
        e.description = (f"The file is larger than {_size(current_app.config['UPLOAD_MAX'])}, "
                         "the most one upload may be.")
    if request.endpoint == "files.download" and \
            request.accept_mimetypes.best != "application/json":
        return render_template("error.html", error=e), e.code
    return jsonify(error=e.name.lower().replace(" ", "_"), message=e.description), e.code


@bp.get("")
@login_required
def download(course_id: int, lab_id: str):
    path = clean_path(request.args.get("path"))
    if path == HOME:
        abort(400, description="Name a file under /root to download.")
    sid = _sandbox(course_id, lab_id, "read")
    try:
        data = sandboxes.client().read_file(sid, path, limit=current_app.config["DOWNLOAD_MAX"])
    except NotFound:
        abort(404, description=f"There is no file {path} in the sandbox.")
    except SandboxError as e:
        _fail(e, path)
    response = send_file(io.BytesIO(data), mimetype="application/octet-stream",
                         as_attachment=True, download_name=posixpath.basename(path))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/list")
@login_required
def listing(course_id: int, lab_id: str):
    path = clean_path(request.args.get("path"))
    sid = _sandbox(course_id, lab_id, "read")
    try:
        entries = sandboxes.client().list_dir(sid, path)
    except NotFound:
        abort(404, description=f"There is no folder {path} in the sandbox.")
    except SandboxError as e:
        _fail(e, path)
    return jsonify(path=path, parent=posixpath.dirname(path) if path != HOME else None,
                   entries=entries, truncated=len(entries) >= 1000)


@bp.post("")
@login_required
def upload(course_id: int, lab_id: str):
    upload = request.files.get("file")
    if upload is None:
        abort(400, description="Choose a file to upload.")
    folder = clean_path(request.form.get("dir"), what="folder")
    path = posixpath.join(folder, _file_name(upload.filename))
    overwrite = request.form.get("overwrite") in ("1", "true", "on")
    try:
        data = upload.read(current_app.config["UPLOAD_MAX"] + 1)
    finally:
        upload.close()  # a big one lies in a temporary file
    if len(data) > current_app.config["UPLOAD_MAX"]:
        abort(413)
    sid = _sandbox(course_id, lab_id, "write")
    _write(sid, folder, path, data, overwrite)
    sandboxes.touch_sandbox(sid)
    return jsonify(path=path, size=len(data)), 201


def _write(sid: str, folder: str, path: str, data: bytes, overwrite: bool) -> None:
    c = sandboxes.client()
    tmp = posixpath.join(folder, f".nslab-upload-{secrets.token_hex(6)}")

    def run(script: str, *args: str, stdin: bytes = b"") -> dict:
        try:
            return c.run(sid, ["sh", "-c", script, "sh", *args], timeout=RUN_TIMEOUT,
                         stdin=base64.b64encode(stdin).decode() if stdin else "")
        except SandboxError as e:
            _fail(e)

    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    r = run(_BEGIN, folder, path, tmp, "1" if overwrite else "0", stdin=chunks[0])
    if r["exit_code"] == 3:
        abort(400, description=f"There is no folder {folder} in the sandbox.")
    if r["exit_code"] == 4:
        abort(409, description=f"{path} is a folder; give the file another name.")
    if r["exit_code"] == 5:  # the page asks, then sends overwrite=1
        abort(make_response(jsonify(error="exists", path=path, message=f"{path} exists "
                                    "already; replace it?"), 409))
    ok = r["exit_code"] == 0
    for chunk in chunks[1:]:
        if not ok:
            break
        r = run(_APPEND, tmp, stdin=chunk)
        ok = r["exit_code"] == 0
    if ok:
        r = run(_FINISH, tmp, path)
        ok = r["exit_code"] == 0
    if not ok:
        run(_ABANDON, tmp)
        # What the shell's command printed last (base64, mv): the only word there is of
        # why a write inside the sandbox failed; it is the command's output, not an error
        # of the daemon's.
        said = (r.get("stderr") or "").strip().splitlines()
        last_line = said[-1] if said else f"exit code {r['exit_code']}"
        if "quota" in last_line.lower() or "no space" in last_line.lower():
            raise InsufficientStorage(f"Your sandbox's disk is full: {path} was not written. "
                                      "Delete some files in the terminal and try again.")
        abort(502, description=f"{path} could not be written: {last_line}")
