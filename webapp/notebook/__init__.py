"""Notebooks in the lab page: Python cells run in a kernel inside the learner's own
sandbox (`nslab.kernels`: ipykernel started by sandboxd in the sandbox's namespaces and
cgroup), outputs streamed over socket.io `/notebook` as they come.

`kernels` holds the kernels (one per sandbox, one asyncio loop, queues bounded per
learner, output bounded per cell); `render` turns IOPub messages into what a page may
show (escaped text with ANSI colours as classes, HTML through nh3, checked PNG/JPEG);
`namespace` serves the pages' events; `scratch` the Notebook tab's
`/root/scratch.ipynb`.

Events from the page (each authorized on its own: "write" is the learner the sandbox
belongs to, "read" also the instructor of its course; nobody else, and never an
anonymous socket, which is refused at connect):
  open      {sandbox_id | course+lab, readonly?, start?, tag?} → opened {tag, sandbox_id,
            readonly, status}; joins the sandbox's room; a writer's open with start
            starts (or reattaches to) the kernel, else the first run does
  run       {sandbox_id, cell_id, source}           write
  run_all   {sandbox_id, cells: [{cell_id, source}]} write; all queued or none
  interrupt {sandbox_id}                            write; queued cells are dropped
  restart   {sandbox_id}                            write; queued cells are dropped
  status    {sandbox_id} → kernel {sandbox_id, status}   read
Events to the pages in the sandbox's room (the learner's tabs, a watching instructor):
  kernel {sandbox_id, status}: starting, idle, busy, restarting, dead
  cell   {sandbox_id, cell_id, state[, execution_count]}: queued, running, done, error
         (the queue after it is dropped, as Jupyter's run all stops), cancelled, dead
  output {sandbox_id, cell_id, output}: `render.render`'s dicts: stream {name, html},
         execute_result / display_data {kind: html|image|text, ...}, error {ename,
         evalue, html}, clear {wait}, truncated {message}
  error  {message, reason, sandbox_id?, tag?}: to the page that asked, or to the room
         when the kernel could not start

Grading never reads any of this: checks look at the sandbox from the host.
"""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from nslab.kernels import kernel_manager

from ..sandboxes.service import ACTIVITY, CLIENT, find_for_terminal, may_use
from .kernels import Notebooks
from .namespace import NAMESPACE, NotebookNamespace, register_notebook
from .scratch import bp

NOTEBOOK = "nslab.notebook"    # app.extensions[NOTEBOOK]: the NotebookNamespace

__all__ = ["init_app", "bp", "NAMESPACE", "NOTEBOOK", "Notebooks", "NotebookNamespace"]


def init_app(app: Flask, socketio: SocketIO) -> NotebookNamespace:
    """The kernels and the `/notebook` namespace of `app` (after `sandboxes.init_app`:
    they use its daemon client and activity tracker). `app.extensions[NOTEBOOK]`."""
    daemon = app.extensions[CLIENT]
    activity = app.extensions[ACTIVITY]
    notebooks = Notebooks(lambda sandbox_id: kernel_manager(daemon, sandbox_id),
                          emit=None, on_activity=activity.touch)
    ns = register_notebook(socketio, notebooks=notebooks, authorize=may_use,
                           find_sandbox=find_for_terminal)
    notebooks.emit = ns.to_sandbox  # the kernels speak to the pages through the namespace

    ns.cut_at_sign_out(app)
    app.extensions[NOTEBOOK] = ns
    app.register_blueprint(bp)
    return ns


def notebooks_of(app: Flask) -> Notebooks:
    """The kernels of `app`."""
    return app.extensions[NOTEBOOK].notebooks
