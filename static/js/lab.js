// Exercises on the lab page: Check and hint buttons against webapp/lab_api.py.
//
// POSTs carry the page's CSRF token in X-CSRFToken (from <meta name="csrf-token">), the way
// Flask-WTF expects it. A passed exercise that completes its step unlocks the next step in
// place: the terminal beside the lesson keeps running.
(function () {
  "use strict";
  var steps = document.getElementById("lab-steps");
  if (!steps || steps.dataset.readonly === "true") { return; }
  var lab = steps.dataset.lab;
  var course = Number(steps.dataset.course);
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var STATUS = {passed: "passed", failed: "not yet", not_started: "to do"};

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRFToken": tokenMeta ? tokenMeta.content : ""},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () {
        return {message: "The server answered " + response.status + "."};
      }).then(function (data) { data.httpStatus = response.status; return data; });
    });
  }

  function base(exercise) {
    return "/api/labs/" + encodeURIComponent(lab) + "/exercises/" +
      encodeURIComponent(exercise.dataset.exercise);
  }

  function answerOf(exercise) {
    var chosen = exercise.querySelector('input[type="radio"]:checked');
    if (chosen) { return chosen.value; }
    var text = exercise.querySelector('input[name="answer"]');
    return text ? text.value : null;
  }

  function showResult(exercise, ok, html, text) {
    var box = exercise.querySelector('[data-role="result"]');
    box.classList.remove("is-pass", "is-fail", "is-busy");
    box.classList.add(ok ? "is-pass" : "is-fail");
    if (html) { box.innerHTML = html; } else { box.textContent = text; }
  }

  function setStatus(exercise, status, points, max) {
    exercise.classList.remove("status-passed", "status-failed", "status-not_started");
    exercise.classList.add("status-" + status);
    exercise.querySelector('[data-role="status"]').textContent = STATUS[status];
    if (status === "passed") {
      exercise.querySelector('[data-role="points"]').textContent =
        points + " / " + max + (max === 1 ? " pt" : " pts");
    }
  }

  function pts(n) { return n + (n === 1 ? " pt" : " pts"); }

  // What the next try and hint are worth, as the server says (progress.exercise_state):
  // the learner sees the price before paying it.
  function setCost(exercise, state) {
    if (!state) { return; }
    var cost = exercise.querySelector('[data-role="cost"]');
    if (cost) { cost.textContent = state.cost_text || ""; }
    var button = exercise.querySelector('button[data-action="hint"]');
    if (!button) { return; }
    if (state.hints_used >= state.hints) { button.hidden = true; return; }
    button.textContent = "Show hint " + (state.hints_used + 1) + " of " + state.hints;
    if (state.hint_cost) {
      var price = document.createElement("span");
      price.className = "hint-cost";
      price.textContent = " (\u2212" + pts(state.hint_cost) + ")";
      button.appendChild(price);
    }
  }

  function showWalkthrough(exercise, html) {
    var box = exercise.querySelector('[data-role="walkthrough"]');
    if (!box || !html) { return; }
    box.querySelector('[data-role="walkthrough-body"]').innerHTML = html;  // sanitised by the server
    box.hidden = false;
    var note = exercise.querySelector('[data-role="walkthrough-note"]');
    if (note) { note.remove(); }
  }

  function refreshScore() {
    fetch("/api/labs/" + encodeURIComponent(lab) + "?course=" + course,
          {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        var score = document.getElementById("lab-score");
        if (data && score) { score.textContent = data.points + " / " + data.max_points + " points"; }
      })
      .catch(function () { /* the score catches up on the next page load */ });
  }

  function unlockNext(section) {
    var index = document.querySelector('[data-step-index="' + section.dataset.step + '"]');
    if (index) { index.classList.add("is-done"); }
    var note = document.getElementById("locked-note");
    var next = section.nextElementSibling;
    while (next && !next.classList.contains("step")) { next = next.nextElementSibling; }
    if (note) { note.remove(); }
    if (!next) { return; }
    next.hidden = false;
    next.classList.remove("is-locked");
    var nextIndex = document.querySelector('[data-step-index="' + next.dataset.step + '"]');
    if (nextIndex) { nextIndex.classList.remove("is-locked"); }
    var following = next.nextElementSibling;
    while (following && !following.classList.contains("step")) { following = following.nextElementSibling; }
    var exercises = next.querySelectorAll(".exercise");
    if (following && exercises.length) {
      var lock = document.createElement("div");
      lock.className = "step-locked";
      lock.id = "locked-note";
      var title = document.querySelector('[data-step-index="' + following.dataset.step + '"] a');
      var strong = document.createElement("strong");
      strong.textContent = "Next: " + (title ? title.textContent : "the next step");
      var span = document.createElement("span");
      span.className = "muted";
      span.textContent = " Pass the exercises above to unlock it.";
      lock.appendChild(strong);
      lock.appendChild(span);
      next.after(lock);
    } else if (following && !exercises.length) {
      unlockNext(next);  // a step without exercises never holds the next one back
    }
  }

  function check(exercise, button) {
    var box = exercise.querySelector('[data-role="result"]');
    button.disabled = true;
    box.classList.remove("is-pass", "is-fail");
    box.classList.add("is-busy");
    box.textContent = "Checking your sandbox…";
    var body = {course: course};
    if (exercise.dataset.kind === "quiz") { body.answer = answerOf(exercise) || ""; }
    post(base(exercise) + "/check", body).then(function (data) {
      if (data.httpStatus !== 200) {
        showResult(exercise, false, null, data.message || "The check could not run.");
        return;
      }
      showResult(exercise, data.passed, data.feedback_html, data.feedback);
      if (data.note) {
        var note = document.createElement("p");
        note.className = "exercise-note";
        note.textContent = data.note;
        exercise.querySelector('[data-role="result"]').appendChild(note);
      }
      var state = data.exercise || {};
      setStatus(exercise, state.status || (data.passed ? "passed" : "failed"),
                state.score !== undefined ? state.score : data.points, data.max_points);
      setCost(exercise, state);
      showWalkthrough(exercise, data.walkthrough_html);
      if (data.passed) { refreshScore(); }
      if (data.step_complete) { unlockNext(exercise.closest(".step")); }
    }).catch(function () {
      showResult(exercise, false, null, "The server could not be reached; try again.");
    }).finally(function () { button.disabled = false; });
  }

  function hint(exercise, button) {
    button.disabled = true;
    post(base(exercise) + "/hint", {course: course}).then(function (data) {
      if (data.httpStatus !== 200) {
        showResult(exercise, false, null, data.message || "No hint could be shown.");
        return;
      }
      var item = document.createElement("div");
      item.className = "hint";
      var label = document.createElement("span");
      label.className = "hint-label";
      label.textContent = "Hint " + data.hints_used;
      item.appendChild(label);
      item.insertAdjacentHTML("beforeend", data.hint_html);  // sanitised by the server
      exercise.querySelector('[data-role="hints"]').appendChild(item);
      setCost(exercise, data.exercise);
    }).finally(function () { button.disabled = false; });
  }

  steps.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    var exercise = button.closest(".exercise");
    if (button.dataset.action === "check") { check(exercise, button); }
    if (button.dataset.action === "hint") { hint(exercise, button); }
  });

  steps.addEventListener("submit", function (event) {
    // Enter in a short-answer field checks it.
    event.preventDefault();
    var exercise = event.target.closest(".exercise");
    var button = exercise && exercise.querySelector('button[data-action="check"]');
    if (button && !button.disabled) { check(exercise, button); }
  });
}());
