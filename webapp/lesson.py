"""Lesson Markdown to safe HTML; shell code blocks get a "Run in terminal" button.

Two layers: markdown-it escapes raw HTML in the source (html=False), and nh3 then keeps
only the tags and attributes this renderer itself produces. A lesson is written by an
instructor, but it is shown to every learner, so it is treated as untrusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup

from nslab.labkit.model import LAB_ID_RE, Lab
from nslab.labkit.params import expand, split_at_exercises

from .progress import step_states

# Fences whose text is meant to be typed at a shell prompt.
RUNNABLE = {"", "sh", "bash", "shell", "console", "terminal", "zsh"}
PROMPT = re.compile(r"^\s*[$#] ")
LANGUAGE = re.compile(r"^[a-z0-9_+-]{1,32}$")

TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "em", "strong", "del", "s",
        "code", "pre", "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody",
        "tr", "th", "td", "div", "button", "kbd"}
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"},
              "code": {"class"}, "div": {"class"},
              "button": {"type", "class", "data-command", "title"},
              "th": {"style"}, "td": {"style"}}


def _fence(renderer, tokens, idx, options, env) -> str:
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1)[0].lower() if token.info.strip() else ""
    language = info if LANGUAGE.match(info) else ""
    cls = f' class="language-{language}"' if language else ""
    block = f"<pre><code{cls}>{escapeHtml(token.content)}</code></pre>"
    if info not in RUNNABLE:
        return block + "\n"
    command = shell_commands(token.content, console=info == "console")
    return (f'<div class="code-block">{block}<button type="button" class="run-in-terminal" '
            f'data-command="{escapeHtml(command)}" title="Type this into the terminal">'
            f'Run in terminal</button></div>\n')


def shell_commands(text: str, console: bool = False) -> str:
    """What the button types: the block itself, or for a `console` transcript only the
    lines after a `$ ` or `# ` prompt (the rest is the command's output)."""
    lines = text.rstrip("\n").splitlines()
    if console and any(PROMPT.match(line) for line in lines):
        lines = [PROMPT.sub("", line, count=1) for line in lines if PROMPT.match(line)]
    return "\n".join(lines)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("fence", _fence)
    return md


_md = _parser()


def render_markdown(source: str) -> Markup:
    html = _md.render(source)
    return Markup(nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES,
                            filter_style_properties={"text-align"},
                            url_schemes={"http", "https", "mailto"}))


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
    score: int
    last_feedback: Markup | None
    last_passed: bool | None
    last_answer: str | None


@dataclass
class StepView:
    id: str
    number: int
    title: str
    unlocked: bool
    passed: bool
    parts: list  # Markup (lesson text) or ExerciseView, in reading order


def lesson_steps(lab: Lab, params: dict, rows: dict, last: dict, *, all_open: bool = False
                 ) -> list[StepView]:
    """The steps of a lab for one learner: their values filled in, each exercise with its
    status, open hints and last feedback; locked steps marked."""
    states = {s.id: s for s in step_states(lab, rows)}
    out = []
    for number, step in enumerate(lab.steps, 1):
        parts = []
        for kind, value in split_at_exercises(step.source):
            if kind == "markdown":
                parts.append(render_markdown(expand(value, params)))
                continue
            ex, row, attempt = lab.exercises[value], rows.get(value), last.get(value)
            used = row.hints_used if row else 0
            parts.append(ExerciseView(
                id=ex.id, title=ex.title, points=ex.points, kind=ex.kind,
                text=render_markdown(expand(ex.text, params)),
                choices=[expand(c, params) for c in ex.quiz.choices]
                if ex.quiz is not None and ex.quiz.choices else None,
                hints_total=len(ex.hints),
                hints_open=[render_markdown(expand(h, params)) for h in ex.hints[:used]],
                status=row.status if row else "not_started", score=row.points if row else 0,
                last_feedback=render_markdown(attempt.feedback) if attempt else None,
                last_passed=attempt.passed if attempt else None,
                last_answer=attempt.answer if attempt else None))
        state = states[step.id]
        out.append(StepView(step.id, number, step.title, all_open or state.unlocked,
                            state.passed, parts))
    return out
