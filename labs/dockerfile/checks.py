"""Checks of the dockerfile lab.

What is graded, and where it is read:
- the containers (their PID 1, namespaces, listening sockets) from the kernel, by sandboxd
  on the host (`sb.containers`);
- the pages a published port serves, by an HTTP GET the host makes to the sandbox
  (`sb.http_get`), as a browser would;
- the images and their layers from podman's store (`sb.images()`), and a layer's files
  from its directory in the store (`overlay/<layer id>/diff/...`), read from the host
  through the sandbox's root.

The store is written by the sandbox's root, who is the learner, so it is never taken alone
as proof: a built image must also hold the learner's page in a layer of its own (not in a
base image's), a container's label only finds the container whose PID 1 and sockets the
kernel shows, and the cache is proven by a layer two different images share, whose
content (the moment its RUN ran) would differ had it been built twice. A container's
image label says which image it runs; that the container's root really holds that
image's page is checked by reading the file through the container's own root.
No check runs a program inside the sandbox.
"""

from __future__ import annotations

import re

from nslab.labkit.check import Fail
from nslab.labkit.glassbox import glass_box
from nslab.labkit.images import STORE

# Where nginx serves pages from: the nginx image's (and Docker's official image's) root,
# and Debian's nginx package's, which the document's Dockerfile installs.
PAGE_PATHS = ("usr/share/nginx/html/test.html", "var/www/html/test.html")
SHELLS = ("sh", "bash", "dash")
TITLE_RE = re.compile(r"<title>(.*?)</title>", re.S | re.I)


# ----------------------------------------------------------------- helpers

def _layer_file(sb, layer, path: str) -> bytes | None:
    """The file `path` (relative, no leading /) as layer `layer` added or changed it, read
    from the layer's directory in the store; None if that layer did not touch it."""
    try:
        return sb.read_file(f"{STORE}/overlay/{layer.id}/diff/{path}")
    except FileNotFoundError:
        return None


def _topmost(sb, image, paths) -> tuple[int, str, bytes] | None:
    """(index in image.layers, path, content) of the highest layer holding one of
    `paths`: the version a container of the image sees."""
    for i in range(len(image.layers) - 1, -1, -1):
        for path in paths:
            data = _layer_file(sb, image.layers[i], path)
            if data is not None:
                return i, path, data
    return None


def _local_names(sb) -> str:
    names = sorted(n for i in sb.images() for n in i.names)
    return ", ".join(f"`{n}`" for n in names) or "none"


def _title(html: bytes | str) -> str:
    text = html.decode(errors="replace") if isinstance(html, bytes) else html
    m = TITLE_RE.search(text)
    return " ".join((m.group(1) if m else text).split())[:60]


def _pulled_ids(sb) -> dict[str, str]:
    """Image id -> name of the images pulled from the registry (not built here)."""
    return {i.id: n for i in sb.images() for n in i.names if not n.startswith("localhost/")}


def _containers_of(sb, name: str) -> list:
    return [c for c in sb.containers if _label_names(c.image, name)]


def _label_names(label: str | None, name: str) -> bool:
    """Whether a container's image label names the local build `name` ("testnginx:7")."""
    return label is not None and label.rsplit("/", 1)[-1] == name


def _not_a_tag_of_a_pulled_image(sb, image, name: str) -> None:
    pulled = _pulled_ids(sb)
    if image.id in pulled:
        raise Fail(f"`{name}` is the image `{pulled[image.id]}` under another name (same "
                   f"image id {image.id[:12]}): `docker tag` adds a name, it builds nothing. "
                   "Build your image from your Dockerfile with `docker build`.")


# ----------------------------------------------------------------- build-run

