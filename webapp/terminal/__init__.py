"""The live terminal: xterm.js ⇄ socket.io `/terminal` ⇄ a relay thread ⇄ sandboxd ⇄ PTY.

`namespace` serves the pages' events; `relay` is the thread between one page and the
daemon's attach stream (`sandbox.client.Client.attach`).

Events from the page (several terminals, the page's tabs, share one connection and are
keyed by exec id):
  open   {sandbox_id | course+lab, rows, cols, exec_id?, readonly?, guest?, tag?}
                                    (guest: typing in someone else's shell, a take-over:
                                    only that live shell, never a new one, and the page's
                                    size never resizes it)
                                    → opened {tag, exec_id, sandbox_id, readonly, reattached}
  input  (exec_id, seq, text[, binary])  keystrokes, numbered from 0 per open: text is
                                    sent as UTF-8; with binary, each char is one byte.
                                    A new shell's keys are held until its first output
                                    (the page keeps those typed before `opened`)
  resize {exec_id, rows, cols}
  ack    {exec_id, bytes}           bytes xterm has written (its write callback)
  close  {exec_id, kill?}           detach; with kill, end the shell as well
  touch  {sandbox_id}               "keep working": activity without a keystroke
Events to the page: opened, output (exec_id, bytes), exit {exec_id, exit_code},
error {message, tag?, exec_id?}; and, to every page attached to a sandbox (a socket.io
room per sandbox, see `TerminalNamespace.to_sandbox`), what the app says about it:
idle {sandbox_id, seconds_left} (an idle stop is near; seconds_left null: not any
more), stopped {sandbox_id, reason} (webapp/sandboxes/idle.py).

Bytes are never decoded here: a UTF-8 sequence split across two reads stays split until
xterm's decoder joins it. Output is binary socket.io (a raw WebSocket frame, no base64).

Flow control, a credit window per viewer: the relay stops reading the daemon's WebSocket
while more than WINDOW bytes it sent to that page are unacknowledged. The daemon's send
then blocks, its viewer queue passes its high mark and it stops reading the PTY, so the
writer inside the sandbox blocks in the kernel: `yes` costs neither memory nor a flooded
browser. Read-only viewers (an instructor shadowing) never pause the learner: the
daemon drops one that falls behind and the relay reattaches it with the scrollback.
At most WINDOW + CHUNK bytes are unacknowledged per viewer, plus one daemon frame held.

A page that reconnects opens with the exec id it had: the relay attaches to the same
shell, the daemon replays its scrollback ring, then the live stream follows.
"""

from __future__ import annotations

from .namespace import NAMESPACE, TerminalNamespace, register_terminal
from .relay import CHUNK, WINDOW, Relay

__all__ = ["NAMESPACE", "CHUNK", "WINDOW", "Relay", "TerminalNamespace", "register_terminal"]
