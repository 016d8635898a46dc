/*
 * A teacher's watch page of one learner (templates/courses/watch.html; server side:
 * webapp/classroom/). The terminal itself is static/js/terminal.js, read-only; this
 * script asks for control ("Ask to take over" → POST takeover), follows the takeover's
 * state on socket.io /classroom (`takeover {user, state}` to the course's teachers) and,
 * once the learner allows it, reloads the page with ?control=1: the server then renders
 * the terminal writable on the learner's shell. "Give back control" (POST takeover/end)
 * and the learner's own End both bring the page back to read-only.
 *
 * The page provides <div id="watch" data-course data-user data-username data-lab data-me
 * data-control ("1" when writable) data-takeover data-takeover-teacher data-takeover-by
 * (the learner's takeover when rendered)>.
 */
(function () {
  "use strict";

  const root = document.getElementById("watch");
  if (!root || typeof io === "undefined") return;
  const course = root.dataset.course;
  const user = Number(root.dataset.user);
  const name = root.dataset.username;
  const control = root.dataset.control === "1";
  const me = Number(root.dataset.me);
  const status = root.querySelector("[data-role=status]");
  const ask = root.querySelector("[data-action=takeover]");
  const end = root.querySelector("[data-action=end]");

  const post = (url, body) => window.nslab.postJSON(url, body);   // static/js/app.js

  function reload(withControl) {
    const url = new URL(window.location.href);
    if (withControl) url.searchParams.set("control", "1");
    else url.searchParams.delete("control");
    window.location.replace(url.toString());
  }

  // The takeover of this learner as the page knows it: {state, mine, by}.
  function show(t) {
    const state = t && t.state !== "ended" ? t.state : "";
    root.dataset.takeover = state;
    const mine = !!t && t.mine;
    ask.hidden = control;
    ask.disabled = !!state;       // one takeover per learner: mine waiting, or a colleague's
    end.hidden = !control;
    if (state && !mine) status.textContent = (t.by || "Another teacher") +
      (state === "active" ? " is typing in " : " asked to type in ") + name + "'s terminal.";
    else if (state === "asked") status.textContent = "Waiting for " + name + " to allow it…";
    else status.textContent = "";
  }

  ask.addEventListener("click", () => {
    ask.disabled = true;
    post("/courses/" + course + "/learners/" + user + "/takeover")
      .then(() => show({ state: "asked", mine: true }))
      .catch((e) => { ask.disabled = false; status.textContent = e.message; });
  });
  end.addEventListener("click", () => {
    end.disabled = true;
    post("/courses/" + course + "/takeover/end", { user: user })
      .then(() => (control ? reload(false) : show(null)))
      .catch((e) => { end.disabled = false; status.textContent = e.message; });
  });

  const socket = io("/classroom", { transports: ["websocket", "polling"], tryAllTransports: true });
  socket.on("connect", () => socket.emit("join", { course: Number(course) }));
  socket.on("takeover", (m) => {
    if (Number(m.user) !== user) return;
    const mine = Number(m.teacher_id) === me;
    if (mine && m.state === "active" && !control) return reload(true);
    if (control && !(mine && m.state === "active")) return reload(false);
    const wasAsking = root.dataset.takeover === "asked";
    show({ state: m.state, mine: mine, by: m.by });
    if (mine && m.state === "ended" && wasAsking) status.textContent = name + " did not allow it.";
  });
  socket.on("error", (m) => { status.textContent = m.message || "live updates unavailable"; });

  const rendered = root.dataset.takeover;
  show(rendered ? { state: rendered, by: root.dataset.takeoverBy,
                    mine: Number(root.dataset.takeoverTeacher) === me } : null);
  // Mine and active, but rendered read-only (the ?control=1 was lost): take the control.
  if (!control && rendered === "active" && Number(root.dataset.takeoverTeacher) === me) reload(true);
  // A ?control=1 without an active takeover of mine renders read-only: drop it from the URL.
  if (!control && new URL(window.location.href).searchParams.get("control")) {
    history.replaceState(null, "", window.location.pathname);
  }
})();
