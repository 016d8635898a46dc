"""How the client reads the daemon's error answers back into `SandboxError` kinds."""

from sandbox.errors import (DaemonUnavailable, InvalidRequest, NotFound, SandboxError,
                            from_json)
from sandbox.protocol import Reason


def test_the_named_kind_and_reason_come_back():
    err = from_json({"error": "invalid_request", "reason": "special_filesystem",
                     "message": "a file of /proc", "field": "path"}, 400)
    assert isinstance(err, InvalidRequest)
    assert (err.reason, err.field, err.message, err.status) == \
        (Reason.SPECIAL_FILESYSTEM, "path", "a file of /proc", 400)


def test_a_reason_this_side_does_not_know_becomes_the_kinds_default():
    err = from_json({"error": "not_found", "reason": "from_a_newer_daemon", "message": "x"}, 404)
    assert isinstance(err, NotFound) and err.reason == Reason.NOT_FOUND


def test_an_answer_naming_no_known_kind_is_read_by_its_status():
    # aiohttp's own 404 for a route that does not match; a proxy's 503 in front of TCP
    assert isinstance(from_json({"error": "http", "message": "Not Found"}, 404), NotFound)
    err = from_json({}, 503)
    assert isinstance(err, DaemonUnavailable) and err.reason == Reason.DAEMON_UNAVAILABLE
    err = from_json({}, 500)
    assert type(err) is SandboxError and err.reason == Reason.INTERNAL and err.message == "HTTP 500"
