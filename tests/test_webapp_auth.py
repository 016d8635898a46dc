"""Accounts: sign up with a join code, sign in and out, CSRF, the login rate limit, cookies,
the secret key, configuration."""

from __future__ import annotations

import stat
from datetime import timedelta

from sqlalchemy import func, select, update
from webapp_helpers import PASSWORD, csrf_token, enrolled, login, logout, make_course, make_user

from webapp import create_app
from webapp.config import Config, TestConfig
from webapp.extensions import db
from webapp.models import LoginFailure, Role, User


def test_signup_with_join_code_logs_in_and_enrolls(app, web):
    make_user(app, "ann", Role.INSTRUCTOR)
    course_id, code = make_course(app, "ann", "Containers from scratch")
    r = web.post("/signup", data={"join_code": code.lower().replace("-", " "),
                                  "username": "Bob", "password": PASSWORD,
                                  "confirm": PASSWORD})
    assert r.status_code == 302 and r.location == f"/courses/{course_id}"
    assert enrolled(app, "bob", course_id)  # names are case-insensitive, stored lower-case
    page = web.get(r.location)
    assert page.status_code == 200
    assert "You joined Containers from scratch" in page.text
    with app.app_context():
        assert User.by_name("bob").role == Role.LEARNER


def test_signup_refuses_bad_input_and_creates_nobody(app, web):
    make_user(app, "ann", Role.INSTRUCTOR)
    make_user(app, "taken")
    _, code = make_course(app, "ann")
    cases = [({"join_code": "ZZZZ-0000"}, "No course has this join code"),
             ({"username": "taken"}, "The username &#39;taken&#39; is taken"),
             ({"username": "../x"}, "A username is 2-32 characters"),
             ({"password": "short", "confirm": "short"}, "A password needs at least 8"),
             ({"confirm": "something else"}, "The passwords differ")]
    for change, message in cases:
        data = {"join_code": code, "username": "newbie", "password": PASSWORD,
                "confirm": PASSWORD, **change}
        r = web.post("/signup", data=data)
        assert r.status_code == 200, change
        assert message in r.text, change
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 2


def test_login_logout(app, web):
    make_user(app, "bob")
    r = login(web, "bob")
    assert r.status_code == 302 and r.location == "/dashboard"
    assert web.get("/dashboard").status_code == 200
    assert web.get("/").location == "/dashboard"  # signed in: the landing page forwards
    r = logout(web)
    assert r.status_code == 302
    r = web.get("/dashboard")
    assert r.status_code == 302 and r.location.startswith("/login?next=")


def test_logout_needs_post(app, web):
    make_user(app, "bob")
    login(web, "bob")
    assert web.get("/logout").status_code == 405
    assert web.get("/dashboard").status_code == 200


def test_bad_password_and_unknown_user(app, web):
    make_user(app, "bob")
    for name, password in (("bob", "wrong password"), ("nobody", PASSWORD)):
        r = login(web, name, password)
        assert r.status_code == 200
        assert "Wrong username or password." in r.text
        assert web.get("/dashboard").status_code == 302


def test_login_redirects_only_to_this_site(app, web):
    make_user(app, "bob")
    for target, expected in (("/courses/new", "/courses/new"), ("//evil.example/x", "/dashboard"),
                             ("https://evil.example/", "/dashboard"), ("/\\evil", "/dashboard")):
        logout(web)
        r = web.post("/login", data={"username": "bob", "password": PASSWORD, "next": target})
        assert r.location == expected, target


def test_login_page_keeps_next(web):
    r = web.get("/courses/1")
    assert r.status_code == 302 and r.location == "/login?next=/courses/1"
    page = web.get(r.location)
    assert 'value="/courses/1"' in page.text


def test_rate_limit_after_five_failures(app, web):
    make_user(app, "bob")
    for _ in range(5):
        assert "Wrong username or password." in login(web, "bob", "wrong password").text
    r = login(web, "bob")  # even the right password: the limit is checked first
    assert r.status_code == 429
    assert ("Too many failed sign-ins for &#39;bob&#39; from browsers it has not signed in "
            "with before. Try again in 5 minutes.") in r.text
    assert 290 <= int(r.headers["Retry-After"]) <= 300
    assert web.get("/dashboard").status_code == 302

    # The key is the username (from browsers without its device token), on any address;
    # another name may still try.
    other = app.test_client()
    assert login(other, "bob", environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 429
    make_user(app, "carol")
    assert login(app.test_client(), "carol").status_code == 302

    # Once the failures are older than the window, bob may sign in from here again, and a
    # success clears his record.
    with app.app_context():
        db.session.execute(update(LoginFailure).values(at=LoginFailure.at - timedelta(minutes=6)))
        db.session.commit()
    r = login(web, "bob")
    assert r.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count(LoginFailure.id))) == 0


def test_rate_limit_counts_unknown_names_too(app, web):
    for _ in range(5):
        login(web, "ghost", "whatever1")
    assert login(web, "ghost", "whatever1").status_code == 429


