"""One sampler thread per watched thing, shared by every page watching it: the live gauges
keep one per sandbox (`gauges.sampler.Gauges`), the live classroom one per course
(`classroom.usage.Usage`). The first page's watch makes and starts it, the last page's
leaving stops it; a page watches one thing at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol


class Sampler(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


class StoppableSampler:
    """What a sampler's loop checks: `stop()` asks it to end (from any thread), `stopped`
    says whether it was asked, `_stop.wait(seconds)` sleeps until the next round or the
    stop, whichever comes first."""

    def __init__(self):
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class SharedSamplers:
    """The samplers of an app by key, and which pages watch which key. Subclasses say how
    a sampler is made (`_make`). Safe from any thread."""

    def __init__(self, start: Callable[..., object] | None = None):
        self._start = start or (lambda fn: threading.Thread(target=fn, daemon=True).start())
        self._lock = threading.Lock()
        self.samplers: dict[Hashable, Any] = {}
        self.watchers: dict[Hashable, set[Hashable]] = {}   # key -> page sids
        self.watching: dict[Hashable, Hashable] = {}        # page sid -> key

    def _make(self, key: Hashable, seed: Any) -> Sampler:
        raise NotImplementedError

    def watch(self, page: Hashable, key: Hashable, seed: Any = None) -> bool:
        """`page` watches `key` (and no longer what it watched before); `seed` goes to a
        sampler made now. True when this started the key's sampler."""
        with self._lock:
            if self.watching.get(page) == key:
                return False   # a page asking again (a retry) keeps its sampler going
            self._leave(page)
            self.watching[page] = key
            self.watchers.setdefault(key, set()).add(page)
            if key in self.samplers:
                return False
            sampler = self.samplers[key] = self._make(key, seed)
        self._start(sampler.run)
        return True

    def unwatch(self, page: Hashable) -> None:
        with self._lock:
            self._leave(page)

    def _leave(self, page: Hashable) -> None:
        key = self.watching.pop(page, None)
        if key is None:
            return
        pages = self.watchers.get(key)
        pages.discard(page)
        if not pages:
            del self.watchers[key]
            self.samplers.pop(key).stop()

    def close(self) -> None:
        """Stop every sampler (the app is going away)."""
        with self._lock:
            for sampler in self.samplers.values():
                sampler.stop()
            self.samplers.clear()
            self.watchers.clear()
            self.watching.clear()
