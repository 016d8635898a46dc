/*
 * Upload into /root and download from it, on the lab page (server side: webapp/files.py).
 *
 * The page provides, in the terminal bar,
 *   <span id="terminal-files" data-list-url data-file-url data-upload-url data-upload-max>
 *     <span id="files-status"></span> [data-files-upload] [data-files-open]
 *     <input type="file" id="files-input" hidden></span>
 * and a <dialog id="files-dialog"> with #files-path, #files-message, #files-list,
 * [data-files-upload-here] and [data-files-close]. "Upload" sends a file to /root,
 * "Download" opens the dialog on /root: folders open, files download; "Upload here"
 * uploads into the folder shown. The CSRF token comes from <meta name="csrf-token">.
 * Downloads are fetched (so an error is shown here, not as a page) and saved from a blob.
 */
(function () {
  "use strict";

  const bar = document.getElementById("terminal-files");
  const dialog = document.getElementById("files-dialog");
  const input = document.getElementById("files-input");
  if (!bar || !dialog || !input) return;
  const status = document.getElementById("files-status");
  const crumbs = document.getElementById("files-path");
  const message = document.getElementById("files-message");
  const list = document.getElementById("files-list");
  const listUrl = bar.dataset.listUrl;
  const fileUrl = bar.dataset.fileUrl;
  const uploadMax = parseInt(bar.dataset.uploadMax, 10) || 16 * 1024 * 1024;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const HOME = "/root";
  let folder = HOME;
  let uploadInto = HOME;
  let statusTimer = null;

  function say(text, sticky) {
    status.textContent = text;
    clearTimeout(statusTimer);
    if (!sticky && text) statusTimer = setTimeout(() => { status.textContent = ""; }, 6000);
  }

  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  async function problem(resp) {
    try {
      const body = await resp.json();
      return body.message || resp.statusText;
    } catch (e) {
      return resp.status === 413 ? "the file is too large" : resp.statusText || "failed";
    }
  }

  function url(base, params) {
    const q = new URLSearchParams(params);
    return base + "?" + q.toString();
  }

  // ---------------------------------------------------------------- upload

  async function upload(file, dir, overwrite) {
    if (file.size > uploadMax) {
      say(file.name + " is larger than " + size(uploadMax) + ", the most one upload may be.");
      return false;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("dir", dir);
    if (overwrite) form.append("overwrite", "1");
    form.append("csrf_token", csrf);
    say("Uploading " + file.name + "\u2026", true);
    let resp;
    try {
      resp = await fetch(bar.dataset.uploadUrl, {
        method: "POST", body: form, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrf },
      });
    } catch (e) {
      say("Upload failed: the server cannot be reached.");
      return false;
    }
    if (resp.status === 409) {
      const body = await resp.json().catch(() => ({}));
      if (body.error === "exists") {
        say("", false);
        if (window.confirm(body.message)) return upload(file, dir, true);
        return false;
      }
      say("Upload failed: " + (body.message || resp.statusText));
      return false;
    }
    if (!resp.ok) {
      say("Upload failed: " + await problem(resp));
      return false;
    }
    const done = await resp.json();
    say("Uploaded " + done.path + " (" + size(done.size) + ")");
    return true;
  }

  input.addEventListener("change", async () => {
    const files = Array.from(input.files || []);
    input.value = "";
    for (const f of files) {
      if (!(await upload(f, uploadInto))) break;
    }
    if (dialog.open) show(folder);
  });

  function pick(dir) {
    uploadInto = dir;
    input.click();
  }

  // ---------------------------------------------------------------- download dialog

  async function download(path) {
    message.textContent = "Downloading " + path + "\u2026";
    let resp;
    try {
      resp = await fetch(url(fileUrl, { path }), {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
    } catch (e) {
      message.textContent = "The download failed: the server cannot be reached.";
      return;
    }
    if (!resp.ok) {
      message.textContent = "The download failed: " + await problem(resp);
      return;
    }
    const blob = await resp.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = path.split("/").pop();
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    message.textContent = "Downloaded " + path + " (" + size(blob.size) + ").";
  }

  function crumb(label, path) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "files-crumb";
    b.textContent = label;
    b.addEventListener("click", () => show(path));
    return b;
  }

  async function show(path) {
    folder = path;
    crumbs.replaceChildren();
    let acc = "";
    const parts = path.split("/").filter(Boolean);
    parts.forEach((p, i) => {
      acc += "/" + p;
      if (i > 0) crumbs.append(" / ");
      crumbs.append(i === 0 ? crumb(HOME, HOME) : crumb(p, acc));
    });
    message.textContent = "Loading\u2026";
    list.replaceChildren();
    let resp;
    try {
      resp = await fetch(url(listUrl, { path }), {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
    } catch (e) {
      message.textContent = "The server cannot be reached.";
      return;
    }
    if (!resp.ok) {
      message.textContent = await problem(resp);
      return;
    }
    const data = await resp.json();
    if (folder !== path) return; // another folder was opened meanwhile
    const entries = data.entries.filter((e) => !e.name.startsWith(".nslab-upload-"));
    entries.sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    message.textContent = entries.length ? (data.truncated ? "Only the first 1000 entries are shown." : "")
      : "This folder is empty.";
    for (const e of entries) {
      const li = document.createElement("li");
      li.className = "files-entry files-" + e.type;
      const target = (path === "/" ? "" : path) + "/" + e.name;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "files-name";
      b.textContent = e.name + (e.type === "dir" ? "/" : e.type === "link" ? " \u2192" : "");
      if (e.type === "dir") {
        b.title = "Open " + target;
        b.addEventListener("click", () => show(target));
      } else if (e.type === "file" || e.type === "link") {
        b.title = "Download " + target;
        b.addEventListener("click", () => download(target));
      } else {
        b.disabled = true;
        b.title = "Not a regular file";
      }
      const info = document.createElement("span");
      info.className = "files-size";
      info.textContent = e.type === "file" ? size(e.size) : "";
      li.append(b, info);
      list.append(li);
    }
  }

  // ---------------------------------------------------------------- controls

  bar.addEventListener("click", (ev) => {
    if (ev.target.closest("[data-files-upload]")) pick(HOME);
    else if (ev.target.closest("[data-files-open]")) {
      if (typeof dialog.showModal === "function") dialog.showModal();
      else dialog.setAttribute("open", "");
      show(HOME);
    }
  });

  dialog.addEventListener("click", (ev) => {
    if (ev.target.closest("[data-files-upload-here]")) pick(folder);
    else if (ev.target.closest("[data-files-close]") || ev.target === dialog) dialog.close();
  });

  dialog.addEventListener("close", () => {
    const t = window.nslabTerminal && window.nslabTerminal.tabs().find((x) => x.pane.style.display !== "none");
    if (t) t.term.focus();
  });
})();
