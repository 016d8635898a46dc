/*
 * A learner's side of the live classroom (templates/courses/_classroom_learner.html, on the
 * lab page and the course page; server side and events: webapp/classroom/__init__.py).
 *
 * socket.io /classroom: `join {course}` on every (re)connect → `hello {announcements,
 * hand, takeover}`; then `announcement` (a banner with the latest, dismissable, and a toast),
 * `hand {hand}` (the "Ask for help" button becomes "Hand raised — cancel") and `takeover
 * {state: asked|active|ended, by}`: asked opens a consent prompt (Allow / Deny); while
 * active a banner says who types in the terminal, with End.
 *
 * A teacher's text goes into the page as text (textContent), never as markup. Dismissed
 * announcements are remembered in localStorage, so a reload does not bring them back.
 */
(function () {
  "use strict";

  const root = document.getElementById("classroom");
  if (!root || typeof io === "undefined") return;
  const course = Number(root.dataset.course);
  const lab = root.dataset.lab || null;
  const base = "/courses/" + course;
  const TOAST_MS = 8000;
  const KEEP_DISMISSED = 50;     // ids remembered per course
  const storageKey = "nslab.dismissed:" + course;

  const $ = (scope, role) => scope.querySelector("[data-role=" + role + "]");
  const banner = $(root, "banner");
  const bannerLabel = $(root, "banner-label");
  const bannerText = $(root, "banner-text");
  const bannerMeta = $(root, "banner-meta");
  const takeoverBar = $(root, "takeover");
  const takeoverText = $(root, "takeover-text");
  const helpButton = root.querySelector("[data-action=help]");
  const helpStatus = $(root, "help-status");
  const helpDialog = document.getElementById("help-dialog");
  const helpForm = $(helpDialog, "help-form");
  const helpFormStatus = $(helpDialog, "status");
  const consent = document.getElementById("takeover-dialog");
  const toasts = document.getElementById("toasts");

  let hand = null;
  let shown = null;              // the announcement in the banner
  let takeover = null;           // {state, by}

  const post = (url, body) => window.nslab.postJSON(url, body);   // static/js/app.js

  function dismissed() {
    try {
      const ids = JSON.parse(localStorage.getItem(storageKey));
      return Array.isArray(ids) ? ids : [];
    } catch (e) {
      return [];
    }
  }

  function dismiss(id) {
    const ids = dismissed().filter((x) => x !== id);
    ids.push(id);
    try {
      localStorage.setItem(storageKey, JSON.stringify(ids.slice(-KEEP_DISMISSED)));
    } catch (e) {
      // storage full or disabled: it comes back on the next reload, nothing worse
    }
  }

  function who(by) {
    if (!by) return "Your instructor";
    return typeof by === "object" ? by.username || "Your instructor" : String(by);
  }

  // ---------------------------------------------------------------- announcements

  function showBanner(a) {
    shown = a;
    banner.dataset.announcement = a.id;
    bannerLabel.textContent = a.personal ? "To you" : "Announcement";
    bannerText.textContent = a.text;
    bannerMeta.textContent = a.author ? "\u2014 " + who(a.author) : "";
    banner.classList.toggle("classroom-personal", !!a.personal);
    banner.hidden = false;
  }

  function toast(a) {
    const box = document.createElement("div");
    box.className = "toast" + (a.personal ? " classroom-personal" : "");
    box.setAttribute("role", "status");
    const head = document.createElement("strong");
    head.textContent = (a.personal ? "To you" : "Announcement") + (a.author ? " from " + who(a.author) : "");
    const text = document.createElement("p");
    text.textContent = a.text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "flash-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.addEventListener("click", () => box.remove());
    box.append(close, head, text);
    toasts.appendChild(box);
    setTimeout(() => box.remove(), TOAST_MS);
  }

  root.querySelector("[data-action=dismiss]").addEventListener("click", () => {
    if (shown) dismiss(shown.id);
    shown = null;
    banner.hidden = true;
  });

  // ---------------------------------------------------------------- ask for help

  function showHand(h) {
    hand = h || null;
    helpButton.textContent = hand ? "Hand raised \u2014 cancel" : "Ask for help";
    helpButton.classList.toggle("button-primary", !!hand);
    helpButton.setAttribute("aria-haspopup", hand ? "false" : "dialog");
    helpButton.dataset.state = hand ? "raised" : "";
    if (!hand) return;
    helpStatus.textContent = hand.claimed_by ? "Your instructor is on the way." : "";
  }

  helpButton.addEventListener("click", () => {
    if (hand) {
      helpButton.disabled = true;
      post(base + "/help/cancel")
        .then(() => { showHand(null); helpStatus.textContent = ""; })
        .catch((e) => { helpStatus.textContent = e.message; })
        .finally(() => { helpButton.disabled = false; });
      return;
    }
    helpForm.reset();
    helpFormStatus.textContent = "";
    helpDialog.showModal();
  });

  helpForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const message = helpForm.elements.message.value.trim();
    const body = {};
    if (lab) body.lab = lab;
    if (message) body.message = message;
    post(base + "/help", body)
      .then((data) => {
        helpDialog.close();
        // The `hand` event follows; until it does, the answer says the hand is up.
        showHand((data && (data.help || data.hand)) || hand || { message: message });
        helpStatus.textContent = "Your hand is raised.";
      })
      .catch((e) => { helpFormStatus.textContent = e.message; });
  });
  helpDialog.querySelector("[data-action=cancel]").addEventListener("click", () => helpDialog.close());

  // ---------------------------------------------------------------- takeover

  function showTakeover(t) {
    takeover = t && t.state !== "ended" ? t : null;
    const state = takeover ? takeover.state : "ended";
    root.dataset.takeover = state;
    if (state === "asked") {
      $(consent, "text").textContent = who(takeover.by) + " asks to type in your terminal.";
      if (!consent.open) consent.showModal();
    } else if (consent.open) {
      consent.close();
    }
    takeoverBar.hidden = state !== "active";
    if (state === "active") takeoverText.textContent = who(takeover.by) + " is typing in your terminal.";
  }

  function answer(allow) {
    if (consent.open) consent.close();
    post(base + "/takeover/answer", { allow: allow })
      .catch((e) => { helpStatus.textContent = e.message; });
  }
  consent.querySelector("[data-action=allow]").addEventListener("click", () => answer(true));
  consent.querySelector("[data-action=deny]").addEventListener("click", () => answer(false));
  // Escape closes the prompt: a refusal, not a question left open.
  consent.addEventListener("cancel", (ev) => {
    ev.preventDefault();
    answer(false);
  });
  root.querySelector("[data-action=takeover-end]").addEventListener("click", () => {
    post(base + "/takeover/end")
      .then(() => showTakeover(null))
      .catch((e) => { helpStatus.textContent = e.message; });
  });

  // ---------------------------------------------------------------- socket

  const socket = io("/classroom", { transports: ["websocket", "polling"], tryAllTransports: true });
  socket.on("connect", () => socket.emit("join", { course: course }));
  socket.on("hello", (m) => {
    const gone = new Set(dismissed());
    const latest = ((m && m.announcements) || []).filter((a) => !gone.has(a.id))
      .sort((a, b) => (a.id > b.id ? -1 : 1))[0];
    if (latest) showBanner(latest);
    showHand(m && m.hand);
    showTakeover(m && m.takeover);
  });
  socket.on("announcement", (a) => {
    showBanner(a);
    toast(a);
  });
  socket.on("hand", (m) => showHand(m && m.hand));
  socket.on("takeover", (m) => showTakeover(m));
  socket.on("error", (m) => {
    // A page of a course the user is no longer in: nothing to show, and no error to raise.
    if (m && m.reason === "forbidden") root.hidden = true;
  });
})();