def test_csrf_token_required_on_forms(tmp_path, webapp_schema):
    import shutil

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, WTF_CSRF_ENABLED=True))
    make_user(app, "bob")
    make_user(app, "ann", Role.INSTRUCTOR)
    web = app.test_client()

    r = login(web, "bob")
    assert r.status_code == 400
    assert "This form has expired or did not come from this site" in r.text

    page = web.get("/login")
    token = csrf_token(page.text)
    assert f'<meta name="csrf-token" content="{token}">' in page.text
    r = web.post("/login", data={"username": "bob", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302

    # Signed in, every form still needs the token: sign out, join a course.
    assert web.post("/logout").status_code == 400
    assert web.post("/courses/join", data={"join_code": "ABCD-1234"}).status_code == 400
    assert web.get("/dashboard").status_code == 200  # still signed in
    token = csrf_token(web.get("/dashboard").text)
    assert web.post("/logout", data={"csrf_token": token}).status_code == 302
    assert web.get("/dashboard").status_code == 302
    with app.app_context():
        db.engine.dispose()


def test_session_cookie_flags(app, web, tmp_path):
    make_user(app, "bob")
    cookies = login(web, "bob").headers.getlist("Set-Cookie")
    assert [c.split("=")[0] for c in cookies] == ["nslab_device", "nslab_session"]
    for cookie in cookies:
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    secure = create_app(TestConfig(tmp_path, SESSION_COOKIE_SECURE=True))
    for cookie in login(secure.test_client(), "bob").headers.getlist("Set-Cookie"):
        assert "Secure" in cookie and "HttpOnly" in cookie


def test_secret_key_generated_once_0600_and_reused(tmp_path):
    instance = tmp_path / "instance"
    first = create_app(TestConfig(instance))
    key_file = instance / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    key = key_file.read_text().strip()
    assert len(key) == 64 and first.config["SECRET_KEY"] == key
    second = create_app(TestConfig(instance))
    assert second.config["SECRET_KEY"] == key
    assert key_file.read_text().strip() == key
    # A key given in the environment wins; no file is made for it.
    other = tmp_path / "other"
    app = create_app(TestConfig(other, SECRET_KEY="from-the-environment"))
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert not (other / "secret_key").exists()


def test_config_reads_the_environment_when_made(tmp_path):
    config = Config({"NSLAB_INSTANCE": str(tmp_path), "DATABASE_URL": "postgres://u@h/db",
                     "NSLAB_SOCKET": "/tmp/x.sock", "NSLAB_COOKIE_SECURE": "1",
                     "SECRET_KEY": "k"})
    assert config.INSTANCE_PATH == str(tmp_path)
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql://u@h/db"
    assert config.NSLAB_SOCKET == "/tmp/x.sock"
    assert config.SESSION_COOKIE_SECURE is True and config.SECRET_KEY == "k"
    app = create_app(Config({"NSLAB_INSTANCE": str(tmp_path)}))
    assert app.instance_path == str(tmp_path)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/nslab.db"
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_sqlite_runs_in_wal_mode(app):
    from sqlalchemy import text

    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA foreign_keys")).scalar() == 1


# ---------------------------------------------------------------- issue 10: revocation, lockout

def test_logout_revokes_a_copied_session_cookie(app, web):
    from webapp.extensions import socketio
    from webapp.models import SandboxAssignment, SandboxState

    make_user(app, "bob")
    make_user(app, "ann", Role.INSTRUCTOR)
    course_id, _ = make_course(app, "ann", learners=("bob",))
    with app.app_context():  # bob's sandbox, as far as the web app knows (no daemon here)
        db.session.add(SandboxAssignment(user_id=User.by_name("bob").id, course_id=course_id,
                                         lab_id="intro", sandbox_id="sb-bob",
                                         state=SandboxState.RUNNING))
        db.session.commit()

    def terminal_error(sio) -> str:
        sio.get_received("/terminal")
        sio.emit("open", {"sandbox_id": "sb-bob", "tag": 1}, namespace="/terminal")
        errors = [e["args"][0] for e in sio.get_received("/terminal") if e["name"] == "error"]
        assert errors, "open gave no error"
        return errors[-1]["message"]

    assert login(web, "bob").status_code == 302
    saved = web.get_cookie("nslab_session").value
    thief = app.test_client()
    thief.set_cookie("nslab_session", saved)
    assert thief.get("/dashboard").status_code == 200  # the copy works while bob is in
    sio = socketio.test_client(app, namespace="/terminal", flask_test_client=thief)
    assert "may not" not in terminal_error(sio)  # authorized: it got as far as the daemon

    assert logout(web).status_code == 302
    r = thief.get("/dashboard")
    assert r.status_code == 302 and r.location.startswith("/login?next=")
    r = thief.get("/api/labs/intro")
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    # The socket that connected with the copy, and a new one, are nobody now: refused
    # (at connect, or at `open`) before anything reaches a sandbox.
    later = socketio.test_client(app, namespace="/terminal", flask_test_client=thief)
    for s in (sio, later):
        if s.is_connected("/terminal"):
            assert "may not" in terminal_error(s)
            s.disconnect(namespace="/terminal")
    # Signing in again gives a new cookie that works; the old copy stays dead.
    assert login(web, "bob").status_code == 302
    assert web.get("/dashboard").status_code == 200
    assert thief.get("/dashboard").status_code == 302


def test_logout_in_one_browser_signs_out_the_others(app):
    make_user(app, "bob")
    lab_pc, laptop = app.test_client(), app.test_client()
    login(lab_pc, "bob")
    login(laptop, "bob")
    logout(lab_pc)
    assert laptop.get("/dashboard").status_code == 302


def test_a_stranger_cannot_lock_a_learner_out(app):
    """Twenty wrong guesses for amy from her classroom's address: the guesser is throttled
    after five, amy's own browser (it signed in before) still signs in."""
    make_user(app, "amy")
    amy = app.test_client()
    assert login(amy, "amy").status_code == 302
    assert amy.get_cookie("nslab_device") is not None
    logout(amy)

    stranger = app.test_client()  # the same address: 127.0.0.1
    answers = [login(stranger, "amy", "guess-guess").status_code for _ in range(20)]
    assert answers == [200] * 5 + [429] * 15
    with app.app_context():
        assert db.session.scalar(select(func.count(LoginFailure.id))) == 5  # refused: not tried

    r = login(amy, "amy")
    assert r.status_code == 302 and r.location == "/dashboard"
    # A browser of hers that never signed in is a stranger too, from any address.
    assert login(app.test_client(), "amy").status_code == 429
    assert login(app.test_client(), "amy",
                 environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 429


def test_a_known_browser_is_throttled_by_its_own_failures(app):
    make_user(app, "amy")
    amy = app.test_client()
    login(amy, "amy")
    logout(amy)
    for _ in range(5):
        assert login(amy, "amy", "wrong password").status_code == 200
    r = login(amy, "amy")
    assert r.status_code == 429 and 290 <= int(r.headers["Retry-After"]) <= 300
    # Its failures hold back nobody else: another browser may still sign in as amy.
    assert login(app.test_client(), "amy").status_code == 302
    # Once strangers have used up amy's tries, a device token for someone else is no token
    # for amy, and a forged one is no token at all.
    stranger = app.test_client()
    for _ in range(5):
        login(stranger, "amy", "wrong password")
    make_user(app, "ben")
    ben = app.test_client()
    login(ben, "ben")
    logout(ben)
    assert login(ben, "amy").status_code == 429
    forged = app.test_client()
    forged.set_cookie("nslab_device", amy.get_cookie("nslab_device").value[:-2] + "xx")
    assert login(forged, "amy").status_code == 429


def test_guessing_many_names_from_one_address_is_throttled(tmp_path, webapp_schema):
    import shutil

    shutil.copy(webapp_schema, tmp_path / "nslab.db")
    app = create_app(TestConfig(tmp_path, LOGIN_ADDRESS_MAX_FAILURES=8))
    make_user(app, "amy")
    known = app.test_client()
    login(known, "amy")
    logout(known)
    sprayer = app.test_client()
    codes = [login(sprayer, f"user{i}", "password1").status_code for i in range(10)]
    assert codes == [200] * 8 + [429] * 2
    # Untrusted clients of this address wait; amy's browser and other addresses do not.
    assert login(app.test_client(), "amy").status_code == 429
    assert login(known, "amy").status_code == 302
    assert login(app.test_client(), "amy",
                 environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 302
    with app.app_context():
        db.engine.dispose()


def test_join_codes_cannot_be_brute_forced(app):
    make_user(app, "ann", Role.INSTRUCTOR)
    course_id, code = make_course(app, "ann")
    guesser = app.test_client()
    limit = app.config["JOIN_ADDRESS_MAX_FAILURES"]
    for i in range(limit):
        r = guesser.post("/signup", data={"join_code": f"ZZZZ-{i:04d}", "username": "eve",
                                          "password": PASSWORD, "confirm": PASSWORD})
        assert r.status_code == 200 and "No course has this join code" in r.text
    r = guesser.post("/signup", data={"join_code": code, "username": "eve",
                                      "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 429 and 590 <= int(r.headers["Retry-After"]) <= 600
    with app.app_context():
        assert User.by_name("eve") is None
    # Another address may still sign up.
    r = app.test_client().post("/signup", data={"join_code": code, "username": "eve",
                                                "password": PASSWORD, "confirm": PASSWORD},
                               environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert r.status_code == 302 and enrolled(app, "eve", course_id)

    # A signed-in learner guessing other courses' codes: bounded per user, on any address.
    other, other_code = make_course(app, "ann", "Elsewhere")
    web = app.test_client()
    login(web, "eve", environ_base={"REMOTE_ADDR": "10.9.9.9"})
    per_user = app.config["JOIN_MAX_FAILURES"]
    for i in range(per_user):
        r = web.post("/courses/join", data={"join_code": f"ZZZZ-{i:04d}"},
                     environ_base={"REMOTE_ADDR": f"10.9.{i}.1"})
        assert r.status_code == 302
    r = web.post("/courses/join", data={"join_code": other_code},
                 environ_base={"REMOTE_ADDR": "10.9.99.1"})
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert not enrolled(app, "eve", other)