def build_run(sb, params):
    tag, page = params["tag"], params["page"]
    name = f"testnginx:{tag}"
    image = sb.image(name)
    if image is None:
        raise Fail(f"There is no image `{name}` in your container store (images there: "
                   f"{_local_names(sb)}). Build it with `docker build -f Dockerfile -t "
                   f"{name} .` in the folder that holds your Dockerfile and test.html.")
    _not_a_tag_of_a_pulled_image(sb, image, name)
    found = _topmost(sb, image, PAGE_PATHS)
    if found is None:
        raise Fail(f"No layer of `{name}` holds a test.html where nginx serves pages "
                   "(`/usr/share/nginx/html` in the nginx image, `/var/www/html` for "
                   "Debian's nginx package): add a `COPY test.html ...` line and build again.")
    index, path, content = found
    if page not in content.decode(errors="replace"):
        raise Fail(f"The test.html in `{name}` (/{path}, layer {index + 1} of "
                   f"{len(image.layers)}) has the title {_title(content)!r}, without "
                   f"`Test {page}`: the task asks for your page, which says Test {page}. "
                   "Edit test.html, build again and run the new image.")
    mine = [c for c in _containers_of(sb, name) if c.listens(80)]
    if not mine:
        others = [c for c in sb.containers if c.listens(80)]
        if others:
            c = others[0]
            raise Fail(f"The container that listens on port 80 runs the image "
                       f"`{c.image or 'unknown'}`, not `{name}`. A page copied or mounted "
                       f"into another image's container is not your image at work: run "
                       f"`docker run -d -p 8081:80 {name}`.")
        stopped = _containers_of(sb, name)
        if stopped:
            raise Fail(f"A container of `{name}` runs (PID 1 `{stopped[0].main.comm}`), but "
                       "nothing listens on port 80 in its network namespace: is nginx "
                       "running in the foreground (`daemon off;`)?")
        raise Fail(f"No container of `{name}` is running. Start one with `docker run -d "
                   f"-p 8081:80 {name}`.")
    c = mine[0]
    try:
        inside = sb.read_file(f"/{path}", pid=c.main.sandbox_pid)
    except FileNotFoundError:
        inside = None
    if inside != content:
        raise Fail(f"The container of `{name}` does not serve the image's test.html: its "
                   f"/{path} is {'missing' if inside is None else 'another file'}. Was it "
                   "replaced with `-v` or `docker cp`? Run the image as it was built.")
    got = sb.http_get(8081, "/test.html")
    if got is None:
        raise Fail("Nothing answers HTTP on port 8081 of your sandbox: publish the "
                   f"container's port 80 there with `docker run -d -p 8081:80 {name}`.")
    if got.status == 404:
        raise Fail(f"GET /test.html on port 8081 answered 404 Not Found: your image has "
                   f"/{path}, but nginx in it serves pages from another folder. The nginx "
                   "image serves /usr/share/nginx/html; Debian's nginx package (the "
                   "document's apt-get install) serves /var/www/html. COPY test.html to the "
                   "folder your nginx serves from.")
    if got.status != 200 or page not in got.text:
        raise Fail(f"GET /test.html on port 8081 answered {got.status} {got.reason} "
                   f"({_title(got.body)!r}), not your page: is port 8081 published to the "
                   f"container of `{name}` (`-p 8081:80`)?")
    pid1 = (f" Its PID 1 is `{' '.join(c.main.cmdline)[:60]}`, not nginx: the next step "
            "is about why." if c.main.comm in SHELLS else "")
    return (f"Right: `{name}` (image {image.id[:12]}) has {len(image.layers)} layers, and "
            f"layer {index + 1} added /{path}. The host fetched /test.html from port 8081 and "
            f"got your page, served by nginx in the container.{pid1}\n\n"
            + glass_box(sb, c))


# ----------------------------------------------------------------- exec-form

def exec_form(sb, params):
    name, port = "testnginx:exec", int(params["port"])
    image = sb.image(name)
    if image is None:
        raise Fail(f"There is no image `{name}` in your container store (images there: "
                   f"{_local_names(sb)}). Build it with `docker build -t {name} .`.")
    _not_a_tag_of_a_pulled_image(sb, image, name)
    mine = _containers_of(sb, name)
    if not mine:
        raise Fail(f"No container of `{name}` is running. Start one with `docker run -d "
                   f"-p {port}:80 {name}`.")
    entry = image.config().entrypoint or ()
    shell_form = len(entry) >= 2 and entry[0] in ("/bin/sh", "sh") and entry[1] == "-c"
    c = mine[0]
    main = c.main
    if main.comm in SHELLS:
        raise Fail(f"PID 1 of your container is `{' '.join(main.cmdline)[:80]}`: a shell, "
                   "with nginx as its child. That is what the shell form (`ENTRYPOINT nginx "
                   "-g ...`) makes: Docker wraps the line in `/bin/sh -c`. Write the "
                   "ENTRYPOINT as a JSON array and build again.")
    if main.comm != "nginx":
        raise Fail(f"PID 1 of your container is `{main.comm}`, not nginx.")
    if shell_form:
        raise Fail(f"PID 1 is nginx, but the image `{name}` still has the shell form: its "
                   f"ENTRYPOINT is `{' '.join(entry)[:80]}`. (`--entrypoint` at `docker "
                   "run`, or an `exec` inside the shell line, also puts nginx at PID 1; the "
                   "task asks for the image's own exec form, a JSON array.)")
    got = sb.http_get(port, "/")
    if got is None or got.status != 200:
        raise Fail(f"Nothing serves a page on port {port} of your sandbox"
                   + ("" if got is None else f" ({got.status} {got.reason})")
                   + f": publish the container's port 80 with `-p {port}:80`.")
    return (f"Right: PID 1 of your `{name}` container is nginx itself "
            f"(`{' '.join(main.cmdline)[:60]}`), started by `{main.parent_comm or '?'}`, so "
            f"`docker stop`'s signal reaches nginx directly; port {port} answered "
            f"{got.status}.\n\n" + glass_box(sb, c))


