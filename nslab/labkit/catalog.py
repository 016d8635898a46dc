"""Where the labs are: the labs folder, the lab ids in it, and a lab by its id, loaded
again only when its files changed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .loader import load_lab
from .model import LAB_ID_RE, Lab


def default_labs_dir() -> Path:
    """$NSLAB_LABS, else the labs/ folder of this source tree."""
    return Path(os.environ.get("NSLAB_LABS")
                or Path(__file__).resolve().parent.parent.parent / "labs")


def lab_ids(labs_dir: str | Path) -> list[str]:
    base = Path(labs_dir)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and (p / "lab.yaml").is_file() and LAB_ID_RE.match(p.name))


def find_labs(target: str | Path | None) -> list[Path]:
    """PATH may be one lab's folder or a folder of labs; default: the labs folder."""
    base = Path(target) if target else default_labs_dir()
    if (base / "lab.yaml").is_file():
        return [base]
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such lab or labs folder")
    return [base / name for name in lab_ids(base)]


_cache: dict[Path, tuple[tuple, Lab]] = {}
_cache_lock = threading.Lock()


def _fingerprint(folder: Path) -> tuple:
    try:
        return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                            for p in folder.rglob("*") if p.is_file()
                            and "__pycache__" not in p.parts))
    except OSError:
        return ()


def lab(labs_dir: str | Path, lab_id: str) -> Lab | None:
    """The lab `lab_id` of `labs_dir`, loaded again only when its files changed; None if
    there is no such folder."""
    if not LAB_ID_RE.match(lab_id or ""):
        return None
    folder = Path(labs_dir) / lab_id
    if not folder.is_dir():
        return None
    key = _fingerprint(folder)
    with _cache_lock:
        hit = _cache.get(folder)
        if hit and hit[0] == key:
            return hit[1]
    loaded = load_lab(folder)
    with _cache_lock:
        _cache[folder] = (key, loaded)
    return loaded
