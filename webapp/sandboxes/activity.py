"""Activity per sandbox, in memory: when each last saw a keystroke (or a page opened, a
file moved, a check run), and which ones' pages were warned that an idle stop is near.

One web process serves every page, so memory is the whole truth; the idle sweeper
(`idle.py`) writes it to `SandboxAssignment.last_active` now and then. The tracker lives
on the app (`sandboxes.tracker()`); nothing of it is module state.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ActivityTracker:
    """Noted activity and idle warnings; every method is cheap and safe from any thread
    (each is one dict or set operation, atomic under the GIL), so `touch` can run on
    every keystroke, outside any app context."""

    def __init__(self, on_all_clear: Callable[[str], None] | None = None):
        # Called with a sandbox id when activity takes back its idle warning.
        self._on_all_clear = on_all_clear or (lambda sandbox_id: None)
        self._last: dict[str, float] = {}   # sandbox id -> time.time() of its last activity
        self._warned: set[str] = set()

    def touch(self, sandbox_id: str | None) -> None:
        """Note activity now: the sandbox's idle stop starts counting again, and a warning
        its pages had is taken back."""
        self.touch_at(sandbox_id, time.time())

    def touch_at(self, sandbox_id: str | None, when: float) -> None:
        """Note activity seen at `when` (epoch seconds; a kernel's, reported by sandboxd),
        unless later activity was noted already."""
        if not sandbox_id or when <= self._last.get(sandbox_id, 0.0):
            return
        self._last[sandbox_id] = when
        try:
            self._warned.remove(sandbox_id)
        except KeyError:
            return
        self._on_all_clear(sandbox_id)

    def last(self, sandbox_id: str) -> float | None:
        """When activity was last noted (epoch seconds); None if never in this process."""
        return self._last.get(sandbox_id)

    def warn(self, sandbox_id: str) -> None:
        """Its pages were told an idle stop is near; the next activity takes it back."""
        self._warned.add(sandbox_id)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox was stopped or destroyed: nothing about it is kept."""
        self._last.pop(sandbox_id, None)
        self._warned.discard(sandbox_id)
