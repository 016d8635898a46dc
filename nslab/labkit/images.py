"""The images in a sandbox's container store (podman's containers/storage under
/var/lib/containers/storage), read from the host through the sandbox's root: ids, names,
manifest digests, the layer chain and the image config (entrypoint, history).

Everything here is written by the sandbox's root, who is the learner: a check may use it to
find an image and to compare it with a truth it holds on the host (the registry's digest,
the layers of another image, a measured container), never as proof on its own. The files
are parsed defensively: anything malformed is `StoreUnreadable`, never a crash."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

STORE = "/var/lib/containers/storage"
IMAGES_JSON = f"{STORE}/overlay-images/images.json"
LAYERS_JSON = f"{STORE}/overlay-layers/layers.json"
# A chain longer than this is a loop (or a forged store): real images have tens of layers.
MAX_LAYERS = 512

Reader = Callable[[str], bytes]


class StoreUnreadable(Exception):
    """The store's files are there but are not what podman writes."""


@dataclass(frozen=True)
class Layer:
    id: str
    parent: str | None
    diff_digest: str | None  # sha256 of the uncompressed tar: the layer's content
    size: int | None  # bytes, uncompressed
    created: str | None


@dataclass(frozen=True)
class HistoryEntry:
    created_by: str
    empty_layer: bool  # ENV, ENTRYPOINT, ... change the config, not the files


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]
    created: str | None
    history: tuple[HistoryEntry, ...]


@dataclass(frozen=True)
class Image:
    """One image of the store. `names` like "docker.io/library/nginx:latest" (a build's
    tag is "localhost/NAME:TAG"); `digest` the manifest's ("sha256:..."), as `docker images
    --digests` shows; `layers` bottom first."""

    id: str
    names: tuple[str, ...]
    digest: str | None
    created: str | None
    layers: tuple[Layer, ...]
    _read: Reader = field(repr=False, compare=False)

    @property
    def top_layer(self) -> Layer | None:
        return self.layers[-1] if self.layers else None

    def named(self, wanted: str) -> bool:
        """Whether one of its names is `wanted`: "nginx", "nginx:latest", "testnginx:3" and
        the full "docker.io/library/nginx:latest" all name what Docker would run."""
        return any(name_matches(n, wanted) for n in self.names)

    def config(self) -> ImageConfig:
        """The image's config (the OCI config blob podman keeps beside the image); read on
        demand, since most checks need only names and layers."""
        # containers/storage names an image's "big data" files "=" + base64(key); the
        # config's key is its own digest, "sha256:" + the image id.
        key = base64.b64encode(f"sha256:{self.id}".encode()).decode()
        raw = _load(self._read, f"{STORE}/overlay-images/{self.id}/={key}")
        if not isinstance(raw, dict):
            raise StoreUnreadable(f"the config of image {self.id[:12]} is not a JSON object")
        conf = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        history = []
        for h in raw.get("history") or []:
            if isinstance(h, dict):
                history.append(HistoryEntry(str(h.get("created_by", "")),
                                            bool(h.get("empty_layer", False))))
        return ImageConfig(_strings(conf.get("Entrypoint")), _strings(conf.get("Cmd")),
                           _strings(conf.get("Env")) or (), _str(raw.get("created")),
                           tuple(history))


def name_matches(label: str | None, wanted: str) -> bool:
    """"docker.io/library/nginx:latest" is what "nginx" and "nginx:latest" name;
    "localhost/testnginx:1" is what "testnginx:1" names."""
    if label is None:
        return False
    if label == wanted:
        return True
    last = label.rsplit("/", 1)[-1]
    repo, _, tag = label.rpartition(":") if ":" in last else (label, "", "")
    short = repo.rsplit("/", 1)[-1]
    if not tag:
        return wanted in (repo, short)
    return wanted in (repo, short, f"{short}:{tag}", f"{repo}:{tag}") and \
        (":" in wanted.rsplit("/", 1)[-1] or tag == "latest")


def read_images(read: Reader) -> list[Image]:
    """Every image in the store, newest last as podman lists them; [] when the sandbox has
    no store (no engine, or nothing pulled yet)."""
    try:
        images = _load(read, IMAGES_JSON)
    except FileNotFoundError:
        return []
    try:
        layers = _load(read, LAYERS_JSON)
    except FileNotFoundError:
        layers = []
    if not isinstance(images, list) or not isinstance(layers, list):
        raise StoreUnreadable("the image store's index is not a JSON list")
    by_id: dict[str, Layer] = {}
    for raw in layers:
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            by_id[raw["id"]] = Layer(raw["id"], _str(raw.get("parent")),
                                     _str(raw.get("diff-digest")), _int(raw.get("diff-size")),
                                     _str(raw.get("created")))
    out = []
    for raw in images:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            continue
        names = tuple(n for n in raw.get("names") or [] if isinstance(n, str))
        out.append(Image(raw["id"], names, _str(raw.get("digest")), _str(raw.get("created")),
                         _chain(by_id, _str(raw.get("layer"))), read))
    return out


def _chain(by_id: dict[str, Layer], top: str | None) -> tuple[Layer, ...]:
    chain: list[Layer] = []
    seen: set[str] = set()
    while top is not None and top in by_id and top not in seen and len(chain) < MAX_LAYERS:
        seen.add(top)
        chain.append(by_id[top])
        top = by_id[top].parent
    return tuple(reversed(chain))


def _load(read: Reader, path: str):
    data = read(path)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise StoreUnreadable(f"{path} is not JSON (was it edited by hand?)") from None


def _str(v) -> str | None:
    return v if isinstance(v, str) else None


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _strings(v) -> tuple[str, ...] | None:
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(v)
    return None
