"""The spawner: the single-threaded fork server that builds sandboxes and starts processes
inside them, forked by the daemon before any thread or heavy import exists.

- `spec`: what the daemon asks (`BootSpec`, `ParkSpec`, `ExecSpec`, ...) and every message
  between the two sides (JSON over SOCK_SEQPACKET, descriptors as SCM_RIGHTS).
- `server`: the fork server's loop (`Server`): each request done in a forked child whose
  reports the loop reads with a deadline, so one slow sandbox holds up no other request;
  reaps every process and reports its exit; keeps the warm slots.
- `rootfs`: in a forked child, builds a sandbox: user namespace, root filesystem, PID 1.
- `enter`: in a forked child, starts a process inside a running sandbox (exec).
- `client`: `SpawnerClient`, the daemon's asyncio handle on the spawner, and `ExecHandle`.

Nothing is imported here: `nslab sandboxd` imports `sandbox.spawner.client` before anything
else, and what it pulls in is what every fork copies.
"""
