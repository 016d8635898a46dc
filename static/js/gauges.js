/*
 * Live gauges of the learner's sandbox beside the terminal (server side: webapp/gauges/,
 * socket.io namespace /gauges): CPU against its quota, memory against its limit, pids
 * against their maximum, for the sandbox and each child cgroup the learner made, with a
 * CPU sparkline per group (plain SVG drawn here: the quota is a dashed line, so setting
 * cpu.max visibly clamps a hog's line). One sample a second comes from the server's
 * sampler of this sandbox, shared by every page watching it.
 *
 * Each group's row carries its latest numbers as data attributes (data-path, data-cpu,
 * data-cpu-max), which tests/test_browser_gauges.py reads.
 */
(function () {
  "use strict";

  const root = document.getElementById("gauges");
  if (typeof io === "undefined" || !root) return;
  const HISTORY = 60;          // samples kept per group: a minute of sparkline
  const SVG = "http://www.w3.org/2000/svg";
  const W = 120, H = 28;       // sparkline's viewBox
  const status = root.querySelector("[data-role=status]");
  const list = root.querySelector("[data-role=groups]");
  const more = root.querySelector("[data-role=hidden]");
  const rows = new Map();      // cgroup path -> {row, cpu, mem, pids, line, quota, history}

  const socket = io("/gauges", { transports: ["websocket", "polling"], tryAllTransports: true });
  // Again on every reconnect: the server forgets a page's watch when its socket goes.
  // data-watch names a sandbox (a teacher's watch page, webapp/classroom/); else the
  // signed-in learner's own sandbox of the page's course and lab.
  const target = root.dataset.watch ? { sandbox_id: root.dataset.watch } :
    { course: root.dataset.course, lab: root.dataset.lab };
  const watch = () => socket.emit("watch", target);
  socket.on("connect", watch);
  const RETRY = 2000;           // ms before asking again for a sandbox not made yet
  socket.on("error", (m) => {
    if (m.reason === "no_sandbox") {
      // The terminal's first open is still making it: the gauges never make one.
      status.textContent = "waiting for the sandbox";
      setTimeout(() => {
        if (socket.connected) watch();
      }, RETRY);
      return;
    }
    status.textContent = m.message || "gauges unavailable";
  });

  function element(tag, cls, parent) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
  }

  function meter(parent, label) {
    const box = element("div", "gauge", parent);
    element("span", "gauge-label", box).textContent = label;
    const bar = element("span", "gauge-bar", box);
    const fill = element("span", "gauge-fill", bar);
    const text = element("span", "gauge-text", box);
    return { fill, text };
  }

  function setMeter(m, used, max, fmt) {
    const ratio = max ? Math.min(1, used / max) : 0;
    m.fill.style.width = (ratio * 100).toFixed(1) + "%";
    m.fill.classList.toggle("gauge-high", ratio >= 0.9);
    m.text.textContent = (used === null || used === undefined ? "–" : fmt(used)) +
      " / " + (max ? fmt(max) : "no limit");
  }

  function rowFor(path) {
    let r = rows.get(path);
    if (r) return r;
    const row = element("li", "gauge-group", list);
    row.dataset.path = path;
    element("span", "gauge-path", row).textContent = path === "/" ? "sandbox" : path;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "gauge-spark");
    svg.setAttribute("aria-hidden", "true");
    const quota = document.createElementNS(SVG, "line");
    quota.setAttribute("class", "gauge-quota");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "gauge-line");
    svg.appendChild(quota);
    svg.appendChild(line);
    row.appendChild(svg);
    r = { row, line, quota, history: [],
          cpu: meter(row, "CPU"), mem: meter(row, "mem"), pids: meter(row, "pids") };
    rows.set(path, r);
    return r;
  }

  function draw(r, cpuMax) {
    // The scale holds the quota and the highest use seen, so a clamped line sits at the
    // dashed quota and a hog without one climbs to its own peak.
    const top = Math.max(cpuMax || 0, ...r.history.map((v) => v || 0), 0.1) * 1.1;
    const y = (v) => (H - 1 - (v / top) * (H - 2)).toFixed(1);
    const step = W / (HISTORY - 1);
    const start = HISTORY - r.history.length;
    r.line.setAttribute("points", r.history
      .map((v, i) => ((start + i) * step).toFixed(1) + "," + y(v || 0)).join(" "));
    if (cpuMax) {
      r.quota.setAttribute("x1", "0"); r.quota.setAttribute("x2", String(W));
      r.quota.setAttribute("y1", y(cpuMax)); r.quota.setAttribute("y2", y(cpuMax));
    }
    r.quota.style.display = cpuMax ? "" : "none";
  }

  socket.on("gauges", (m) => {
    root.dataset.status = m.status;
    root.dataset.sandboxId = m.sandbox_id;
    if (m.status !== "running") {
      status.textContent = m.status === "stopped" ? "stopped" : "unavailable";
      for (const r of rows.values()) r.row.remove();
      rows.clear();
      more.textContent = "";
      return;
    }
    status.textContent = "";
    const seen = new Set();
    for (const g of m.groups) {
      seen.add(g.path);
      const r = rowFor(g.path);
      r.history.push(g.cpu);
      if (r.history.length > HISTORY) r.history.shift();
      r.row.dataset.cpu = g.cpu === null ? "" : String(g.cpu);
      r.row.dataset.cpuMax = g.cpu_max === null ? "" : String(g.cpu_max);
      const cpus = (v) => v.toFixed(2);
      setMeter(r.cpu, g.cpu, g.cpu_max, cpus);
      setMeter(r.mem, g.memory, g.memory_max, bytes);
      setMeter(r.pids, g.pids, g.pids_max, String);
      draw(r, g.cpu_max);
    }
    for (const [path, r] of rows) {
      if (!seen.has(path)) { r.row.remove(); rows.delete(path); }
    }
    more.textContent = m.hidden ? "+" + m.hidden + " more groups not shown" :
      (m.truncated ? "some groups not shown" : "");
  });
})();
