/*
 * Python cells on the lab page, run in the learner's kernel inside their sandbox
 * (server side: webapp/notebook/, socket.io namespace /notebook).
 *
 * Two kinds of cells share one kernel: the lesson's (.nb-lesson-cell, read-only source,
 * a Run button) and the Notebook tab's scratch cells (editable; Run all, Interrupt,
 * Restart, Save to /root/scratch.ipynb, Download). The tab is a button added to the
 * terminal's strip of tabs (static/js/terminal.js); its pane lies over the terminals'.
 *
 * Outputs come rendered by the server (escaped text with ANSI colour classes, HTML
 * sanitised with nh3, checked PNG/JPEG as base64): this file inserts them as they are and
 * builds nothing from a kernel's text itself. Pictures become data: URLs.
 * The kernel starts when the tab first opens or a cell first runs (not with the page).
 * Shift+Enter in a scratch cell runs it. The scratch notebook is loaded from the sandbox
 * when the page opens (so it comes back after a reload) and saved on Save, on Download
 * and a few seconds after a cell runs.
 */
(function () {
  "use strict";

  const pane = document.getElementById("notebook");
  const lessonCells = Array.from(document.querySelectorAll(".nb-lesson-cell"));
  if (typeof io === "undefined" || (!pane && !lessonCells.length)) return;
  const terminal = document.getElementById("terminal");
  const course = (pane || terminal).dataset.course;
  const lab = (pane || terminal).dataset.lab;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const SAVE_DELAY = 3000; // ms after a run before the scratch notebook is saved

  const socket = io("/notebook", { transports: ["websocket", "polling"], tryAllTransports: true });
  let sandboxId = null;
  let kernelStatus = "not started";
  const cells = new Map(); // cell id -> {root, outputs, state, count, button, clearNext}
  let counter = 0;

  function element(tag, cls, parent) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  // ---------------------------------------------------------------- cells

  function register(root, id) {
    const c = {
      id: id, root: root,
      outputs: root.querySelector('[data-role="outputs"]'),
      state: root.querySelector('[data-role="state"]'),
      count: root.querySelector('[data-role="count"]'),
      button: root.querySelector('[data-nb="run"]'),
      clearNext: false, running: false,
    };
    cells.set(id, c);
    if (c.button) c.button.addEventListener("click", () => (c.running ? interrupt() : run([c])));
    return c;
  }

  function source(c) {
    const editor = c.root.querySelector("textarea");
    if (editor) return editor.value;
    return c.root.querySelector('[data-role="source"]').textContent;
  }

  function setState(c, state, count) {
    c.running = state === "queued" || state === "running";
    c.root.dataset.state = state;
    const words = { queued: "queued", running: "running…", done: "", error: "error",
      cancelled: "not run", dead: "the kernel stopped" };
    if (c.state) c.state.textContent = state in words ? words[state] : state;
    if (c.count) {
      if (state === "running" && typeof count === "number") c.count.textContent = "[" + count + "]";
      else if (c.running) c.count.textContent = "[*]";
    }
    if (c.button) {
      c.button.textContent = c.running ? "Stop" : "Run";
      c.button.title = c.running ? "Interrupt the kernel" : "Run this cell";
    }
  }

  function run(list) {
    if (!sandboxId) {
      say("the kernel is not connected yet", true);
      return;
    }
    wantKernel = true; // the run starts it; a reconnect's open keeps it
    for (const c of list) {
      c.outputs.textContent = "";
      c.clearNext = false;
    }
    const payload = list.map((c) => ({ cell_id: c.id, source: source(c) }));
    if (payload.length === 1) {
      socket.emit("run", Object.assign({ sandbox_id: sandboxId }, payload[0]));
    } else {
      socket.emit("run_all", { sandbox_id: sandboxId, cells: payload });
    }
    if (list.some((c) => c.scratch)) scheduleSave();
  }

  function interrupt() {
    if (sandboxId) socket.emit("interrupt", { sandbox_id: sandboxId });
  }

  function show(c, out) {
    if (c.clearNext) {
      c.outputs.textContent = "";
      c.clearNext = false;
    }
    if (out.type === "clear") {
      if (out.wait) c.clearNext = true;
      else c.outputs.textContent = "";
      return;
    }
    if (out.type === "stream") {
      const last = c.outputs.lastElementChild;
      const block = last && last.dataset.stream === out.name ? last
        : element("pre", "nb-output nb-stream nb-" + out.name, c.outputs);
      block.dataset.stream = out.name;
      block.insertAdjacentHTML("beforeend", out.html); // server-escaped (render.ansi_to_html)
      return;
    }
    if (out.type === "truncated") {
      element("p", "nb-output nb-truncated", c.outputs).textContent = out.message;
      return;
    }
    if (out.type === "error") {
      element("pre", "nb-output nb-error", c.outputs).innerHTML = out.html; // server-escaped
      return;
    }
    if (out.kind === "image") {
      const img = element("img", "nb-output nb-image", c.outputs);
      img.alt = "output of the cell";
      img.src = "data:" + out.mime + ";base64," + out.data;
    } else if (out.kind === "html") {
      element("div", "nb-output nb-html", c.outputs).innerHTML = out.html; // nh3-cleaned
    } else if (out.kind === "text") {
      element("pre", "nb-output nb-text", c.outputs).innerHTML = out.html; // server-escaped
    }
  }

  // ---------------------------------------------------------------- the socket

  function say(text, sticky) {
    const m = pane && pane.querySelector('[data-role="message"]');
    if (!m) return;
    m.textContent = text;
    clearTimeout(say.timer);
    if (!sticky && text) say.timer = setTimeout(() => { m.textContent = ""; }, 8000);
  }

  function setKernel(status) {
    kernelStatus = status;
    const k = pane && pane.querySelector('[data-role="kernel"]');
    if (k) {
      k.textContent = "kernel: " + status;
      k.dataset.status = status;
    }
    document.body.dataset.kernel = status;
  }

  // The kernel starts when the Notebook tab first opens or a cell runs, not with the
  // page: it costs the sandbox memory.
  let wantKernel = false;

  function openNotebook() {
    socket.emit("open", { course: course, lab: lab, tag: "page", start: wantKernel });
  }

  function startKernel() {
    if (wantKernel) return;
    wantKernel = true;
    if (socket.connected) openNotebook();
  }

  socket.on("connect", openNotebook);
  socket.on("opened", (msg) => {
    sandboxId = msg.sandbox_id;
    if (msg.status && msg.status !== "none") setKernel(msg.status);
    else setKernel(wantKernel ? "starting" : "not started");
  });
  socket.on("kernel", (msg) => {
    if (msg.sandbox_id === sandboxId) setKernel(msg.status);
  });
  socket.on("cell", (msg) => {
    const c = cells.get(msg.cell_id);
    if (c && msg.sandbox_id === sandboxId) setState(c, msg.state, msg.execution_count);
  });
  socket.on("output", (msg) => {
    const c = cells.get(msg.cell_id);
    if (c && msg.sandbox_id === sandboxId) show(c, msg.output);
  });
  socket.on("error", (msg) => {
    say(msg.message || "the notebook failed", true);
    if (msg.reason === "forbidden" || msg.tag === "page") setKernel("unavailable");
  });
  socket.on("disconnect", () => setKernel("disconnected"));

  for (const root of lessonCells) register(root, root.dataset.cellId);

  // ---------------------------------------------------------------- the Notebook tab

  if (!pane) return;
  const list = pane.querySelector('[data-role="cells"]');
  const scratchUrl = pane.dataset.scratchUrl;
  let loaded = false; // a notebook that could not be read is not saved over unasked
  let saveTimer = null;

  function addCell(text, after) {
    const id = "scratch-" + Date.now().toString(36) + "-" + (++counter);
    const root = element("div", "nb-cell nb-scratch-cell");
    root.dataset.cellId = id;
    const bar = element("div", "code-bar", root);
    element("span", "nb-count", bar).dataset.role = "count";
    element("span", "nb-state", bar).dataset.role = "state";
    const runButton = element("button", "nb-run", bar);
    runButton.type = "button";
    runButton.dataset.nb = "run";
    runButton.textContent = "Run";
    const remove = element("button", "icon-button nb-remove", bar);
    remove.type = "button";
    remove.title = "Delete this cell";
    remove.textContent = "\u00d7";
    const editor = element("textarea", "nb-editor", root);
    editor.spellcheck = false;
    editor.rows = Math.max(2, (text || "").split("\n").length);
    editor.value = text || "";
    editor.setAttribute("aria-label", "Python code");
    editor.addEventListener("input", () => {
      editor.rows = Math.max(2, editor.value.split("\n").length);
    });
    editor.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && ev.shiftKey) {
        ev.preventDefault();
        run([c]);
        const next = root.nextElementSibling;
        (next ? next.querySelector("textarea") : addCell("", null).root.querySelector("textarea")).focus();
      }
    });
    const outputs = element("div", "nb-outputs", root);
    outputs.dataset.role = "outputs";
    outputs.setAttribute("aria-live", "polite");
    if (after && after.nextSibling) list.insertBefore(root, after.nextSibling);
    else list.appendChild(root);
    const c = register(root, id);
    c.scratch = true;
    remove.addEventListener("click", () => {
      cells.delete(id);
      root.remove();
      if (!list.children.length) addCell("", null);
    });
    return c;
  }

  function scratchCells() {
    return Array.from(list.children).map((root) => cells.get(root.dataset.cellId)).filter(Boolean);
  }

  async function load() {
    try {
      const resp = await fetch(scratchUrl, { headers: { Accept: "application/json" } });
      const body = await resp.json();
      if (!resp.ok) {
        say(body.message || "the scratch notebook could not be read", true);
        addCell("", null);
        return;
      }
      for (const cell of body.cells) {
        if (cell.cell_type === "code") addCell(cell.source, null);
      }
      if (!list.children.length) addCell("", null);
      loaded = true;
    } catch (e) {
      say("the scratch notebook could not be read", true);
      if (!list.children.length) addCell("", null);
    }
  }

  async function save(quiet) {
    clearTimeout(saveTimer);
    const payload = { cells: scratchCells().map((c) => ({ cell_type: "code", source: source(c) })) };
    const resp = await fetch(scratchUrl, {
      method: "PUT",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(payload),
    });
    let body = {};
    try {
      body = await resp.json();
    } catch (e) {
      // an error page: its status says enough
    }
    if (!resp.ok) {
      say("not saved: " + (body.message || resp.statusText), true);
      return false;
    }
    loaded = true;
    if (!quiet) say("saved to " + body.path);
    return true;
  }

  function scheduleSave() {
    if (!loaded) return;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => save(true), SAVE_DELAY);
  }

  pane.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-nb]");
    if (!button || !pane.contains(button)) return;
    const what = button.dataset.nb;
    if (what === "run-all") run(scratchCells());
    else if (what === "interrupt") interrupt();
    else if (what === "restart") {
      if (sandboxId) socket.emit("restart", { sandbox_id: sandboxId });
    } else if (what === "add") addCell("", null).root.querySelector("textarea").focus();
    else if (what === "save") save(false);
    else if (what === "download") {
      if (await save(true)) window.location.href = pane.dataset.downloadUrl;
    }
  });

  // The tab: a button in the terminal's strip; the pane lies over the terminal panes.
  const strip = terminal && terminal.querySelector(".terminal-tabs");
  const panes = terminal && terminal.querySelector(".terminal-panes");
  if (strip && panes) {
    const tab = element("button", "terminal-tab notebook-tab");
    tab.type = "button";
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-selected", "false");
    tab.textContent = "Notebook";
    strip.insertBefore(tab, strip.firstChild);
    panes.appendChild(pane);
    Object.assign(pane.style, { position: "absolute", inset: "0" });
    let hidden = [];
    const open = () => {
      hidden = Array.from(panes.querySelectorAll(".terminal-pane")).filter((p) => p.style.display !== "none");
      for (const p of hidden) p.style.display = "none";
      for (const t of strip.querySelectorAll(".terminal-tab")) {
        t.classList.toggle("active", t === tab);
        t.setAttribute("aria-selected", t === tab ? "true" : "false");
      }
      pane.hidden = false;
      startKernel();
    };
    const close = () => {
      if (pane.hidden) return;
      pane.hidden = true;
      tab.classList.remove("active");
      tab.setAttribute("aria-selected", "false");
      for (const p of hidden) if (p.style.display === "none") p.style.display = "block";
      hidden = [];
    };
    tab.addEventListener("click", open);
    // Any other tab, or a new terminal, takes the pane back (terminal.js shows its own).
    strip.addEventListener("click", (ev) => {
      if (!tab.contains(ev.target)) close();
    }, true);
    window.nslabNotebook = { open: open, close: close, cells: () => scratchCells(), status: () => kernelStatus };
  }
  load();
})();
