"""A kernel's IOPub messages as what a page may show: built here, on the server, so the
page never turns a kernel's bytes into markup itself.

A cell's output is the learner's own code's, but an instructor watching sees it too, and
a lab's cell may print what a file in the sandbox says: it is untrusted. So:
  - text (streams, text/plain, tracebacks) is escaped, and its ANSI colours become
    `<span class="ansi-...">` from a fixed set of classes (`ansi_to_html`);
  - text/html goes through nh3 with a tag and attribute allowlist (no script, no style,
    no event handler, only http(s)/mailto links), last: nothing rewrites it after;
  - image/png and image/jpeg are checked to be what they say (base64 of the format's
    magic bytes) and go to the page as base64 for a `data:` URL, never as markup.

`render(msg_type, content)` gives the dict the page receives (`type` plus its fields), or
None for a message the page does not show.
"""

from __future__ import annotations

import base64
import binascii
import html
import re

import nh3

# Tags and attributes a notebook's HTML (pandas tables, IPython.display.HTML) may keep.
HTML_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup",
             "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5",
             "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s",
             "samp", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody",
             "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"}
HTML_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"},
                   "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"},
                   "ol": {"start"}, "*": {"title"}}
# The app's CSP allows images from itself and data: URLs only; an http image in a cell's
# HTML would not load anyway, and a data: image is what a notebook embeds.
HTML_URL_SCHEMES = {"http", "https", "mailto", "data"}
IMAGE_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
# Richest first, as Jupyter picks: html, then a picture, then text.
PREFERENCE = ("text/html", "image/png", "image/jpeg", "text/plain")

# SGR codes → classes; the page's CSS colours them (static/css/app.css, `.ansi-*`).
_COLOURS = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
# Any other escape or control sequence (cursor moves, titles) is dropped, not shown.
_OTHER_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-ln-z@`]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*$", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def ansi_to_html(text: str) -> str:
    """`text` escaped, its SGR colours, bold, italic and underline as spans with classes
    `ansi-{colour}-fg|bg`, `ansi-bright-{colour}-fg|bg`, `ansi-bold`, `ansi-italic`,
    `ansi-underline`; other escape sequences and control characters left out."""
    text = _OTHER_ESCAPE.sub("", text)
    out: list[str] = []
    state = {"fg": None, "bg": None, "bold": False, "italic": False, "underline": False}
    pos = 0
    for m in _SGR.finditer(text):
        out.append(_span(text[pos:m.start()], state))
        _apply(m.group(1), state)
        pos = m.end()
    out.append(_span(text[pos:], state))
    return "".join(out)


def _apply(params: str, state: dict) -> None:
    codes = [int(c) if c.isdigit() else 0 for c in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        c = codes[i]
        if c == 0:
            state.update(fg=None, bg=None, bold=False, italic=False, underline=False)
        elif c == 1:
            state["bold"] = True
        elif c == 3:
            state["italic"] = True
        elif c == 4:
            state["underline"] = True
        elif c == 22:
            state["bold"] = False
        elif c == 23:
            state["italic"] = False
        elif c == 24:
            state["underline"] = False
        elif 30 <= c <= 37:
            state["fg"] = _COLOURS[c - 30]
        elif 40 <= c <= 47:
            state["bg"] = _COLOURS[c - 40]
        elif 90 <= c <= 97:
            state["fg"] = "bright-" + _COLOURS[c - 90]
        elif 100 <= c <= 107:
            state["bg"] = "bright-" + _COLOURS[c - 100]
        elif c == 39:
            state["fg"] = None
        elif c == 49:
            state["bg"] = None
        elif c in (38, 48):
            # 256-colour (5;n) and true colour (2;r;g;b) have no class: skip their
            # arguments, keep the colour there was.
            kind = codes[i + 1] if i + 1 < len(codes) else None
            i += 2 if kind == 5 else 4 if kind == 2 else 0
        i += 1


def _span(text: str, state: dict) -> str:
    if not text:
        return ""
    text = html.escape(_CONTROL.sub("", text), quote=False)
    classes = [f"ansi-{state[k]}-{k}" for k in ("fg", "bg") if state[k]]
    classes += [f"ansi-{k}" for k in ("bold", "italic", "underline") if state[k]]
    return f'<span class="{" ".join(classes)}">{text}</span>' if classes else text


def clean_html(markup: str) -> str:
    """A cell's HTML with only what HTML_TAGS and HTML_ATTRIBUTES allow."""
    return nh3.clean(markup, tags=HTML_TAGS, attributes=HTML_ATTRIBUTES,
                     url_schemes=HTML_URL_SCHEMES, link_rel="noopener noreferrer nofollow",
                     strip_comments=True, attribute_filter=_data_urls)


def _data_urls(tag: str, attribute: str, value: str) -> str | None:
    # A picture is embedded (a data: URL of a raster format), never fetched: an img of
    # this site's own URLs would make the viewer's browser send requests with their
    # cookies. data: is for a picture only: a link to a data: document (HTML, SVG with a
    # script) is dropped.
    if tag == "img" and attribute == "src":
        return value if _DATA_IMAGE.match(value.strip()) else None
    if attribute == "href" and value.strip().lower().startswith("data:"):
        return None
    return value


def image(mime: str, data) -> str | None:
    """The base64 of a picture that is what `mime` says, else None."""
    if not isinstance(data, str):
        return None
    compact = "".join(data.split())
    try:
        head = base64.b64decode(compact[:64], validate=True)
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return compact if head.startswith(IMAGE_MAGIC[mime]) else None


def _text(value) -> str:
    # nbformat allows a multi-line string as a list of lines.
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else ""


def mime_bundle(data) -> dict | None:
    """The one representation of a display_data / execute_result bundle the page shows."""
    if not isinstance(data, dict):
        return None
    for mime in PREFERENCE:
        if mime not in data:
            continue
        if mime == "text/html":
            return {"kind": "html", "html": clean_html(_text(data[mime]))}
        if mime in IMAGE_MAGIC:
            b64 = image(mime, data[mime])
            if b64 is not None:
                return {"kind": "image", "mime": mime, "data": b64}
            continue
        return {"kind": "text", "html": ansi_to_html(_text(data[mime]))}
    return None


def render(msg_type: str, content: dict) -> dict | None:
    """What the page shows for one IOPub message of a cell, or None."""
    if not isinstance(content, dict):
        return None
    if msg_type == "stream":
        name = content.get("name") if content.get("name") in ("stdout", "stderr") else "stdout"
        return {"type": "stream", "name": name, "html": ansi_to_html(_text(content.get("text")))}
    if msg_type in ("display_data", "execute_result"):
        shown = mime_bundle(content.get("data"))
        if shown is None:
            return None
        out = {"type": msg_type, **shown}
        count = content.get("execution_count")
        if msg_type == "execute_result" and isinstance(count, int):
            out["execution_count"] = count
        return out
    if msg_type == "error":
        lines = content.get("traceback")
        trace = "\n".join(_text(line) for line in lines) if isinstance(lines, list) else ""
        return {"type": "error", "ename": str(content.get("ename", ""))[:200],
                "evalue": str(content.get("evalue", ""))[:2000],
                "html": ansi_to_html(trace or f"{content.get('ename')}: {content.get('evalue')}")}
    if msg_type == "clear_output":
        return {"type": "clear", "wait": bool(content.get("wait"))}
    return None


def size(output: dict) -> int:
    """Roughly the bytes an output costs the page (what the per-cell bound counts)."""
    return sum(len(v) for v in output.values() if isinstance(v, str))
