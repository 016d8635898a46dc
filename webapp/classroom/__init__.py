"""The instructor's live classroom (`/courses/<id>/live`) and what learners' pages hear of it.

A *teacher* of a course is its instructor or one of its co-instructors (`CourseStaff`,
`Course.is_taught_by`); every route and event below that is not a learner's own is for the
course's teachers only (anonymous → 401/refused at connect, a learner, a learner of another
course, a teacher of another course → 403/`error` reason "forbidden"; an unknown course 404).

Modules: `roster` (the learners × exercises matrix and each learner's state, who looks stuck),
`usage` (one sampler per watched course: CPU and memory of its running sandboxes for the
sparklines), `namespace` (socket.io `/classroom`), `actions` (the HTTP routes that change
something), `takeover` (consented write access to a learner's terminal), `stats` (per-exercise
statistics page, plain SVG charts). `push` is the one way events reach pages (from any thread).

HTTP (JSON in and out; POSTs carry `X-CSRFToken`; errors are `{"error": reason, "message"}`
with 400 bad input, 401 signed out, 403, 404, 409 conflict, 429 too many hands or
announcements (10 a minute per user, Retry-After), 503 sandboxd unreachable; nothing
changes on an error):
  GET  /courses/<id>/live                      the live page (teachers)
  GET  /courses/<id>/live/state                the snapshot (below) as JSON (teachers)
  GET  /courses/<id>/live/watch/<uid>/<lab>    one learner's terminal, read-only (writable
                                                 with ?control=1 while their take-over by
                                                 this teacher is active) (teachers)
  GET  /courses/<id>/stats                     per-exercise statistics page (teachers)
  GET  /courses/<id>/stats.json                the same numbers as JSON (teachers)
  POST /courses/<id>/help            {lab?, message?}   learner raises a hand (one open per
                                                 learner and course: again = new message) → 201
  POST /courses/<id>/help/cancel                 learner lowers their hand
  POST /courses/<id>/help/<rid>/claim            teacher claims an open request (409 if closed;
                                                 a colleague may claim it from another:
                                                 → {help, taken_from: username | null})
  POST /courses/<id>/help/<rid>/close            teacher closes it
  POST /courses/<id>/announcements   {text, to?: user id}  teacher; text 1..500 chars; `to` a
                                                 learner of the course → 201 {announcement}
  POST /courses/<id>/learners/<uid>/reset    {lab}       destroy that learner's sandbox
  POST /courses/<id>/learners/<uid>/extend   {minutes, lab?}  1..240: the idle stop of
                                                 their running sandboxes waits longer
  POST /courses/<id>/sandboxes/start-all     {lab?}      every learner's sandbox of the lab
                                                 (default: every lab), in the background,
                                                 one at a time; progress as `bulk` events
  POST /courses/<id>/sandboxes/stop-all                  stop every running sandbox
  POST /courses/<id>/learners/<uid>/takeover             teacher asks to type in the
                                                 learner's terminal (the learner is asked)
  POST /courses/<id>/takeover/answer  {allow: bool}      the learner answers
  POST /courses/<id>/takeover/end     {user?}            either side ends it (a teacher
                                                 names the learner); so does either side
                                                 signing out, and an ask unanswered for 60 s.
                                                 The teacher's writable terminals on that
                                                 learner's sandboxes are cut at once: their
                                                 page gets /terminal `error {reason:
                                                 "takeover_ended", exec_id}`
  POST /courses/<id>/staff           {username}  the course's owner adds a co-instructor
                                                 (an instructor account, not a learner of it)
  POST /courses/<id>/staff/<uid>/remove          the owner removes one (both also take a
                                                 plain form of the course page: redirect
                                                 back with a flash; webapp/staff.py)

Snapshot (`roster.snapshot(course)`, also the `snapshot` event):
  {course, time (epoch seconds), columns: [{lab, exercise, title, points}],
   learners: [{id, username, cells: [{attempts, passed, points, hints} | null],
               lab, step, step_title, on_step_s, failed_in_row, hints, active, idle_s,
               sandbox: running|stopped|none, sandbox_id, hand: {id, message, at, claimed_by}
               | null, stuck, finished (every lab passed), points}],
   help: [open requests, oldest first: {id, user, username, lab, message, at, claimed_by}],
   class_median_on_step_s}
  `stuck` is a number, higher first: the page sorts by it ("who needs help"). `at` is ISO
  8601 (UTC), `claimed_by` {id, username} | null; what each field means: `roster`.

socket.io `/classroom` (signed-in pages only; anonymous refused at connect):
  from a page:  join {course}      a teacher's page → room `staff:<course>`, then `snapshot`;
                                   a learner's page → rooms `course:<course>` and
                                   `learner:<course>:<uid>`, then `hello` {announcements
                                   (latest 5 of the last day to them, oldest first),
                                   hand, takeover}; a page follows one course at a time:
                                   a join first leaves the rooms of the last one
                leave {}           the page follows no course
  to teachers:  snapshot, learner {row} (one learner's row changed: a check, a hint, a hand,
                its sandbox), help {help: [...]} (the queue), usage {time, sandboxes:
                {user id: {cpu, cpu_max, memory, memory_max, state: running|stopped|
                unavailable|none}}} every USAGE_INTERVAL s (and a fresh `snapshot` every
                SNAPSHOT_INTERVAL s: times and the order move on; `usage` module),
                bulk {action, done, total, failed}, takeover {user, state, by, teacher_id}
  to learners:  announcement {id, text, author, at, personal}, hand {hand | null},
                takeover {state: asked|active|ended, by}
  error {message, reason: invalid|not_found|forbidden}: to the page that asked (and
                forbidden to a teacher's page whose user no longer teaches the course:
                it leaves the room).

`push` (module functions, callable from any thread and outside a request; no-ops in an app
without the namespace): `to_staff(app, course_id, event, data)`, `to_course(app, course_id,
event, data)` (every learner page of the course), `to_learner(app, course_id, user_id,
event, data)`, `learner_changed(app, course_id, user_id)` (recomputes that learner's row and
sends `learner` to the teachers), `queue_changed(app, course_id)` (sends `help`).
"""

from __future__ import annotations

from functools import partial

from flask import Flask
from flask_socketio import SocketIO

from ..sandboxes.service import CLIENT
from . import takeover
from .namespace import NAMESPACE, ClassroomNamespace, staff_room
from .push import CLASSROOM
from .usage import SNAPSHOT_INTERVAL, USAGE_INTERVAL, Usage


def init_app(app: Flask, socketio: SocketIO) -> ClassroomNamespace:
    """The `/classroom` namespace of `app` and its usage samplers (after `sandboxes.init_app`:
    they read through its daemon client). `app.extensions[CLASSROOM]`."""
    ns = ClassroomNamespace(NAMESPACE, takeover_state=partial(takeover.state_for, app))
    ns.usage = Usage(app, app.extensions[CLIENT], emit=lambda course_id, event, data:
                     ns.send(staff_room(course_id), event, data),
                     interval=float(app.config.get("CLASSROOM_USAGE_INTERVAL", USAGE_INTERVAL)),
                     snapshot_every=float(app.config.get("CLASSROOM_SNAPSHOT_INTERVAL",
                                                         SNAPSHOT_INTERVAL)),
                     recheck=ns.recheck, start=socketio.start_background_task)
    socketio.on_namespace(ns)

    ns.cut_at_sign_out(app)
    app.extensions[CLASSROOM] = ns
    return ns