# ----------------------------------------------------------------- layers

def layers(sb, params, answer):
    image = sb.image("layers")
    if image is None:
        raise Fail("No image named `layers` is in your container store: build it first "
                   "(`docker build -t layers /root/layers`), then count its layers.")
    n = len(image.layers)
    a = answer.strip()
    if not a.isdigit():
        raise Fail(f"{a[:40]!r} is not a number: answer with how many layers `layers` has.")
    if int(a) == n:
        lines = [f"| {i + 1} | `{(l.diff_digest or '?')[:19]}` | {l.size or 0} bytes |"
                 for i, l in enumerate(image.layers)]
        made = [h.created_by.replace("/bin/sh -c ", "").replace("#(nop) ", "")[:60]
                for h in image.config().history if not h.empty_layer]
        return (f"Right: {n} layers, bottom first, each a directory in "
                f"`{STORE}/overlay/`:\n\n| # | content digest | size |\n|---|---|---|\n"
                + "\n".join(lines)
                + "\n\nThe instructions that made them: "
                + "; ".join(f"`{m}`" for m in made)
                + ". FROM brings the base image's layer; LABEL, ENV and ENTRYPOINT only "
                  "change the image's config.")
    if int(a) == 1:
        raise Fail("An image is a stack of layers, not one: `docker history layers` lists "
                   "what each instruction added; count the rows that added files (size "
                   "above 0).")
    raise Fail(f"`layers` does not have {a} layers. Not every instruction makes one: only "
               "those that change files do (the base image's, RUN, COPY); LABEL, ENV and "
               "ENTRYPOINT change only the config.")


# ----------------------------------------------------------------- cache

def _find(sb, image, path: str) -> tuple[int, bytes] | None:
    hit = _topmost(sb, image, (path,))
    return (hit[0], hit[2]) if hit else None


def cache(sb, params):
    v2 = params["v2"]
    one, two = sb.image("site:1"), sb.image("site:2")
    missing = [n for n, i in (("site:1", one), ("site:2", two)) if i is None]
    if missing:
        raise Fail(f"No image {' or '.join(f'`{m}`' for m in missing)} in your container "
                   f"store (images there: {_local_names(sb)}). Build site:1, change the "
                   "page, then build site:2, both from /root/site.")
    if one.id == two.id:
        raise Fail(f"site:2 is the same image as site:1 ({one.id[:12]}): a new name, not a "
                   "new build. Change index.html and build again.")
    found = {}
    for n, image in (("site:1", one), ("site:2", two)):
        slow, page = _find(sb, image, "srv/built-at"), _find(sb, image, "srv/index.html")
        if slow is None or page is None:
            raise Fail(f"`{n}` has no layer with /srv/built-at and /srv/index.html: build "
                       "it from the Dockerfile in /root/site.")
        found[n] = (slow, page)
    (slow1, _), (slow2, page2) = found["site:1"], found["site:2"]
    if v2 not in page2[1].decode(errors="replace"):
        raise Fail(f"The page in site:2 says {page2[1].decode(errors='replace').strip()[:60]!r}"
                   f": change index.html to say {v2} before building site:2.")
    layer1, layer2 = one.layers[slow1[0]], two.layers[slow2[0]]
    if layer1.id == layer2.id:
        return (f"Right: site:2 ({two.id[:12]}) is a new image with your new page, and its "
                f"slow layer is site:1's own layer `{layer1.id[:12]}`: the RUN did not run "
                f"again (both say `{slow1[1].decode(errors='replace').strip()}`). The builder "
                "reused every step up to the first one whose input changed, your COPY, which "
                "now comes last.")
    when1 = slow1[1].decode(errors="replace").strip()
    when2 = slow2[1].decode(errors="replace").strip()
    if page2[0] < slow2[0]:
        raise Fail(f"In site:2 the slow RUN comes after COPY index.html, so it ran again "
                   f"({when1!r} in site:1, {when2!r} in site:2). The cache stops at the first "
                   "step whose input changed, and every step after it is built again: move "
                   "the COPY below the slow RUN, then build site:1 and site:2 again.")
    raise Fail(f"site:2's slow layer is not site:1's: the RUN ran again ({when1!r} in "
               f"site:1, {when2!r} in site:2), though it comes before the COPY. Was it built "
               "with `--no-cache`, or was the RUN line changed in between? Build site:2 "
               "again, plainly.")
