"""Lesson Markdown to safe HTML; shell code blocks get a "Run in terminal" button.

Two layers: markdown-it escapes raw HTML in the source (html=False), and nh3 then keeps
only the tags and attributes this renderer itself produces. A lesson is written by an
instructor, but it is shown to every learner, so it is treated as untrusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup

from nslab.labkit.model import ASSET_PART_RE, LAB_ID_RE, ONLY_CONDITIONS, Lab
from nslab.labkit.params import expand, split_step

from .progress import exercise_state, step_states

# Fences whose text is meant to be typed at a shell prompt.
RUNNABLE = {"", "sh", "bash", "shell", "console", "terminal", "zsh"}
PROMPT = re.compile(r"^\s*[$#] ")
LANGUAGE = re.compile(r"^[a-z0-9_+-]{1,32}$")

TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "em", "strong", "del", "s",
        "code", "pre", "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody",
        "tr", "th", "td", "div", "span", "button", "kbd"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"},
              "code": {"class"}, "div": {"class"}, "span": {"class"},
              "button": {"type", "class", "data-command", "title"},
              "th": {"style"}, "td": {"style"}}
# How an `::: only` block is labelled where both are shown (the instructor's view, or a
# learner's while the daemon cannot say which cgroup version its host runs).
ONLY_LABELS = {"cgroup-v1": "cgroup v1 hosts", "cgroup-v2": "cgroup v2 hosts"}


def _fence(renderer, tokens, idx, options, env) -> str:
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1)[0].lower() if token.info.strip() else ""
    language = info if LANGUAGE.match(info) else ""
    cls = f' class="language-{language}"' if language else ""
    block = f"<pre><code{cls}>{escapeHtml(token.content)}</code></pre>"
    if info not in RUNNABLE:
        return block + "\n"
    command = shell_commands(token.content, console=info == "console")
    # The button sits in a bar above the code, never over it: a long first line stays
    # readable however narrow the lesson is.
    return (f'<div class="code-block"><div class="code-bar"><span class="code-lang">'
            f'{escapeHtml(language or "shell")}</span><button type="button" '
            f'class="run-in-terminal" data-command="{escapeHtml(command)}" '
            f'title="Type this into the terminal">Run in terminal</button></div>{block}'
            f'</div>\n')


def shell_commands(text: str, console: bool = False) -> str:
    """What the button types: the block itself, or for a `console` transcript only the
    lines after a `$ ` or `# ` prompt (the rest is the command's output)."""
    lines = text.rstrip("\n").splitlines()
    if console and any(PROMPT.match(line) for line in lines):
        lines = [PROMPT.sub("", line, count=1) for line in lines if PROMPT.match(line)]
    return "\n".join(lines)


def _assets(state) -> None:
    """`assets/x.svg` in an image or link -> the lab's asset URL (env["assets"]), so a
    lesson's pictures load from the lab whatever page shows them."""
    base = state.env.get("assets") if isinstance(state.env, dict) else None
    if not base:
        return
    for token in state.tokens:
        for child in token.children or []:
            key = "src" if child.type == "image" else "href" if child.type == "link_open" \
                else None
            url = child.attrs.get(key) if key else None
            if isinstance(url, str) and url.startswith("assets/"):
                parts = url[len("assets/"):].split("/")
                if all(ASSET_PART_RE.match(p) for p in parts):
                    child.attrs[key] = base + "/".join(quote(p) for p in parts)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("fence", _fence)
    md.core.ruler.push("nslab_assets", _assets)
    return md


_md = _parser()


def _clean(html: str) -> Markup:
    return Markup(nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES,
                            filter_style_properties={"text-align"},
                            url_schemes={"http", "https", "mailto"}))


def render_markdown(source: str, *, assets: str | None = None) -> Markup:
    """Safe HTML of `source`; `assets`: the URL prefix of its lab's assets/ folder."""
    return _clean(_md.render(source, {"assets": assets}))


def render_inline(source: str) -> Markup:
    """One line of Markdown (a summary: `code`, *emphasis*, links) without a paragraph."""
    return _clean(_md.renderInline(source or ""))


@dataclass(frozen=True)
class Lesson:
    lab_id: str
    title: str
    html: Markup
    found: bool


