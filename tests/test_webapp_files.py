"""Upload and download on the lab page (webapp/files.py) through a real sandboxd: the
roundtrip, who may do what, CSRF, and paths that must not leave /root."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from webapp_helpers import PASSWORD, login, make_course, make_user
from webapp.models import Role

pytestmark = pytest.mark.privileged


def _app(tmp_path, webapp_schema, sandboxd, **config):
    from webapp import create_app
    from webapp.config import TestConfig

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    return create_app(TestConfig(tmp_path, NSLAB_SOCKET=str(sandboxd.socket),
                                 LABS_DIR=str(tmp_path / "labs"), **config))


@pytest.fixture
def files_app(tmp_path, webapp_schema, sandboxd):
    from webapp.extensions import db

    app = _app(tmp_path, webapp_schema, sandboxd)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def school(files_app, client):
    """teach teaches `course` (lab intro) to alice and bob; other teaches another course.
    Every sandbox made for it is destroyed afterwards."""
    for name, role in (("teach", Role.INSTRUCTOR), ("other", Role.INSTRUCTOR),
                       ("alice", Role.LEARNER), ("bob", Role.LEARNER)):
        make_user(files_app, name, role)
    course, _ = make_course(files_app, "teach", labs=("intro", "second"),
                            learners=("alice", "bob"))
    other, _ = make_course(files_app, "other", labs=("intro",))
    before = {b["id"] for b in client.list()}
    yield {"course": course, "other": other}
    for b in client.list():
        if b["id"] not in before:
            client.destroy(b["id"], purge=True)


def signed_in(app, name):
    web = app.test_client()
    assert login(web, name).status_code in (302, 303)
    return web


def base(course, lab="intro"):
    return f"/courses/{course}/labs/{lab}/files"


def put(web, course, data: bytes, name: str, lab="intro", headers=None, **form):
    # Encoded here, in memory: the test client would spool a body over 500 KB to a
    # temporary file that it never closes.
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), name), **form})
    return web.post(base(course, lab), data=body,
                    content_type=f"multipart/form-data; boundary={boundary}",
                    headers={"Accept": "application/json", **(headers or {})})


def sandbox_of(app, name, course, lab="intro"):
    from webapp.extensions import db
    from webapp.models import SandboxAssignment, User

    with app.app_context():
        a = db.session.execute(db.select(SandboxAssignment).filter_by(
            user_id=User.by_name(name).id, course_id=course, lab_id=lab)).scalar_one()
        return a.sandbox_id


# ---------------------------------------------------------------- roundtrip

def test_upload_then_download_roundtrip(files_app, school, client):
    course = school["course"]
    alice = signed_in(files_app, "alice")
    blob = os.urandom(1_300_000) + b"\0end"  # three run calls of base64
    r = put(alice, course, blob, "data.bin")
    assert r.status_code == 201, r.json
    assert r.json == {"path": "/root/data.bin", "size": len(blob)}
    sid = sandbox_of(files_app, "alice", course)
    # Inside, it is root's file (not the host's idea of root), mode 644, the same bytes.
    out = client.run(sid, ["sh", "-c", "stat -c '%u:%g %a %s' /root/data.bin; "
                           "sha256sum /root/data.bin; ls -a /root"])["stdout"]
    assert out.startswith(f"0:0 644 {len(blob)}\n"), out
    assert hashlib.sha256(blob).hexdigest() in out
    assert ".nslab-upload-" not in out, "the temporary file was left behind"

    d = alice.get(base(course), query_string={"path": "/root/data.bin"})
    assert d.status_code == 200
    assert d.data == blob
    assert d.headers["Content-Type"] == "application/octet-stream"
    assert d.headers["Content-Disposition"].startswith("attachment;")
    assert "data.bin" in d.headers["Content-Disposition"]
    # A relative path is taken from /root.
    assert alice.get(base(course), query_string={"path": "data.bin"}).data == blob

    listing = alice.get(base(course) + "/list").json
    assert listing["path"] == "/root" and listing["parent"] is None
    entry = next(e for e in listing["entries"] if e["name"] == "data.bin")
    assert entry["type"] == "file" and entry["size"] == len(blob)


def test_upload_into_a_folder_replace_and_empty_files(files_app, school, client):
    course = school["course"]
    alice = signed_in(files_app, "alice")
    assert put(alice, course, b"v1\n", "notes.txt").status_code == 201
    sid = sandbox_of(files_app, "alice", course)
    client.run(sid, ["mkdir", "-p", "/root/sub dir/deeper"])
    r = put(alice, course, b"inner\n", "inner.txt", dir="/root/sub dir/deeper")
    assert r.status_code == 201 and r.json["path"] == "/root/sub dir/deeper/inner.txt"
    got = alice.get(base(course), query_string={"path": "/root/sub dir/deeper/inner.txt"})
    assert got.data == b"inner\n"
    sub = alice.get(base(course) + "/list", query_string={"path": "/root/sub dir"}).json
    assert sub["parent"] == "/root" and [e["name"] for e in sub["entries"]] == ["deeper"]
    assert sub["entries"][0]["type"] == "dir"

    # An existing file is replaced only when asked.
    r = put(alice, course, b"v2\n", "notes.txt")
    assert r.status_code == 409 and r.json["error"] == "exists", r.json
    assert alice.get(base(course), query_string={"path": "/root/notes.txt"}).data == b"v1\n"
    assert put(alice, course, b"v2\n", "notes.txt", overwrite="1").status_code == 201
    assert alice.get(base(course), query_string={"path": "/root/notes.txt"}).data == b"v2\n"
    # A folder is never replaced; a folder that is not there is said plainly.
    r = put(alice, course, b"x", "sub dir", overwrite="1")
    assert r.status_code == 409 and "folder" in r.json["message"]
    r = put(alice, course, b"x", "a.txt", dir="/root/nope")
    assert r.status_code == 400 and "no folder /root/nope" in r.json["message"]
    # Empty files, and names with spaces and non-ASCII letters.
    assert put(alice, course, b"", "empty").status_code == 201
    assert alice.get(base(course), query_string={"path": "/root/empty"}).data == b""
    assert put(alice, course, b"\xc3\xa9", "résumé v2.txt").status_code == 201
    d = alice.get(base(course), query_string={"path": "/root/résumé v2.txt"})
    assert d.data == b"\xc3\xa9" and "filename*=UTF-8''r%C3%A9sum%C3%A9" in \
        d.headers["Content-Disposition"]


def test_download_errors_are_clear(files_app, school, client):
    course = school["course"]
    alice = signed_in(files_app, "alice")
    assert alice.get(base(course) + "/list").status_code == 200
    sid = sandbox_of(files_app, "alice", course)
    client.run(sid, ["sh", "-c", "mkdir -p /root/d; mkfifo /root/pipe; "
                                 "ln -s /etc/hostname /root/host; truncate -s 17M /root/big"])
    json_ = {"Accept": "application/json"}
    r = alice.get(base(course), query_string={"path": "/root/missing"}, headers=json_)
    assert r.status_code == 404 and "no file /root/missing" in r.json["message"]
    for path in ("/root/d", "/root/pipe"):
        r = alice.get(base(course), query_string={"path": path}, headers=json_)
        assert r.status_code == 400 and "not a regular file" in r.json["message"], r.json
    r = alice.get(base(course), query_string={"path": "/root/big"}, headers=json_)
    assert r.status_code == 413 and "16 MiB" in r.json["message"]
    # A symlink is followed inside the sandbox: its /etc/hostname, not the host's.
    host = alice.get(base(course), query_string={"path": "/root/host"}).data
    assert host.strip() == client.get(sid)["hostname"].encode()
    # A browser that navigates there gets a page, not JSON.
    r = alice.get(base(course), query_string={"path": "/root/missing"})
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
    r = alice.get(base(course) + "/list", query_string={"path": "/root/missing"})
    assert r.status_code == 404 and r.json["message"]


# ---------------------------------------------------------------- who may

def test_authorization_matrix(files_app, school, client):
    course, other_course = school["course"], school["other"]
    alice = signed_in(files_app, "alice")
    assert put(alice, course, b"alice's\n", "mine.txt").status_code == 201
    sid = sandbox_of(files_app, "alice", course)
    q = {"path": "/root/mine.txt", "sandbox": sid}
    lq = {"sandbox": sid}

    def matrix(web, lab="intro", c=course):
        who = id(web)
        return (web.get(base(c, lab), query_string=q).status_code,
                web.get(base(c, lab) + "/list", query_string=lq).status_code,
                put(web, c, b"x", f"from-{who}-{lab}-{c}.txt", lab=lab, sandbox=sid).status_code)

    # Anonymous: sent to sign in, for every route.
    assert matrix(files_app.test_client()) == (302, 302, 302)
    # The learner: everything, in her own sandbox.
    assert matrix(alice) == (200, 200, 201)
    # Another learner of the same course: nothing of hers.
    bob = signed_in(files_app, "bob")
    assert matrix(bob) == (403, 403, 403)
    # The course's instructor: may read (download, list), never write.
    teach = signed_in(files_app, "teach")
    assert matrix(teach) == (200, 200, 403)
    assert teach.get(base(course), query_string=q).data == b"alice's\n"
    # The instructor of another course: not even the course.
    other = signed_in(files_app, "other")
    assert matrix(other) == (403, 403, 403)
    # A sandbox named under another lab or course is not there.
    assert matrix(alice, lab="second") == (404, 404, 404)
    assert matrix(other, c=other_course) == (404, 404, 404)
    # Nothing was written by those who may not.
    out = client.run(sid, ["ls", "/root"])["stdout"].split()
    assert sorted(out) == [f"from-{id(alice)}-intro-{course}.txt", "mine.txt"], out
    # Without `sandbox`, each acts on their own: bob's /root has no mine.txt.
    r = bob.get(base(course), query_string={"path": "/root/mine.txt"},
                headers={"Accept": "application/json"})
    assert r.status_code == 404
    assert sandbox_of(files_app, "bob", course) != sid


def test_csrf_is_required(tmp_path, webapp_schema, sandboxd, client):
    from webapp.extensions import db

    app = _app(tmp_path, webapp_schema, sandboxd, WTF_CSRF_ENABLED=True)
    try:
        make_user(app, "teach", Role.INSTRUCTOR)
        make_user(app, "carol", Role.LEARNER)
        course, _ = make_course(app, "teach", labs=("intro",), learners=("carol",))
        web = app.test_client()
        token = re.search(r'name="csrf-token" content="([^"]+)"', web.get("/login").text).group(1)
        r = web.post("/login", data={"username": "carol", "password": PASSWORD,
                                     "csrf_token": token})
        assert r.status_code == 302
        r = put(web, course, b"x", "x.txt")
        assert r.status_code == 400 and "did not come from this site" in r.json["message"]
        page = web.get(f"/courses/{course}/labs/intro")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        r = put(web, course, b"x", "x.txt", csrf_token=token)
        assert r.status_code == 201, r.json
        r = put(web, course, b"y", "y.txt", headers={"X-CSRFToken": token})
        assert r.status_code == 201, r.json
        for b in client.list():
            if b["labels"].get("user") == "carol":
                client.destroy(b["id"], purge=True)
    finally:
        with app.app_context():
            db.engine.dispose()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "/root/../etc/passwd",
                                  "/root/a\x00b", "/root/a\nb", "/", "/rootx/a", "//etc/x",
                                  "/root/" + "a" * 300, "/root/" + "a/" * 2100])
def test_paths_outside_root_are_refused(files_app, school, client, path):
    course = school["course"]
    alice = signed_in(files_app, "alice")
    json_ = {"Accept": "application/json"}
    r = alice.get(base(course), query_string={"path": path}, headers=json_)
    assert r.status_code == 400 and r.json["message"], r.data[:200]
    r = alice.get(base(course) + "/list", query_string={"path": path}, headers=json_)
    assert r.status_code == 400 and r.json["message"]
    r = put(alice, course, b"x", "x.txt", dir=path)
    assert r.status_code == 400 and r.json["message"]


@pytest.mark.parametrize("name", ["..", ".", "", "a\x01b", "x" * 256])
def test_bad_file_names_are_refused(files_app, school, name):
    alice = signed_in(files_app, "alice")
    r = put(alice, school["course"], b"x", name)
    assert r.status_code == 400 and r.json["message"], r.json


def test_download_needs_a_file_and_upload_a_file(files_app, school):
    alice = signed_in(files_app, "alice")
    course = school["course"]
    r = alice.get(base(course), headers={"Accept": "application/json"})
    assert r.status_code == 400 and "Name a file" in r.json["message"]
    r = alice.post(base(course), data={"dir": "/root"}, headers={"Accept": "application/json"})
    assert r.status_code == 400 and "Choose a file" in r.json["message"]


def test_upload_size_limit(tmp_path, webapp_schema, sandboxd, client):
    from webapp.extensions import db

    app = _app(tmp_path, webapp_schema, sandboxd, UPLOAD_MAX=256 * 1024)
    try:
        make_user(app, "teach", Role.INSTRUCTOR)
        make_user(app, "dora", Role.LEARNER)
        course, _ = make_course(app, "teach", labs=("intro",), learners=("dora",))
        web = signed_in(app, "dora")
        r = put(web, course, b"x" * (256 * 1024 + 1), "big.bin")
        assert r.status_code == 413 and "the most one upload may be" in r.json["message"]
        assert "256 KiB" in r.json["message"], r.json
        # Far past the limit: refused before the body is read (Content-Length).
        r = put(web, course, b"x" * (2 << 20), "bigger.bin")
        assert r.status_code == 413 and "the most one upload may be" in r.json["message"]
        assert put(web, course, b"x" * (256 * 1024), "fits.bin").status_code == 201
        for b in client.list():
            if b["labels"].get("user") == "dora":
                client.destroy(b["id"], purge=True)
    finally:
        with app.app_context():
            db.engine.dispose()


def test_the_lab_page_has_the_controls(files_app, school):
    alice = signed_in(files_app, "alice")
    page = alice.get(f"/courses/{school['course']}/labs/intro").text
    assert "data-files-upload" in page and "data-files-open" in page
    assert 'id="files-dialog"' in page and "js/files.js" in page


def test_an_upload_into_a_full_disk_says_so_and_leaves_nothing(files_app, school, client,
                                                               sandboxd):
    """The learner's /root (their home volume, 16 MiB here) filled with dd from inside:
    the upload answers 507 with a message, and no part of it stays in /root."""
    from sandbox import storage
    from sandbox.config import HostConfig
    from webapp.extensions import db
    from webapp.models import User

    course = school["course"]
    alice = signed_in(files_app, "alice")
    assert put(alice, course, b"first", "first.txt").status_code == 201  # makes the sandbox
    sid = sandbox_of(files_app, "alice", course)
    with files_app.app_context():
        home = f"u{User.by_name('alice').id}-c{course}-intro"
        db.session.remove()
    pool = storage.Storage(HostConfig(name=sandboxd.name, state_dir=sandboxd.state_dir))
    pool.set_quota("homes", home, 16 << 20)
    filled = client.run(sid, ["sh", "-c", "dd if=/dev/urandom of=/root/fill bs=64k "
                              "count=1024 2>/dev/null; echo $?; sync"], timeout=60)
    assert filled["stdout"].split()[0] != "0", "dd wrote 64 MiB into a 16 MiB quota"

    r = put(alice, course, os.urandom(3 << 20), "more.bin")
    assert r.status_code == 507, r.json
    assert r.json == {"error": "insufficient_storage",
                      "message": "Your sandbox's disk is full: /root/more.bin was not "
                                 "written. Delete some files in the terminal and try again."}
    left = client.run(sid, ["ls", "-A", "/root"])["stdout"].split()
    assert "more.bin" not in left and not [n for n in left if n.startswith(".nslab-upload-")]
    # Room made again, the same upload goes through.
    client.run(sid, ["rm", "/root/fill"])
    client.run(sid, ["sync"])
    assert put(alice, course, os.urandom(3 << 20), "more.bin").status_code == 201
