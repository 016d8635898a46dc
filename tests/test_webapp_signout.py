"""Signing out cuts the user's open terminals (issue 10).

Keystrokes skip the per-event sign-in check (webapp/terminal/namespace.py, `_BARE`), so a
terminal opened before a sign-out, from the learner's own browser or from a copy of their
session cookie, would go on typing into the learner's shell until its socket closed. The
sign-out must disconnect every socket of that user on this process at once; the shell goes
on (as when a page closes) and is reattached after signing in again; another learner's
terminal does not notice."""

from __future__ import annotations

import time

import pytest
from socketio import packet

from test_webapp_sandboxes import NS, Browser, lab_app  # noqa: F401 - lab_app: a fixture
from webapp_helpers import logout, make_course, make_user
from webapp.extensions import socketio
from webapp.models import Role, User

pytestmark = pytest.mark.privileged
CUT_WITHIN = 2.0  # seconds from the sign-out's answer to every socket of the user closed


def copied(app, cookie: str) -> Browser:
    """Another browser, with a copy of a session cookie (it never signed in itself)."""
    thief = object.__new__(Browser)
    thief.web = app.test_client()
    thief.web.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie)
    thief.sio = socketio.test_client(app, namespace=NS, flask_test_client=thief.web)
    thief.out, thief.events = bytearray(), []
    return thief


def raw_input(browser: Browser, exec_id: str, text: str) -> None:
    """An `input` event straight into the server, as a client that ignores being
    disconnected would send it (the test client itself refuses once it is told)."""
    pkt = packet.Packet(packet.EVENT, data=["input", exec_id, text], namespace=NS)
    browser.sio.socketio.server._handle_eio_message(browser.sio.eio_sid, pkt.encode())


def wait_for(pred, what: str, timeout: float) -> None:
    # Not Browser.wait: it acks output, which a disconnected test client refuses to send.
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def exists(client, sandbox_id: str, path: str) -> bool:
    return client.run(sandbox_id, ["test", "-e", path])["exit_code"] == 0


def test_sign_out_cuts_every_terminal_of_the_user_and_no_other(lab_app, client):
    make_user(lab_app, "teach", Role.INSTRUCTOR)
    make_user(lab_app, "amy", Role.LEARNER)
    make_user(lab_app, "bob", Role.LEARNER)
    course, _ = make_course(lab_app, "teach", labs=("intro",), learners=("amy", "bob"))
    ns = lab_app.extensions["nslab.terminal"]
    made = []
    try:
        amy = Browser(lab_app, "amy")
        opened = amy.open(course=course, lab="intro")
        assert opened["name"] == "opened", opened
        eid, sbid = opened["exec_id"], opened["sandbox_id"]
        made.append(sbid)
        amy.type(eid, 0, "echo $((6*7))amy\r")
        amy.wait(lambda: b"42amy" in amy.out, "amy's echo")

        # A copy of amy's cookie attaches to her shell too; its keys reach it.
        cookie = amy.web.get_cookie(lab_app.config["SESSION_COOKIE_NAME"]).value
        thief = copied(lab_app, cookie)
        assert thief.open(sandbox_id=sbid, exec_id=eid)["name"] == "opened"
        raw_input(thief, eid, "echo before > /root/before\r")
        wait_for(lambda: exists(client, sbid, "/root/before"), "the copy's keys", 10)

        bob = Browser(lab_app, "bob")
        bobs = bob.open(course=course, lab="intro")
        assert bobs["name"] == "opened", bobs
        made.append(bobs["sandbox_id"])
        bob.type(bobs["exec_id"], 0, "echo $((6*7))bob\r")
        bob.wait(lambda: b"42bob" in bob.out, "bob's echo")

        # amy signs out in her browser.
        assert logout(amy.web).status_code in (302, 303)
        t0 = time.monotonic()
        # The copy and amy's own page go on sending keys as if nothing happened.
        raw_input(thief, eid, "echo stolen > /root/stolen\r")
        raw_input(amy, eid, "echo stale > /root/stale\r")
        amy_key = amy_id(lab_app)
        wait_for(lambda: not amy.sio.is_connected(NS) and not thief.sio.is_connected(NS)
                 and amy_key not in ns.users.values(), "amy's sockets to close", CUT_WITHIN)
        cut = time.monotonic() - t0

        # bob's terminal is untouched: still connected, still echoing.
        assert bob.sio.is_connected(NS)
        t1 = time.monotonic()
        bob.type(bobs["exec_id"], 1, "echo $((7*7))bob\r")
        bob.wait(lambda: b"49bob" in bob.out, "bob's echo after amy signed out", timeout=5)
        bob_echo = time.monotonic() - t1

        # amy's shell goes on; the keys sent after the sign-out never reached it (a key
        # that reaches the shell runs in milliseconds: a second is plenty to see it).
        time.sleep(1.0)
        assert not exists(client, sbid, "/root/stolen")
        assert not exists(client, sbid, "/root/stale")
        assert client.exec_info(eid)["running"]

        # Signed in again, amy reattaches to the same shell and types into it.
        again = Browser(lab_app, "amy")
        back = again.open(sandbox_id=sbid, exec_id=eid)
        assert back["name"] == "opened" and back["reattached"], back
        again.type(eid, 0, "echo $((8*8))amy\r")
        again.wait(lambda: b"64amy" in again.out, "amy's echo after signing in again")
        # The copied cookie is dead: a page with it opens nothing.
        assert copied(lab_app, cookie).open(sandbox_id=sbid, exec_id=eid)["name"] == "error"
        print(f"\nsign-out cut amy's 2 sockets in {cut * 1000:.1f} ms; bob's echo after it "
              f"{bob_echo * 1000:.0f} ms")
    finally:
        for sbid in made:
            client.destroy(sbid, purge=True)


def amy_id(app) -> int:
    with app.app_context():
        return User.by_name("amy").id


def test_a_page_that_connects_while_its_user_signs_out_is_refused():
    """The race: the page's connect loads its user (the old session version) just before
    the sign-out commits and cuts that user's pages, then registers. It must not slip
    through as a live page of a signed-out user; another user's page connects."""
    from flask import Flask, request
    from flask_socketio import SocketIO

    from webapp.terminal import register_terminal

    app = Flask(__name__)
    sio = SocketIO(app, async_mode="threading")

    def get_user():
        name = request.args.get("user")
        if name == "amy":
            ns.disconnect_user("amy")  # her sign-out, between the user's load and the record
        return name

    ns = register_terminal(sio, get_client=lambda: None, authorize=lambda *a: True,
                           get_user=get_user, user_key=lambda user: user)
    amy = sio.test_client(app, namespace=NS, query_string="user=amy")
    bob = sio.test_client(app, namespace=NS, query_string="user=bob")
    assert not amy.is_connected(NS)
    assert bob.is_connected(NS) and list(ns.users.values()) == ["bob"]
