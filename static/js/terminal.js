/*
 * nslab's live terminal: xterm.js tabs on socket.io's /terminal namespace
 * (server side: webapp/terminal/).
 *
 * The page provides
 *   <div id="terminal" data-course="..." data-lab="..." [data-sandbox-id="..."]
 *        [data-readonly="1" [data-exec-id="..."]]></div>
 * or, for a teacher typing in a learner's shell during a takeover (webapp/classroom/),
 *   <div id="terminal" ... data-sandbox-id="..." data-guest="1" data-exec-id="..."></div>
 * (writable on that one shell: no new tabs, and closing its tab never ends the shell)
 * (without a sandbox id the server finds the learner's sandbox from course and lab) and
 * loads /static/vendor/xterm.css, xterm.js, addon-fit.js, socket.io.min.js before this
 * file. The element needs a height (the strip of tabs takes its first line). An element
 * #terminal-status, if there is one, shows the connection state.
 *
 * With static/js/app.js: `nslab:run` on #terminal {detail: {command}} types a command,
 * `nslab:resize` on #terminal refits, `nslab:theme` on document recolours.
 *
 * Output arrives as bytes and goes to xterm as a Uint8Array, never decoded here; xterm's
 * write callback acknowledges it, which is what lets the server send more (flow control).
 * Keystrokes go as text, numbered (the server sends them as UTF-8, in order): a binary
 * event from the page is two engine.io messages, which the server's threads may take
 * out of order. Keys typed before a tab's shell is there (a first open waits for the
 * sandbox and the lab's setup; a reconnect for the socket) are kept, in order, and sent
 * when it opens; the server holds a new shell's keys until the shell reads them.
 * The exec ids of the open tabs live in sessionStorage, so a reload or a reconnect
 * reattaches to the same shells and gets their scrollback.
 * Idle stop (webapp/sandboxes/idle.py): `idle` {seconds_left} shows a banner above the terminal
 * (a key, or its "Keep working" button, keeps the sandbox; `idle` with seconds_left null
 * takes it away); `stopped` {reason: "idle"} says why the shells ended, and Enter in a
 * tab (or "Start it again") opens the lab's sandbox again, which starts it.
 * Elements with [data-run] also type their code into the active terminal when clicked:
 * the attribute's value, or else the text of the <pre> it names with data-run-target, or
 * the nearest <pre> in its block.
 */