def load_lesson(labs_dir: str | Path, lab_id: str) -> Lesson:
    """The lesson of `lab_id` from `<labs_dir>/<lab_id>/lesson.md` (or README.md); a
    placeholder while the lab's content is not written (labs arrive with issue 4)."""
    if not LAB_ID_RE.match(lab_id):
        raise ValueError(f"bad lab id {lab_id!r}")
    folder = Path(labs_dir) / lab_id
    for name in ("lesson.md", "README.md"):
        path = folder / name
        if path.is_file():
            source = path.read_text(encoding="utf-8")
            break
    else:
        source = (f"# {lab_id}\n\nThis lab's lesson is not written yet. The terminal on the "
                  "right is a real Linux sandbox; try:\n\n```sh\nuname -a\n```\n")
        return Lesson(lab_id, lab_id, render_markdown(source), found=False)
    heading = re.search(r"^#\s+(.+?)\s*#*\s*$", source, re.MULTILINE)
    return Lesson(lab_id, heading.group(1) if heading else lab_id, render_markdown(source),
                  found=True)


# ----------------------------------------------------------------- structured labs

@dataclass
class ExerciseView:
    id: str
    title: str
    points: int
    kind: str
    text: Markup
    choices: list[str] | None
    hints_total: int
    hints_open: list[Markup]
    status: str
    score: float
    last_feedback: Markup | None
    last_passed: bool | None
    last_answer: str | None
    state: dict  # what a try and a hint cost now (progress.exercise_state)
    walkthrough: Markup | None  # once passed (or for the instructor)
    has_walkthrough: bool


@dataclass
class CellView:
    """A runnable Python cell of a step (the page runs it in the learner's kernel)."""

    id: str       # unique in the page: the step's id and the cell's index in it
    source: str   # with the learner's values filled in
    cell: bool = True  # what the template tells a cell from an exercise by


@dataclass
class StepView:
    id: str
    number: int
    title: str
    unlocked: bool
    passed: bool
    parts: list  # Markup (lesson text), ExerciseView or CellView, in reading order


def lesson_steps(lab: Lab, params: dict, rows: dict, last: dict, *, all_open: bool = False,
                 cgroup_version: int | None = None, assets: str | None = None
                 ) -> list[StepView]:
    """The steps of a lab for one learner: their values filled in (never a hidden one),
    each exercise with its status, open hints, last feedback and (once passed) its
    walkthrough; locked steps marked. `::: only` blocks for another cgroup version than
    `cgroup_version` are left out; with None, both are shown, labelled."""
    states = {s.id: s for s in step_states(lab, rows)}
    params = lab.visible_params(params)
    wanted = next((c for c, v in ONLY_CONDITIONS.items() if v == cgroup_version), None)

    def md(text: str | None) -> Markup:
        return render_markdown(expand(text, params), assets=assets)

    out = []
    for number, step in enumerate(lab.steps, 1):
        parts = []
        for part in split_step(step.source):
            if part.kind == "cell":
                # Both hosts' cells are shown where both texts are (labelled by the text
                # around them); a learner gets only their host's.
                if part.only is None or part.only == wanted or wanted is None:
                    parts.append(CellView(f"{step.id}.{part.index}",
                                          expand(part.value, params)))
                continue
            if part.kind == "markdown":
                if part.only is None or part.only == wanted:
                    parts.append(md(part.value))
                elif wanted is None:
                    parts.append(Markup('<div class="only-block" data-only="{}"><span '
                                        'class="only-label">Only on {}</span>{}</div>').format(
                        part.only, ONLY_LABELS.get(part.only, part.only), md(part.value)))
                continue
            ex, row, attempt = lab.exercises[part.value], rows.get(part.value), \
                last.get(part.value)
            used = row.hints_used if row else 0
            status = row.status if row else "not_started"
            parts.append(ExerciseView(
                id=ex.id, title=expand(ex.title, params), points=ex.points, kind=ex.kind, text=md(ex.text),
                choices=[expand(c, params) for c in ex.quiz.choices]
                if ex.is_choice else None,
                hints_total=len(ex.hints),
                hints_open=[md(h) for h in ex.hints[:used]],
                status=status, score=row.points if row else 0,
                last_feedback=render_markdown(attempt.feedback) if attempt else None,
                last_passed=attempt.passed if attempt else None,
                last_answer=attempt.answer if attempt else None,
                state=exercise_state(ex, row),
                walkthrough=md(ex.walkthrough) if ex.walkthrough and (
                    all_open or status == "passed") else None,
                has_walkthrough=bool(ex.walkthrough)))
        state = states[step.id]
        out.append(StepView(step.id, number, step.title, all_open or state.unlocked,
                            state.passed, parts))
    return out
