// Page behaviour shared by every page: theme toggle, flash messages, copy buttons, and on
// the lab page the resizable split and the lesson's "Run in terminal" buttons.
//
// Contract with the terminal script (static/js/terminal.js):
//  - a "Run in terminal" click dispatches `nslab:run` on #terminal with
//    detail {command: "..."} (no trailing newline); the terminal decides how to send it.
//  - a theme change dispatches `nslab:theme` on document with detail {theme: "light"|"dark"};
//    window.nslab.theme() gives the theme in effect now.
//  - window.nslab.postJSON(url, body): a JSON POST with the page's CSRF token.
//  - a split resize dispatches `nslab:resize` on #terminal (fit the terminal then).
(function () {
  "use strict";
  var root = document.documentElement;
  var dark = window.matchMedia("(prefers-color-scheme: dark)");

  function theme() {
    return root.dataset.theme || (dark.matches ? "dark" : "light");
  }

  function store(key, value) {
    try { localStorage.setItem(key, value); } catch (e) { /* private mode: not kept */ }
  }

  function load(key) {
    try { return localStorage.getItem(key); } catch (e) { return null; }
  }

  function announceTheme() {
    document.dispatchEvent(new CustomEvent("nslab:theme", {detail: {theme: theme()}}));
  }

  // A JSON POST with the page's CSRF token; resolves with the answer's JSON, rejects with
  // an Error carrying the server's message (or its status) when it is not a success.
  function postJSON(url, body) {
    var token = document.querySelector('meta[name="csrf-token"]');
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRFToken": token ? token.content : ""},
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) throw new Error(data.message || "The server answered " + r.status + ".");
        return data;
      });
    });
  }

  window.nslab = {theme: theme, postJSON: postJSON};

  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var next = theme() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      store("nslab-theme", next);
      announceTheme();
    });
  }
  dark.addEventListener("change", function () {
    if (!root.dataset.theme) announceTheme();
  });

  document.addEventListener("click", function (event) {
    var close = event.target.closest(".flash-close");
    if (close) close.parentElement.remove();

    var copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      navigator.clipboard.writeText(copy.dataset.copy).then(function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      });
    }

    var run = event.target.closest(".run-in-terminal");
    var terminal = document.getElementById("terminal");
    if (run && terminal) {
      terminal.dispatchEvent(new CustomEvent("nslab:run", {detail: {command: run.dataset.command}}));
      run.classList.add("sent");
      setTimeout(function () { run.classList.remove("sent"); }, 800);
    }
  });

  // ------------------------------------------------------------ resizable split
  var split = document.getElementById("lab-split");
  var divider = document.getElementById("lab-divider");
  if (!split || !divider) return;
  var MIN = 20, MAX = 80;

  function setWidth(percent, save) {
    percent = Math.max(MIN, Math.min(MAX, percent));
    split.style.setProperty("--lesson-width", percent + "%");
    divider.setAttribute("aria-valuenow", String(Math.round(percent)));
    if (save) store("nslab-split", String(percent));
    var terminal = document.getElementById("terminal");
    if (terminal) terminal.dispatchEvent(new CustomEvent("nslab:resize"));
  }

  var saved = parseFloat(load("nslab-split"));
  if (!isNaN(saved)) setWidth(saved, false);

  divider.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    divider.setPointerCapture(event.pointerId);
    split.classList.add("resizing");
    var box = split.getBoundingClientRect();
    function move(e) { setWidth((e.clientX - box.left) / box.width * 100, false); }
    function up(e) {
      divider.removeEventListener("pointermove", move);
      divider.removeEventListener("pointerup", up);
      split.classList.remove("resizing");
      setWidth((e.clientX - box.left) / box.width * 100, true);
    }
    divider.addEventListener("pointermove", move);
    divider.addEventListener("pointerup", up);
  });

  divider.addEventListener("keydown", function (event) {
    var now = parseFloat(divider.getAttribute("aria-valuenow")) || 45;
    var step = event.shiftKey ? 10 : 2;
    if (event.key === "ArrowLeft") setWidth(now - step, true);
    else if (event.key === "ArrowRight") setWidth(now + step, true);
    else if (event.key === "Home") setWidth(MIN, true);
    else if (event.key === "End") setWidth(MAX, true);
    else return;
    event.preventDefault();
  });
})();

// Forms that destroy something ask first: <form data-confirm="question">.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
