/*
 * The live classroom a teacher keeps open in class (templates/courses/live.html; server
 * side and the events' shapes: webapp/classroom/__init__.py).
 *
 * socket.io /classroom: `join {course}` on every (re)connect, then `snapshot` (everything),
 * `learner` (one learner's row changed), `help` (the queue), `usage` (CPU and memory of
 * the running sandboxes, every few seconds), `bulk` (start-all / stop-all progress),
 * `takeover` {user, state}. Three views of the same rows: "Who needs help" (sorted by
 * `stuck`, raised hands first), the help queue, and the learners × exercises matrix whose
 * cells (data-user, data-lab, data-exercise) change in place, highlighted a moment.
 *
 * Every name and message a learner typed goes into the page as text (textContent), never
 * as markup. Actions are POSTs with the page's CSRF token; their answer or error shows in
 * the notice line.
 */
(function () {
  "use strict";

  const root = document.getElementById("live");
  if (!root || typeof io === "undefined") return;
  const course = Number(root.dataset.course);
  const me = Number(root.dataset.me);
  const base = "/courses/" + course;
  const SVG = "http://www.w3.org/2000/svg";
  const HISTORY = 60;            // usage samples kept per learner for the sparklines
  const W = 80, H = 22;          // sparkline viewBox
  const FLASH_MS = 1600;         // how long a changed cell stays highlighted

  const $ = (role) => root.querySelector("[data-role=" + role + "]");
  const summary = $("summary");
  const notice = $("notice");
  const dot = $("connection");
  const stuckBody = $("stuck");
  const stuckEmpty = $("stuck-empty");
  const queue = $("queue");
  const queueEmpty = $("queue-empty");
  const queueCount = $("queue-count");
  const matrixHead = $("matrix-head");
  const matrixBody = $("matrix");
  const bulkBox = $("bulk");
  const bulkBar = $("bulk-bar");
  const bulkText = $("bulk-text");
  const bulkLab = $("bulk-lab");
  const dialog = document.getElementById("announce-one");

  let columns = [];
  let median = 0;
  const learners = new Map();    // user id -> row (as the server sent it) + receivedAt
  const stuckRows = new Map();   // user id -> {tr, cells...}
  const matrixRows = new Map();  // user id -> {tr, tds: [], total}
  const usage = new Map();       // user id -> {cpu: [], memory: [], cpuMax, memoryMax, state}
  const takeovers = new Map();   // user id -> state
  const helpItems = new Map();   // request id -> {li, ...}

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, parent, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }

  const post = (url, body) => window.nslab.postJSON(url, body);   // static/js/app.js

  function say(text) {
    notice.textContent = text;
  }

  function act(url, body, done) {
    return post(url, body).then((data) => { if (done) say(done); return data; })
      .catch((e) => { say(e.message); throw e; });
  }

  function clock(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0") + ":" + String(s).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }

  function when(at) {
    // `at` as epoch seconds or an ISO date: how long ago, in words short enough for a list.
    const t = typeof at === "number" ? at * 1000 : Date.parse(at);
    if (isNaN(t)) return "";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return "just now";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
  }

  function points(p) {
    return Number.isInteger(p) ? String(p) : Number(p || 0).toFixed(1);
  }

  function onStep(row) {
    // The server's figure, plus the time since it came: the clock ticks between updates.
    if (row.on_step_s === null || row.on_step_s === undefined) return null;
    return row.on_step_s + (performance.now() - row.receivedAt) / 1000;
  }

  function watchUrl(row) {
    return base + "/live/watch/" + row.id + "/" + encodeURIComponent(row.lab);
  }

  // ---------------------------------------------------------------- who needs help

  function spark(parent, label) {
    const box = el("span", "live-spark", parent);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("aria-hidden", "true");
    const limit = document.createElementNS(SVG, "line");
    limit.setAttribute("class", "live-spark-limit");
    limit.setAttribute("x1", "0"); limit.setAttribute("x2", String(W));
    limit.setAttribute("y1", "1"); limit.setAttribute("y2", "1");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "live-spark-line");
    svg.appendChild(limit);
    svg.appendChild(line);
    box.appendChild(svg);
    const text = el("span", "live-spark-text small", box, "–");
    text.setAttribute("aria-label", label);
    return { box, line, text };
  }

  function drawSpark(s, values, max, running) {
    if (!running) {
      s.line.setAttribute("points", "");   // no sandbox running: no line, not a flat zero
      s.box.classList.remove("live-spark-high");
      return;
    }
    // Against the limit (the top line); without one, against the highest value seen.
    const top = Math.max(max || 0, ...values.map((v) => v || 0), 1e-9);
    const step = W / (HISTORY - 1);
    const start = HISTORY - values.length;
    s.line.setAttribute("points", values.map((v, i) =>
      ((start + i) * step).toFixed(1) + "," + (H - 1 - ((v || 0) / top) * (H - 2)).toFixed(1)).join(" "));
    s.box.classList.toggle("live-spark-high", !!max && values.length > 0 &&
      (values[values.length - 1] || 0) >= 0.9 * max);
  }

  function stuckRow(id) {
    let r = stuckRows.get(id);
    if (r) return r;
    const tr = el("tr");
    tr.dataset.user = id;
    const who = el("th", "live-who", tr);
    who.scope = "row";
    const name = el("span", "live-name", who);
    const hand = el("span", "pill pill-warn live-hand", who, "hand raised");
    const takeover = el("span", "pill pill-score live-takeover", who);
    const where = el("td", "live-where", tr);
    const time = el("td", "live-time", tr);
    const failed = el("td", "live-failed", tr);
    const hints = el("td", "live-hints", tr);
    const activity = el("td", "live-activity", tr);
    const cpu = spark(el("td", "live-usage", tr), "CPU");
    const mem = spark(el("td", "live-usage", tr), "memory");
    const actions = el("div", "live-actions-box", el("td", "live-actions", tr));
    const watch = el("a", "button button-small", actions, "Watch");
    watch.target = "_blank";
    watch.rel = "noopener";
    watch.dataset.action = "watch";
    watch.addEventListener("click", (ev) => {
      if (watch.getAttribute("aria-disabled") === "true") ev.preventDefault();
    });
    const reset = el("button", "button button-ghost button-small", actions, "Reset");
    reset.type = "button";
    reset.dataset.action = "reset";
    const extend = el("button", "button button-ghost button-small", actions, "+15 min");
    extend.type = "button";
    extend.dataset.action = "extend";
    extend.title = "Let the sandbox stay idle 15 minutes longer before it is stopped";
    const announce = el("button", "button button-ghost button-small", actions, "Message");
    announce.type = "button";
    announce.dataset.action = "announce";
    r = { tr, name, hand, takeover, where, time, failed, hints, activity, cpu, mem, watch,
          reset, extend, announce };
    reset.addEventListener("click", () => {
      const row = learners.get(id);
      if (!row || !row.lab) return;
      if (!window.confirm("Reset " + row.username + "'s sandbox of " + row.lab +
                          "? Its processes and files outside /root are lost.")) return;
      act(base + "/learners/" + id + "/reset", { lab: row.lab },
          row.username + "'s sandbox of " + row.lab + " was reset.").catch(() => {});
    });
    extend.addEventListener("click", () => {
      const row = learners.get(id);
      act(base + "/learners/" + id + "/extend", { minutes: 15 },
          (row ? row.username : "The learner") + "'s sandbox may idle 15 minutes longer.")
        .catch(() => {});
    });
    announce.addEventListener("click", () => openAnnounce(id));
    stuckRows.set(id, r);
    return r;
  }

  function paintStuck(row) {
    const r = stuckRow(row.id);
    r.tr.dataset.stuck = String(row.stuck);
    r.name.textContent = row.username;
    r.hand.hidden = !row.hand;
    if (row.hand && row.hand.message) r.hand.title = row.hand.message;
    const t = takeovers.get(row.id);
    r.takeover.hidden = !t || t.state === "ended";
    r.takeover.textContent = t && t.state === "active"
      ? (t.mine ? "you type" : (t.by || "a teacher") + " types") : "takeover asked";
    r.where.textContent = "";
    if (row.lab) {
      el("span", "live-lab", r.where, row.lab);
      el("span", "muted small live-step", r.where, row.step_title || row.step || "done");
    }
    r.failed.textContent = String(row.failed_in_row || 0);
    r.failed.classList.toggle("live-bad", (row.failed_in_row || 0) >= 3);
    r.hints.textContent = String(row.hints || 0);
    const state = (usage.get(row.id) || {}).state || row.sandbox;
    r.activity.textContent = "";
    el("span", "pill " + (row.active ? "pill-active" : ""), r.activity, row.active ? "active" :
       row.idle_s === null || row.idle_s === undefined ? "idle" : "idle " + clock(row.idle_s));
    el("span", "muted small live-sandbox", r.activity, "sandbox " + (state || "none"));
    r.watch.href = row.lab ? watchUrl(row) : "#";
    r.watch.setAttribute("aria-disabled", String(!row.lab || !row.sandbox_id));
    r.watch.title = row.sandbox_id ? "Watch " + row.username + "'s terminal (read-only), in a new tab"
      : row.username + " has no sandbox yet";
    r.reset.disabled = !row.sandbox_id;
    r.extend.disabled = state !== "running";
    tickRow(row);
  }

  function tickRow(row) {
    const r = stuckRows.get(row.id);
    if (!r) return;
    const s = onStep(row);
    r.time.textContent = clock(s);
    r.time.classList.toggle("live-bad", median > 0 && s !== null && s > 2 * Math.max(median, 60));
  }

  function sortStuck() {
    const rows = Array.from(learners.values())
      .sort((a, b) => (b.stuck - a.stuck) || a.username.localeCompare(b.username));
    rows.forEach((row, i) => {
      const tr = stuckRows.get(row.id).tr;
      if (stuckBody.children[i] !== tr) stuckBody.insertBefore(tr, stuckBody.children[i] || null);
    });
    stuckEmpty.hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- matrix

  function paintHead() {
    matrixHead.textContent = "";
    const labs = el("tr", null, matrixHead);
    const first = el("th", null, labs, "Learner");
    first.rowSpan = 2;
    first.scope = "col";
    // One header per run of a lab's columns (colSpan cannot count from 0: it clamps to 1).
    const spans = [];
    for (const c of columns) {
      if (spans.length && spans[spans.length - 1].lab === c.lab) spans[spans.length - 1].n += 1;
      else spans.push({ lab: c.lab, n: 1 });
    }
    for (const g of spans) {
      const th = el("th", "live-lab-col", labs, g.lab);
      th.dataset.lab = g.lab;
      th.colSpan = g.n;
      th.scope = "colgroup";
    }
    const total = el("th", "live-total", labs, "Points");
    total.rowSpan = 2;
    total.scope = "col";
    const exs = el("tr", null, matrixHead);
    for (const c of columns) {
      const th = el("th", "live-ex-col", exs);
      th.scope = "col";
      th.title = c.title + " · " + c.points + " points";
      el("span", null, th, c.exercise);
    }
  }

  function paintCell(td, cell) {
    const passed = cell && cell.passed;
    const tried = cell && cell.attempts > 0 && !passed;
    td.className = "live-cell" + (passed ? " cell-passed" : tried ? " cell-failed" : "");
    td.dataset.state = passed ? "passed" : tried ? "failed" : "none";
    td.textContent = passed ? "\u2713 " + points(cell.points) : tried ? cell.attempts + "\u00d7" : "";
    const hints = cell && cell.hints ? ", " + cell.hints + " hint" + (cell.hints === 1 ? "" : "s") : "";
    td.title = passed ? "passed for " + points(cell.points) + " points after " + cell.attempts +
      " tr" + (cell.attempts === 1 ? "y" : "ies") + hints
      : tried ? cell.attempts + " tr" + (cell.attempts === 1 ? "y" : "ies") + ", not passed yet" + hints
      : "not tried";
  }

  function paintMatrixRow(row, flash) {
    let r = matrixRows.get(row.id);
    if (!r) {
      const tr = el("tr");
      tr.dataset.user = row.id;
      const th = el("th", null, tr);
      th.scope = "row";
      const tds = columns.map((c) => {
        const td = el("td", "live-cell", tr);
        td.dataset.user = row.id;
        td.dataset.username = row.username;
        td.dataset.lab = c.lab;
        td.dataset.exercise = c.exercise;
        return td;
      });
      r = { tr, th, tds, total: el("td", "live-total", tr), cells: [] };
      matrixRows.set(row.id, r);
      matrixBody.appendChild(tr);
    }
    r.th.textContent = row.username;
    r.tds.forEach((td, i) => {
      const cell = (row.cells || [])[i] || null;
      const key = JSON.stringify(cell);
      if (key === r.cells[i]) return;
      r.cells[i] = key;
      paintCell(td, cell);
      if (flash) {
        td.classList.remove("cell-flash");
        void td.offsetWidth; // restart the animation on a second change
        td.classList.add("cell-flash");
        setTimeout(() => td.classList.remove("cell-flash"), FLASH_MS);
      }
    });
    r.total.textContent = points(row.points || 0);
  }

  function sortMatrix() {
    Array.from(learners.values()).sort((a, b) => a.username.localeCompare(b.username))
      .forEach((row) => matrixBody.appendChild(matrixRows.get(row.id).tr));
  }

  // ---------------------------------------------------------------- help queue

  function paintQueue(requests) {
    const seen = new Set();
    requests.forEach((h, i) => {
      seen.add(h.id);
      let item = helpItems.get(h.id);
      if (!item) {
        const li = el("li", "help-item");
        li.dataset.request = h.id;
        const head = el("div", "help-head", li);
        const who = el("strong", null, head);
        const meta = el("span", "muted small", head);
        const message = el("p", "help-message", li);
        const foot = el("div", "help-foot", li);
        const claimed = el("span", "muted small help-claimed", foot);
        const claim = el("button", "button button-small", foot, "Claim");
        claim.type = "button";
        claim.dataset.action = "claim";
        const close = el("button", "button button-ghost button-small", foot, "Close");
        close.type = "button";
        close.dataset.action = "close";
        item = { li, who, meta, message, claimed, claim, close };
        claim.addEventListener("click", () =>
          act(base + "/help/" + h.id + "/claim", {}, "You claimed " + item.name + "'s request.")
            .catch(() => {}));
        close.addEventListener("click", () =>
          act(base + "/help/" + h.id + "/close", {}, item.name + "'s request is closed.")
            .catch(() => {}));
        helpItems.set(h.id, item);
      }
      item.name = h.username;
      item.who.textContent = h.username;
      item.meta.textContent = [h.lab, when(h.at)].filter(Boolean).join(" · ");
      item.message.textContent = h.message || "";
      item.message.hidden = !h.message;
      const c = h.claimed_by;   // {id, username} or null
      const by = c ? c.username : null;
      const mine = !!c && Number(c.id) === me;
      item.claimed.textContent = by === null ? "" : mine ? "claimed by you" : "claimed by " + by;
      item.claim.hidden = mine;
      item.claim.textContent = h.claimed_by ? "Claim instead" : "Claim";
      item.li.classList.toggle("help-claimed-item", !!h.claimed_by);
      if (queue.children[i] !== item.li) queue.insertBefore(item.li, queue.children[i] || null);
    });
    for (const [id, item] of helpItems) {
      if (!seen.has(id)) { item.li.remove(); helpItems.delete(id); }
    }
    queueEmpty.hidden = requests.length > 0;
    queueCount.textContent = String(requests.length);
  }

  // ---------------------------------------------------------------- usage

  function paintUsage(id) {
    const r = stuckRows.get(id);
    const u = usage.get(id);
    if (!r || !u) return;
    drawSpark(r.cpu, u.cpu, u.cpuMax, u.state === "running");
    drawSpark(r.mem, u.memory, u.memoryMax, u.state === "running");
    const cpu = u.cpu[u.cpu.length - 1], mem = u.memory[u.memory.length - 1];
    r.cpu.text.textContent = u.state !== "running" ? (u.state || "–") :
      (cpu === null || cpu === undefined ? "–" : cpu.toFixed(2)) + (u.cpuMax ? " / " + u.cpuMax : "");
    r.mem.text.textContent = u.state !== "running" ? "" : bytes(mem) +
      (u.memoryMax ? " / " + bytes(u.memoryMax) : "");
    r.tr.dataset.cpu = cpu === null || cpu === undefined ? "" : String(cpu);
  }

  // ---------------------------------------------------------------- updates

  function setLearner(row, flash) {
    row.receivedAt = performance.now();
    learners.set(row.id, row);
    paintStuck(row);
    paintMatrixRow(row, flash);
  }

  function paintSummary() {
    const rows = Array.from(learners.values());
    const active = rows.filter((r) => r.active).length;
    const running = rows.filter((r) => r.sandbox === "running").length;
    summary.textContent = rows.length + " learner" + (rows.length === 1 ? "" : "s") + " · " +
      active + " active · " + running + " sandbox" + (running === 1 ? "" : "es") + " running" +
      (median ? " · class median on a step " + clock(median) : "");
  }

  const socket = io("/classroom", { transports: ["websocket", "polling"], tryAllTransports: true });
  socket.on("connect", () => {
    dot.classList.add("live-on");
    socket.emit("join", { course: course });
  });
  socket.on("disconnect", () => {
    dot.classList.remove("live-on");
    summary.textContent = "Reconnecting\u2026";
  });

  socket.on("snapshot", (s) => {
    const changed = JSON.stringify(s.columns) !== JSON.stringify(columns);
    columns = s.columns || [];
    median = s.class_median_on_step_s || 0;
    if (changed) {
      matrixBody.textContent = "";
      matrixRows.clear();
      paintHead();
    }
    const ids = new Set((s.learners || []).map((row) => row.id));
    for (const id of Array.from(learners.keys())) {
      if (ids.has(id)) continue;
      learners.delete(id);
      stuckRows.get(id).tr.remove();
      stuckRows.delete(id);
      const m = matrixRows.get(id);
      if (m) { m.tr.remove(); matrixRows.delete(id); }
    }
    for (const row of s.learners || []) setLearner(row, false);
    sortStuck();
    sortMatrix();
    paintQueue(s.help || []);
    paintSummary();
  });

  socket.on("learner", (m) => {
    const row = m && m.row ? m.row : m;
    if (!row || row.id === undefined) return;
    const fresh = !learners.has(row.id);
    setLearner(row, true);
    sortStuck();
    if (fresh) sortMatrix();
    paintSummary();
  });

  socket.on("help", (m) => paintQueue((m && m.help) || []));

  socket.on("usage", (m) => {
    for (const [key, s] of Object.entries((m && m.sandboxes) || {})) {
      const id = Number(key);
      let u = usage.get(id);
      if (!u) { u = { cpu: [], memory: [] }; usage.set(id, u); }
      u.cpu.push(s.cpu);
      u.memory.push(s.memory);
      if (u.cpu.length > HISTORY) u.cpu.shift();
      if (u.memory.length > HISTORY) u.memory.shift();
      u.cpuMax = s.cpu_max;
      u.memoryMax = s.memory_max;
      const was = u.state;
      u.state = s.state;
      paintUsage(id);
      if (was !== u.state && learners.has(id)) paintStuck(learners.get(id));
    }
  });

  socket.on("bulk", (m) => {
    bulkBox.hidden = false;
    bulkBar.max = Math.max(1, m.total || 0);
    bulkBar.value = m.done || 0;
    const verb = m.action === "stop" || m.action === "stop-all" ? "Stopped" : "Started";
    bulkText.textContent = verb + " " + (m.done || 0) + " of " + (m.total || 0) +
      (m.failed ? " · " + m.failed + " failed" : "") + (m.done >= m.total ? " · done" : "");
  });

  socket.on("takeover", (m) => {
    const id = Number(m.user);
    takeovers.set(id, { state: m.state, mine: Number(m.teacher_id) === me, by: m.by });
    if (learners.has(id)) paintStuck(learners.get(id));
    const row = learners.get(id);
    const name = row ? row.username : "the learner";
    if (m.state === "active") say(name + " allowed you to type in their terminal.");
    else if (m.state === "ended") say("The takeover of " + name + "'s terminal ended.");
  });

  socket.on("error", (m) => say((m && m.message) || "live updates unavailable"));

  setInterval(() => {
    for (const row of learners.values()) tickRow(row);
  }, 1000);

  // ---------------------------------------------------------------- forms

  const announce = $("announce");
  const announceStatus = $("announce-status");
  announce.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = announce.elements.text.value.trim();
    if (!text) return;
    const button = announce.querySelector("button[type=submit]");
    button.disabled = true;
    post(base + "/announcements", { text: text })
      .then(() => { announce.reset(); announceStatus.textContent = "Sent."; })
      .catch((e) => { announceStatus.textContent = e.message; })
      .finally(() => { button.disabled = false; });
  });

  function bulk(action) {
    const lab = bulkLab.value;
    const where = lab ? " of " + lab : "";
    if (action === "stop-all" && !window.confirm("Stop every running sandbox of this course? " +
        "Learners' shells end; their files are kept.")) return;
    const body = action === "start-all" && lab ? { lab: lab } : {};
    act(base + "/sandboxes/" + action, body,
        action === "start-all" ? "Starting every learner's sandbox" + where + "\u2026"
          : "Stopping every running sandbox\u2026").catch(() => {});
  }
  root.querySelector("[data-action=start-all]").addEventListener("click", () => bulk("start-all"));
  root.querySelector("[data-action=stop-all]").addEventListener("click", () => bulk("stop-all"));

  const oneForm = dialog.querySelector("[data-role=announce-one]");
  const oneStatus = dialog.querySelector("[data-role=status]");
  function openAnnounce(id) {
    const row = learners.get(id);
    dialog.dataset.user = id;
    dialog.querySelector("[data-role=to]").textContent = row ? row.username : "";
    oneStatus.textContent = "";
    oneForm.reset();
    dialog.showModal();
  }
  oneForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = oneForm.elements.text.value.trim();
    if (!text) return;
    post(base + "/announcements", { text: text, to: Number(dialog.dataset.user) })
      .then(() => { dialog.close(); say("Message sent."); })
      .catch((e) => { oneStatus.textContent = e.message; });
  });
  dialog.querySelector("[data-action=cancel]").addEventListener("click", () => dialog.close());
})();