(function () {
  "use strict";

  const root = document.getElementById("terminal");
  if (!root || typeof Terminal === "undefined" || typeof io === "undefined") {
    return;
  }
  const sandboxId = root.dataset.sandboxId || null;
  const readonly = root.dataset.readonly === "1" || root.dataset.readonly === "true";
  // A guest types in someone else's shell: it must neither end it nor open others there.
  const guest = !readonly && root.dataset.guest === "1";
  const storageKey = ["nslab.terminals", root.dataset.course || "", root.dataset.lab || "",
    sandboxId].join(":");
  // The server stops at 256 KiB unacknowledged: ack big output at once, and echoes
  // rarely (each ack is an event the server handles).
  const ACK_EVERY = 64 * 1024;
  const ACK_DELAY = 250; // ms
  // Keys (and "Run in terminal" code) held while a tab waits for its shell; a paste
  // bigger than this into a terminal that is not there is dropped rather than kept.
  const QUEUE_MAX = 1024 * 1024;

  // ---------------------------------------------------------------- layout

  root.classList.add("nslab-terminal");
  Object.assign(root.style, { display: "flex", flexDirection: "column" });
  const strip = element("div", "terminal-tabs", root);
  strip.setAttribute("role", "tablist");
  const status = document.getElementById("terminal-status") ||
    element("span", "terminal-status", strip);
  const banner = element("div", "terminal-banner", root);
  banner.setAttribute("role", "alert");
  banner.hidden = true;
  const bannerText = element("span", "terminal-banner-text", banner);
  const bannerButton = element("button", "button button-small terminal-banner-button", banner);
  bannerButton.type = "button";
  const panes = element("div", "terminal-panes", root);
  Object.assign(panes.style, { flex: "1 1 auto", minHeight: "0", position: "relative" });
  let addButton = null;
  if (!readonly && !guest) {
    addButton = element("button", "terminal-add", strip);
    addButton.type = "button";
    addButton.title = "New terminal";
    addButton.textContent = "+";
    addButton.addEventListener("click", () => activate(newTab(null)));
    strip.appendChild(addButton);
  }
  if (status.parentNode === strip) strip.appendChild(status); // after the tabs

  function element(tag, cls, parent) {
    const e = document.createElement(tag);
    e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  function setStatus(text) {
    status.textContent = text;
  }

  // ---------------------------------------------------------------- idle stop

  let idleTimer = null;
  let idleDeadline = 0;
  let stoppedIdle = null; // {minutes} once the sandbox was stopped for being idle
  let sandboxOf = null;   // the sandbox id the terminals are attached to

  function minutes(seconds) {
    if (seconds < 60) return Math.max(1, Math.round(seconds)) + " seconds";
    const m = Math.round(seconds / 60);
    return m + (m === 1 ? " minute" : " minutes");
  }

  function showIdleWarning(secondsLeft) {
    idleDeadline = Date.now() + secondsLeft * 1000;
    const paint = () => {
      const left = Math.max(0, (idleDeadline - Date.now()) / 1000);
      bannerText.textContent = "Your sandbox will stop in " +
        (left < 60 ? Math.ceil(left) + " seconds" : minutes(left)) +
        " because it has been idle — keep working: any key in the terminal keeps it.";
    };
    paint();
    bannerButton.textContent = "Keep working";
    bannerButton.hidden = readonly;
    banner.className = "terminal-banner terminal-banner-warning";
    banner.hidden = false;
    clearInterval(idleTimer);
    idleTimer = setInterval(paint, 1000);
  }

  function hideBanner() {
    clearInterval(idleTimer);
    idleTimer = null;
    banner.hidden = true;
  }

  function keepWorking() {
    if (banner.hidden || stoppedIdle) return;
    hideBanner();
    if (sandboxOf) socket.emit("touch", { sandbox_id: sandboxOf });
  }

  function showStopped(seconds) {
    hideBanner();
    stoppedIdle = { minutes: minutes(seconds || 0) };
    bannerText.textContent = "Your sandbox was stopped after " + stoppedIdle.minutes +
      " without activity. Its files are kept" + (readonly ? "." : "; start it again to go on.");
    bannerButton.textContent = "Start it again";
    bannerButton.hidden = readonly;
    banner.className = "terminal-banner terminal-banner-stopped";
    banner.hidden = false;
  }

  function restart() {
    stoppedIdle = null;
    hideBanner();
    for (const t of tabs) {
      if (t.exited) openTab(t);
    }
    if (active) active.term.focus();
  }

  bannerButton.addEventListener("click", () => (stoppedIdle ? restart() : keepWorking()));

  function stoppedNote() {
    return "\r\n\x1b[33m[your sandbox was stopped after " + stoppedIdle.minutes +
      " without activity; its files are kept" +
      (readonly ? "]" : ". Press Enter to start it again]") + "\x1b[0m\r\n";
  }

  // ---------------------------------------------------------------- tabs

  const socket = io("/terminal", { transports: ["websocket", "polling"], tryAllTransports: true });
  const tabs = [];
  const byExec = new Map();
  const byTag = new Map();
  let active = null;
  let counter = 0;

  function newTab(execId) {
    const t = {
      n: ++counter, execId: execId, seq: 0, ready: false, exited: false, gen: 0,
      ackPending: 0, ackTimer: null, queued: [], queuedChars: 0,
    };
    t.pane = element("div", "terminal-pane", panes);
    Object.assign(t.pane.style, { position: "absolute", inset: "0", display: "none" });
    t.tab = element("button", "terminal-tab", strip);
    t.tab.type = "button";
    t.tab.setAttribute("role", "tab");
    t.label = element("span", "terminal-tab-label", t.tab);
    t.label.textContent = readonly ? "Watching" : "Terminal " + t.n;
    strip.insertBefore(t.tab, addButton);
    t.tab.addEventListener("click", () => activate(t));
    if (!readonly && !guest) {
      const x = element("span", "terminal-tab-close", t.tab);
      x.textContent = "\u00d7";
      x.title = "Close this terminal (ends its shell)";
      x.addEventListener("click", (ev) => {
        ev.stopPropagation();
        closeTab(t);
      });
    }

    t.term = new Terminal({
      cursorBlink: !readonly,
      disableStdin: readonly,
      scrollback: 5000,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
      fontSize: 14,
      // At a line height of 1 the cell is exactly the font's height and the renderer
      // clips glyphs that reach below it: underscores vanished (`cpu.cfs quota us`).
      lineHeight: 1.15,
      theme: colours(),
    });
    t.fit = new FitAddon.FitAddon();
    t.term.loadAddon(t.fit);
    t.term.open(t.pane);
    t.term.onData((s) => {
      if (t.exited) {
        if (s.includes("\r")) {
          if (stoppedIdle) restart(); // the sandbox starts again with the open
          else openTab(t); // Enter after the shell ended: a new shell
        }
        return;
      }
      if (!banner.hidden && !stoppedIdle) hideBanner(); // the keystroke is the activity
      send(t, s);
    });
    // Mouse reports in X10 mode are bytes, not UTF-8 text: one char per byte.
    t.term.onBinary((s) => send(t, s, true));
    t.term.onResize(({ rows, cols }) => {
      // A guest's window never sizes the learner's terminal (they keep their own).
      if (t.ready && !readonly && !guest) socket.emit("resize", { exec_id: t.execId, rows, cols });
    });
    t.term.attachCustomKeyEventHandler((ev) => clipboardKeys(t, ev));

    tabs.push(t);
    if (!active) activate(t);
    if (socket.connected) openTab(t);
    return t;
  }

  function activate(t) {
    active = t;
    for (const other of tabs) {
      const on = other === t;
      other.pane.style.display = on ? "block" : "none";
      other.tab.classList.toggle("active", on);
      other.tab.setAttribute("aria-selected", on ? "true" : "false");
    }
    fitTab(t);
    t.term.focus();
    save();
  }

  function fitTab(t) {
    if (t.pane.style.display === "none" || !t.pane.clientWidth) return;
    try {
      t.fit.fit();
    } catch (e) {
      // not laid out yet; the ResizeObserver fits it once it is
    }
  }

  function closeTab(t) {
    if (t.execId) {
      socket.emit("close", { exec_id: t.execId, kill: true });
      byExec.delete(t.execId);
    }
    clearTimeout(t.ackTimer);
    t.term.dispose();
    t.pane.remove();
    t.tab.remove();
    tabs.splice(tabs.indexOf(t), 1);
    if (active === t) {
      active = null;
      if (tabs.length) activate(tabs[tabs.length - 1]);
    }
    save();
  }

  function openTab(t) {
    t.ready = false;
    t.tag = "tab" + t.n + "-" + Date.now();
    byTag.set(t.tag, t);
    fitTab(t);
    const msg = { rows: t.term.rows, cols: t.term.cols, tag: t.tag };
    if (sandboxId) msg.sandbox_id = sandboxId;
    else Object.assign(msg, { course: root.dataset.course, lab: root.dataset.lab });
    if (t.execId) msg.exec_id = t.execId;
    if (readonly) msg.readonly = true;
    if (guest) msg.guest = true;
    socket.emit("open", msg);
  }

  function save() {
    if (readonly || guest) return;
    try {
      sessionStorage.setItem(storageKey, JSON.stringify({
        execIds: tabs.map((t) => t.execId).filter(Boolean),
        active: active && active.execId,
      }));
    } catch (e) {
      // storage full or disabled: reloads then start new shells
    }
  }

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(storageKey)) || {};
    } catch (e) {
      return {};
    }
  }

  function colours() {
    // The page's own terminal colours (static/css/app.css), so the theme toggle applies.
    const css = getComputedStyle(root);
    const bg = css.getPropertyValue("--term-bg").trim();
    const fg = css.getPropertyValue("--term-text").trim();
    const theme = {};
    if (bg) theme.background = bg;
    if (fg) {
      theme.foreground = fg;
      theme.cursor = fg;
    }
    return theme;
  }

  // ---------------------------------------------------------------- input

  function send(t, text, binary) {
    if (readonly || !text.length) return;
    if (!t.ready) {
      // Opening (a first open waits for the new sandbox and its setup) or reconnecting:
      // keep the keys, in order, for when the shell is there ('opened').
      if (t.queuedChars + text.length > QUEUE_MAX) return; // a flood into nothing
      t.queued.push([text, !!binary]);
      t.queuedChars += text.length;
      return;
    }
    if (binary) socket.emit("input", t.execId, t.seq++, text, true);
    else socket.emit("input", t.execId, t.seq++, text);
  }

  function flushQueued(t) {
    const queued = t.queued.splice(0);
    t.queuedChars = 0;
    for (const [text, binary] of queued) send(t, text, binary);
  }

  function clipboardKeys(t, ev) {
    if (ev.type !== "keydown" || !ev.ctrlKey || !ev.shiftKey) return true;
    if (ev.code === "KeyC") {
      const text = t.term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text);
      ev.preventDefault(); // and not the browser's inspector
      return false;
    }
    if (ev.code === "KeyV") {
      return false; // the browser's own paste event reaches xterm (bracketed paste)
    }
    return true;
  }

  function run(code) {
    const t = active;
    if (!t || readonly) return;
    code = code.replace(/\r\n?/g, "\n").replace(/\n+$/, "");
    if (!code) return;
    send(t, code.replace(/\n/g, "\r") + "\r"); // queued until the shell is there
    t.term.focus();
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest && ev.target.closest("[data-run]");
    if (!button) return;
    ev.preventDefault();
    let code = button.dataset.run;
    if (!code) {
      const sel = button.dataset.runTarget;
      let block = sel ? document.querySelector(sel) : null;
      for (let p = button; !block && p && p !== document.body; p = p.parentElement) {
        block = p.querySelector("pre");
      }
      code = block ? block.textContent : "";
    }
    run(code);
  });

  root.addEventListener("nslab:run", (ev) => run((ev.detail && ev.detail.command) || ""));
  root.addEventListener("nslab:resize", () => active && fitTab(active));
  document.addEventListener("nslab:theme", () => {
    const theme = colours();
    for (const t of tabs) t.term.options.theme = theme;
  });

  // ---------------------------------------------------------------- output

  function ack(t, gen, n) {
    if (gen !== t.gen) return; // written before the stream was reopened
    t.ackPending += n;
    if (t.ackPending >= ACK_EVERY) flushAck(t);
    else if (!t.ackTimer) t.ackTimer = setTimeout(() => flushAck(t), ACK_DELAY);
  }

  function flushAck(t) {
    clearTimeout(t.ackTimer);
    t.ackTimer = null;
    if (t.ackPending && t.execId && socket.connected) {
      socket.emit("ack", { exec_id: t.execId, bytes: t.ackPending });
    }
    t.ackPending = 0;
  }

  socket.on("output", (execId, data) => {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const t = byExec.get(execId);
    if (!t) {
      socket.emit("ack", { exec_id: execId, bytes: bytes.length });
      return;
    }
    const gen = t.gen;
    t.term.write(bytes, () => ack(t, gen, bytes.length));
  });

  socket.on("opened", (m) => {
    const t = (m.tag && byTag.get(m.tag)) || byExec.get(m.exec_id);
    if (!t) return;
    if (m.tag) byTag.delete(m.tag);
    if (t.execId && t.execId !== m.exec_id) byExec.delete(t.execId);
    t.execId = m.exec_id;
    byExec.set(t.execId, t);
    t.gen++;
    clearTimeout(t.ackTimer);
    t.ackTimer = null;
    t.ackPending = 0;
    t.seq = 0;
    t.exited = false;
    t.ready = true;
    sandboxOf = m.sandbox_id || sandboxOf;
    if (stoppedIdle) {
      stoppedIdle = null;
      hideBanner();
    }
    t.tab.classList.remove("exited");
    t.term.reset(); // the scrollback follows
    save();
    flushQueued(t);
  });

  socket.on("exit", (m) => {
    const t = byExec.get(m.exec_id);
    if (!t) return;
    byExec.delete(m.exec_id);
    t.execId = null;
    t.ready = false;
    t.exited = true;
    t.queued = []; // keys meant for the shell that ended, never for the next one
    t.queuedChars = 0;
    t.exitedAt = Date.now();
    t.tab.classList.add("exited");
    save();
    if (stoppedIdle) {
      t.term.write(stoppedNote());
      return;
    }
    const code = m.exit_code === null || m.exit_code === undefined ? "" : " with code " + m.exit_code;
    t.term.write("\r\n\x1b[2m[the shell exited" + code +
      (readonly ? "]" : "; press Enter for a new one]") + "\x1b[0m\r\n");
  });

  socket.on("idle", (m) => {
    if (sandboxOf && m.sandbox_id !== sandboxOf) return;
    if (m.seconds_left === null || m.seconds_left === undefined) {
      if (!stoppedIdle) hideBanner();
    } else if (!stoppedIdle) {
      showIdleWarning(m.seconds_left);
    }
  });

  socket.on("stopped", (m) => {
    if (sandboxOf && m.sandbox_id !== sandboxOf) return;
    if (m.reason !== "idle") return;
    showStopped(m.idle_seconds);
    // Shells whose exit came first still get the explanation.
    for (const t of tabs) {
      if (t.exited && Date.now() - (t.exitedAt || 0) < 10000) t.term.write(stoppedNote());
    }
  });

  socket.on("error", (m) => {
    const t = (m.tag && byTag.get(m.tag)) || (m.exec_id && byExec.get(m.exec_id)) || active;
    if (m.tag) byTag.delete(m.tag);
    if (t) t.term.write("\r\n\x1b[31mnslab: " + m.message + "\x1b[0m\r\n");
    else setStatus(m.message);
    // The sandbox service is down or full: say so, and try again; nothing is lost.
    if (t && m.retry && !t.retryTimer) {
      setStatus("sandbox service unavailable \u2014 retrying in 5 s");
      t.term.write("\x1b[2m[retrying in 5 s]\x1b[0m\r\n");
      t.retryTimer = setTimeout(() => {
        t.retryTimer = null;
        setStatus("");
        if (!t.exited) openTab(t);
      }, 5000);
    }
  });

  socket.on("connect", () => {
    setStatus("");
    for (const t of tabs) {
      if (!t.exited) openTab(t); // same exec id: the same shell, with its scrollback
    }
  });

  socket.on("disconnect", () => {
    for (const t of tabs) t.ready = false;
    setStatus("reconnecting\u2026");
  });

  // ---------------------------------------------------------------- start

  if (typeof ResizeObserver !== "undefined") {
    new ResizeObserver(() => active && fitTab(active)).observe(panes);
  } else {
    window.addEventListener("resize", () => active && fitTab(active));
  }

  if (readonly || guest) {
    newTab(root.dataset.execId || null);
  } else {
    const saved = load();
    const ids = Array.isArray(saved.execIds) ? saved.execIds : [];
    if (!ids.length) ids.push(null);
    const made = ids.map((id) => newTab(id));
    activate(made.find((t) => t.execId && t.execId === saved.active) || made[0]);
  }

  window.nslabTerminal = { run, socket, tabs: () => tabs.slice() };
})();
