"""The lab format: every error an author can make is reported with file:line, and
`nslab lab validate` / `nslab lab test` behave as documented in docs/authoring.md."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nslab.labkit.loader import load_lab
from nslab.labkit.params import draw_params, expand, redact, split_step

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "labs" / "example"


@pytest.fixture
def lab(tmp_path):
    """A writable copy of the example lab."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def errors(folder: Path) -> list[str]:
    return [str(e) for e in load_lab(folder).errors]


def line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_the_example_lab_is_valid():
    example = load_lab(EXAMPLE)
    assert example.errors == []
    assert [s.id for s in example.steps] == ["intro", "task"]
    assert [e.id for e in example.ordered_exercises()] == ["make-file", "pid-one", "find-note",
                                                           "which-ns", "sleeper"]
    assert example.max_points == 8 and example.sandbox["memory"] == "256m"
    assert example.exercises["pid-one"].kind == "quiz"
    assert example.exercises["make-file"].check == "make_file"  # the id, - turned into _
    # It uses each feature once (docs/authoring.md), with the documented defaults elsewhere.
    assert example.hidden == {"note"} and example.params["note"] == {"token": 10}
    ex = example.exercises
    assert (ex["make-file"].hint_cost, ex["make-file"].hint_points) == (0.5, 1)
    assert (ex["pid-one"].hint_cost, ex["pid-one"].graded_attempts) == (0.25, None)
    assert ex["which-ns"].is_choice and ex["which-ns"].graded_attempts == 1  # the default
    assert ex["sleeper"].graded_attempts == 3 and "jobs -l" in ex["sleeper"].walkthrough
    assert example.steps[1].conditions == {"cgroup-v1", "cgroup-v2"} and example.conditional
    assert "](assets/processes.svg)" in example.steps[1].source


def test_unknown_key_says_where_and_suggests(lab):
    meta = lab / "lab.yaml"
    edit(meta, "    hints:\n      - \"`echo`", "    hint:\n      - \"`echo`")
    assert errors(lab) == [f"example/lab.yaml:{line_of(meta, 'hint:')}: unknown key 'hint' in "
                           "an exercise (did you mean 'hints'?)"]


def test_missing_check_function_and_missing_solution(lab):
    meta = lab / "lab.yaml"
    edit(lab / "checks.py", "def sleeper(", "def sleepr(")
    edit(meta, "    solution: echo {{ secret }} > /root/hello\n", "")
    got = errors(lab)
    assert f"example/lab.yaml:{line_of(meta, '- id: sleeper')}: exercise 'sleeper': checks.py " \
           "has no function 'sleeper'" in got
    assert f"example/lab.yaml:{line_of(meta, '- id: make-file')}: exercise 'make-file' needs " \
           "a reference solution (`solution:`)" in got
    assert len(got) == 2


def test_directives_that_point_nowhere(lab):
    step = lab / "steps" / "02-task.md"
    step.write_text(step.read_text() + "\n::: exercise nothing\n\n::: hint\n\n"
                    "```sh\n::: inside a fence is just text\n```\n::: exercise make-file\n")
    got = errors(lab)
    lines = step.read_text().splitlines()
    where = {text: n for n, text in enumerate(lines, 1)}
    assert got == [
        f"example/steps/02-task.md:{where['::: exercise nothing']}: directive names exercise "
        "'nothing', which lab.yaml does not define",
        f"example/steps/02-task.md:{where['::: hint']}: unknown directive '::: hint' (the "
        "directives are `::: exercise ID`, `::: only cgroup-v1` or `::: only cgroup-v2` ... "
        "`:::`)",
        f"example/steps/02-task.md:{where['::: exercise make-file']}: exercise 'make-file' is "
        "already placed in step 'intro'",
    ]


def test_unplaced_exercise_unknown_param_and_missing_files(lab):
    meta = lab / "lab.yaml"
    edit(lab / "steps" / "02-task.md", "::: exercise sleeper", "{{ secrte }}")
    edit(meta, "setup: setup.sh", "setup: nothere.sh")
    edit(meta, "file: steps/01-intro.md", "file: ../../etc/passwd")
    got = errors(lab)
    assert f"example/lab.yaml:{line_of(meta, 'setup:')}: setup 'nothere.sh' does not exist" in got
    assert f"example/lab.yaml:{line_of(meta, 'etc/passwd')}: step file '../../etc/passwd' " \
           "must be a path inside the lab folder" in got
    assert f"example/lab.yaml:{line_of(meta, '- id: sleeper')}: exercise 'sleeper' is not " \
           "placed in any step: add `::: exercise sleeper` on a line of its own in a step" in got
    step2 = lab / "steps" / "02-task.md"
    assert f"example/steps/02-task.md:{line_of(step2, 'secrte')}: {{{{ secrte }}}} names no " \
           "param (params: note, secret)" in got


def test_yaml_syntax_error_and_duplicate_key(lab):
    meta = lab / "lab.yaml"
    text = meta.read_text()
    meta.write_text(text.replace("minutes: 10", "minutes: [10"))
    (got,) = errors(lab)
    assert got.startswith("example/lab.yaml:") and "not valid YAML" in got
    meta.write_text(text.replace("minutes: 10", "minutes: 10\nminutes: 12"))
    assert errors(lab) == [f"example/lab.yaml:{line_of(meta, 'minutes: 12')}: key 'minutes' "
                           "appears twice"]


def test_checks_py_errors_point_into_it(lab):
    (lab / "checks.py").write_text("def make_file(sb, params):\n    return 'x'\n\n"
                                   "def sleeper(sb params):\n    pass\n")
    assert errors(lab) == ["example/checks.py:4: syntax error: invalid syntax"] or \
        errors(lab)[0].startswith("example/checks.py:4: syntax error")
    (lab / "checks.py").write_text("import os\n\nraise RuntimeError('boom')\n")
    assert errors(lab) == ["example/checks.py:3: importing checks.py failed: RuntimeError: boom"]


def test_quiz_and_wrong_answer_rules(lab):
    meta = lab / "lab.yaml"
    edit(meta, "    quiz:\n      answer: catatonit\n",
         "    quiz:\n      choices: [bash, init]\n      answer: catatonit\n")
    edit(meta, "      - run: echo nope > /root/hello\n        feedback: \"contains 'nope'\"\n"
               "      - run: echo {{ secret }} > /tmp/hello\n"
               "        feedback: \"There is no /root/hello\"\n", "      - {}\n")
    got = errors(lab)
    assert f"example/lab.yaml:{line_of(meta, 'quiz:')}: the quiz of 'pid-one': answer must be " \
           "one of its choices" in got
    assert any("a wrong answer needs 'run'" in e for e in got)
    assert any("a wrong answer needs 'feedback'" in e for e in got)


def test_params_are_drawn_per_learner_and_expanded():
    specs = {"cpu": {"choice": [0.3, 0.4]}, "port": {"int": [8000, 8009]},
             "secret": {"token": 12}}
    a, b = draw_params(specs, random.Random(1)), draw_params(specs, random.Random(2))
    assert a["cpu"] in (0.3, 0.4) and 8000 <= a["port"] <= 8009 and len(a["secret"]) == 12
    assert a["secret"] != b["secret"]
    assert expand("limit to {{ cpu }} CPU on {{port}}", a) == \
        f"limit to {a['cpu']} CPU on {a['port']}"


def test_dockers_go_templates_are_not_params(lab):
    """`docker inspect -f '{{.State.Pid}}'` and `{{json .Config}}` are written as typed:
    neither expanded nor reported as unknown params; a one-word `{{ typo }}` still is."""
    text = "docker inspect -f '{{.State.Pid}} {{ json .Config }}' web; echo {{ cpu }}"
    assert expand(text, {"cpu": 0.5}) == \
        "docker inspect -f '{{.State.Pid}} {{ json .Config }}' web; echo 0.5"
    step = lab / "steps" / "02-task.md"
    edit(step, "::: exercise sleeper",
         "Try `docker ps --format '{{.Names}}'` and `{{range .Mounts}}x{{ .Source }}`.\n\n"
         "::: exercise sleeper")
    assert errors(lab) == []
    edit(step, "::: exercise sleeper", "{{ typo }}\n\n::: exercise sleeper")
    assert any("typo" in e for e in errors(lab))


def test_steps_split_at_their_exercises_and_only_blocks():
    example = load_lab(EXAMPLE)
    parts = split_step(example.steps[0].source)
    assert [p.kind for p in parts] == ["markdown", "exercise", "exercise", "markdown",
                                       "exercise"]
    assert [p.value for p in parts if p.kind == "exercise"] == ["make-file", "pid-one",
                                                                "find-note"]
    parts = split_step("a\n::: only cgroup-v1\nv1 `x`\n```sh\n:::\n```\n:::\nb\n"
                       "::: only cgroup-v2\nv2\n:::\n::: exercise e\n")
    assert [(p.kind, p.value.strip(), p.only) for p in parts] == [
        ("markdown", "a", None), ("markdown", "v1 `x`\n```sh\n:::\n```", "cgroup-v1"),
        ("markdown", "b", None), ("markdown", "v2", "cgroup-v2"), ("exercise", "e", None)]


def test_only_blocks_say_what_is_wrong_where(lab):
    step = lab / "steps" / "02-task.md"
    step.write_text(step.read_text() + "\n::: only cgroup-v3\nx\n:::\n\n"
                    "::: only cgroup-v1\n::: only cgroup-v2\ny\n:::\n:::\n\n"
                    ":::\n\n::: only cgroup-v2\n::: exercise make-file\n:::\n\n"
                    "::: only\n:::\n\n::: only cgroup-v1\nnever closed\n")
    lines = step.read_text().splitlines()
    n = {}
    for number, text in enumerate(lines, 1):
        n.setdefault(text, []).append(number)
    f = "example/steps/02-task.md"
    assert errors(lab) == [
        f"{f}:{n['::: only cgroup-v3'][0]}: unknown condition 'cgroup-v3' in `::: only` "
        "(known: cgroup-v1, cgroup-v2)",
        f"{f}:{n['::: only cgroup-v2'][1]}: an `::: only` block cannot hold another: the block "
        f"of line {n['::: only cgroup-v1'][1]} is still open (close it with `:::`)",
        f"{f}:{n[':::'][5]}: `:::` closes no `::: only` block",
        f"{f}:{n['::: exercise make-file'][0]}: exercise 'make-file' is inside the `::: only "
        f"cgroup-v2` block of line {n['::: only cgroup-v2'][2]}: every learner must meet every "
        "exercise, so place it outside",
        f"{f}:{n['::: only'][0]}: unknown condition '' in `::: only` (known: cgroup-v1, "
        "cgroup-v2)",
        f"{f}:{n['::: only cgroup-v1'][2]}: the `::: only cgroup-v1` block is never closed: "
        "end it with `:::` on a line of its own",
    ]


def test_hidden_params_stay_out_of_what_the_learner_reads(lab):
    meta = lab / "lab.yaml"
    edit(meta, "      - \"`echo` prints", "      - \"{{ note }} `echo` prints")
    edit(meta, "    walkthrough: |\n", "    walkthrough: |\n      {{ note }}\n")
    edit(meta, "      choices: [mount, pid, uts, net]",
         "      choices: [mount, pid, uts, \"{{ note }}\"]")
    edit(lab / "steps" / "01-intro.md", "Files can hold", "Files ({{ note }}) can hold")
    got = errors(lab)
    why = ("{{ note }} is a hidden param: its value never reaches the learner, so text the "
           "learner reads cannot show it (use it in checks.py, setup, a solution or a quiz "
           "answer)")
    assert got == [f"example/steps/01-intro.md:{line_of(lab / 'steps' / '01-intro.md', 'Files (')}:"
                   f" {why}",
                   f"example/lab.yaml:{line_of(meta, '{{ note }} `echo`')}: {why}",
                   f"example/lab.yaml:{line_of(meta, 'choices:')}: {why}",
                   f"example/lab.yaml:{line_of(meta, 'walkthrough:')}: {why}"]
    # In a solution, a quiz answer or a wrong answer's script it is fine (the example's
    # find-note answer is one); `hidden` takes true or false.
    edit(meta, "{token: 10, hidden: true}", "{token: 10, hidden: maybe}")
    assert f"example/lab.yaml:{line_of(meta, 'hidden: maybe')}: param 'note': hidden must be " \
           "true or false" in errors(lab)


def test_attempts_and_hint_cost_are_checked(lab):
    meta = lab / "lab.yaml"
    edit(meta, "    hint_cost: 0.5 ", "    hint_cost: 1.5 ")
    edit(meta, "    attempts: 3 ", "    attempts: 0 ")
    edit(meta, "      answer: pid\n", "      answer: pid\n    attempts: 4\n")
    assert errors(lab) == [
        f"example/lab.yaml:{line_of(meta, 'hint_cost:')}: hint_cost must be a number from 0 to 1",
        f"example/lab.yaml:{line_of(meta, 'attempts: 4')}: exercise 'which-ns': with 4 graded "
        "tries a learner can try each of its 4 choices for full points; `attempts:` must be "
        "less than 4",
        f"example/lab.yaml:{line_of(meta, 'attempts: 0')}: attempts must be an integer from 1 "
        "to 100",
    ]


def test_assets_a_step_points_at_must_exist(lab):
    step = lab / "steps" / "02-task.md"
    edit(step, "](assets/processes.svg)", "](assets/process.svg)")
    step.write_text(step.read_text() + "\n![a](diagram.png) [b](assets/run.sh)\n"
                    "![ok](https://example.org/x.png) ![c](assets/../lab.yaml)\n\n"
                    "```sh\ncat assets/not-an-image-ref.svg ](assets/nope.svg)\n```\n"
                    "[ref]: assets/gone.png\n")
    f, n = "example/steps/02-task.md", len(step.read_text().splitlines())
    assert errors(lab) == [
        f"{f}:{line_of(step, 'process.svg')}: asset 'assets/process.svg' does not exist "
        "(looked for example/assets/process.svg)",
        f"{f}:{n - 6}: image 'diagram.png': a lab's pictures live in its assets/ folder "
        "(write assets/diagram.png)",
        f"{f}:{n - 6}: asset 'assets/run.sh': the web app serves only .jpeg, .jpg, .png, .svg "
        "files",
        f"{f}:{n - 5}: asset 'assets/../lab.yaml': each part of its path must be letters, "
        "digits, '.', '_' or '-', not starting with '.'",
        f"{f}:{n}: asset 'assets/gone.png' does not exist (looked for example/assets/gone.png)",
    ]
    (lab / "assets" / "process.svg").symlink_to("../lab.yaml")  # a link out of assets/
    assert any("asset 'assets/process.svg': the web app serves only" in e or
               "'assets/process.svg' does not exist" in e for e in errors(lab))


def test_redact_takes_hidden_values_out_of_text():
    assert redact("the vault holds u3k5kq2qhz, not U3K5KQ2QHZX", ["u3k5kq2qhz"]) == \
        ("the vault holds …, not …X", True)
    # A short value goes only where it stands alone: not from 142 or "nets", but from an
    # address, where a dot is no digit.
    assert redact("42 of 142 in 10.42.0.1 and nets", ["42", "net"]) == \
        ("… of 142 in 10.….0.1 and nets", True)
    assert redact("nothing here", ["zzz", ""]) == ("nothing here", False)


def nslab(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nslab", *args], capture_output=True,
                          text=True, cwd=REPO, **kw)


def test_validate_command_reports_and_exits_1(lab, tmp_path):
    ok = nslab("lab", "validate", str(lab))
    assert ok.returncode == 0 and ok.stdout == "example: ok (2 steps, 5 exercises, 8 points)\n"
    edit(lab / "lab.yaml", "points: 3", "points: many")
    bad = nslab("lab", "validate", str(tmp_path))  # a folder of labs
    assert bad.returncode == 1
    assert "example/lab.yaml:" in bad.stdout and "points must be an integer from 0 to 1000" \
        in bad.stdout and "1 of 1 labs have errors" in bad.stderr
    missing = nslab("lab", "validate", str(tmp_path / "none"))
    assert missing.returncode == 1 and "no such lab or labs folder" in missing.stderr


def test_every_lab_in_the_repo_validates():
    got = nslab("lab", "validate")
    assert got.returncode == 0, got.stdout + got.stderr
    for lab_id in ("example", "cgroups", "namespaces"):
        assert f"{lab_id}: ok" in got.stdout


@pytest.mark.privileged
def test_lab_test_replays_solutions_and_catches_a_wrong_check(lab, sandboxd):
    env = {"NSLAB_SOCKET": str(sandboxd.socket), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    good = nslab("lab", "test", str(lab), "--seed", "3", env=env, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS  make-file" in good.stdout and "all exercises behave" in good.stdout
    # A check that passes everything is caught: the fresh sandbox and wrong answers pass.
    edit(lab / "checks.py", "def sleeper(sb, params):\n",
         "def sleeper(sb, params):\n    return 'always'\n")
    bad = nslab("lab", "test", str(lab), "--exercise", "sleeper", env=env, timeout=300)
    assert bad.returncode == 1
    assert "FAIL  sleeper" in bad.stdout and "FAIL  fresh sandbox fails: always" in bad.stdout
    assert "but it PASSED" in bad.stdout


def test_a_quiz_checked_on_the_sandbox_may_stage_it_in_a_wrong_answer(lab):
    """A quiz graded by a check may replay `run:` then `answer:` (a learner who sets the
    sandbox up to mislead the check); a quiz with a fixed answer may not, with file:line."""
    ns = load_lab(REPO / "labs" / "namespaces")
    staged = [w for w in ns.exercises["ns-compare"].wrong if w.run is not None]
    assert staged and all(w.answer for w in staged)
    meta = lab / "lab.yaml"
    text = meta.read_text()
    anchor = text.index("answer: catatonit")
    wrong_at = text.index("wrong:", anchor)
    first = text.index("- answer:", wrong_at)
    meta.write_text(text[:first] + "- run: pkill -x catatonit\n        " + text[first + 2:])
    got = errors(lab)
    assert f"example/lab.yaml:{line_of(meta, 'run: pkill -x catatonit')}: a wrong answer of " \
           "a quiz uses 'answer', not 'run'" in got


# ---------------------------------------------------------------- Python cells and notebooks

CELL_STEP = """# Cells

Plain code stays plain:

```python
print("not run")
```

```python cell
import os
print(os.getpid(), "{{ secret }}")
```

::: only cgroup-v2
  ```python cell
  if True:
      print("v2")
  ```
:::

```python cell

```

::: exercise sleeper
"""


def test_a_python_cell_is_a_part_of_its_own():
    parts = split_step(CELL_STEP)
    assert [(p.kind, p.only, p.index) for p in parts] == [
        ("markdown", None, None), ("cell", None, 0), ("cell", "cgroup-v2", 1),
        ("exercise", None, None)]
    plain, first, second = parts[0], parts[1], parts[2]
    assert '```python\nprint("not run")\n```' in plain.value and "cell" not in plain.value
    assert first.value == 'import os\nprint(os.getpid(), "{{ secret }}")\n'
    lines = CELL_STEP.splitlines()
    assert lines[first.line - 1] == "```python cell"
    assert lines[second.line - 1] == "  ```python cell"
    # The fence's indentation is taken off (CommonMark), the code's own is kept.
    assert second.value == 'if True:\n    print("v2")\n'
    # A fence is closed only by a line of its own fence character, at least as long.
    parts = split_step("````python cell\n```\n```python\n````\ntext\n")
    assert [(p.kind, p.value) for p in parts] == [("cell", "```\n```python\n"),
                                                  ("markdown", "text\n")]


def test_cells_are_placed_expanded_and_validated(lab):
    step = lab / "steps" / "02-task.md"
    step.write_text(CELL_STEP)
    edit(lab / "steps" / "01-intro.md", "::: exercise pid-one",
         "::: exercise pid-one\n\n::: exercise which-ns")
    loaded = load_lab(lab)
    assert loaded.errors == []
    (cell, *_), = [[p for p in split_step(s.source) if p.kind == "cell"]
                   for s in loaded.steps if s.id == "task"]
    assert expand(cell.value, {"secret": "s3cr"}).endswith('"s3cr")\n')


def test_a_cell_that_is_not_python_or_a_mistyped_fence_says_where(lab):
    step = lab / "steps" / "02-task.md"
    step.write_text(step.read_text() + "\n```python cell\nx = 1\nprint(x +)\n```\n\n"
                    "```python cel\nprint(1)\n```\n\n```python3 cell\nx\n```\n\n"
                    "```python cell\nprint('\\d')\n```\n\n"
                    "```python\nprint(x +) # plain code is not compiled\n```\n\n"
                    "```python cell\nprint('never closed')\n")
    lines = step.read_text().splitlines()
    f = "example/steps/02-task.md"
    first = lines.index("print(x +)") + 1
    escape = lines.index("print('\\d')") + 1
    assert errors(lab) == [
        f"{f}:{first}: the cell is not valid Python: invalid syntax",
        f"{f}:{lines.index('```python cel') + 1}: unknown info string 'python cel': a runnable "
        "cell is marked ```python cell (plain ```python stays plain code)",
        f"{f}:{lines.index('```python3 cell') + 1}: unknown info string 'python3 cell': a "
        "runnable cell is marked ```python cell (plain ```python stays plain code)",
        f"{f}:{escape}: the cell compiles with a warning: invalid escape sequence '\\d'",
        f"{f}:{len(lines) - 1}: this `python cell` block is never closed: end it with a fence "
        "of its own",
    ]


def test_a_cell_may_not_show_a_hidden_param(lab):
    step = lab / "steps" / "02-task.md"
    step.write_text(step.read_text() + "\n```python cell\nprint('{{ note }}', {{ nope }})\n"
                                       "```\n")
    n = len(step.read_text().splitlines()) - 1
    assert errors(lab) == [
        f"example/steps/02-task.md:{n}: {{{{ note }}}} is a hidden param: its value never "
        "reaches the learner, so text the learner reads cannot show it (use it in checks.py, "
        "setup, a solution or a quiz answer)",
        f"example/steps/02-task.md:{n}: {{{{ nope }}}} names no param (params: note, secret)"]


def notebook(*cells, **metadata) -> dict:
    """An nbformat 4.5 notebook of (cell_type, source) cells; a code cell with an output."""
    out = []
    for number, (kind, source) in enumerate(cells, 1):
        cell = {"id": f"c{number}", "cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=1, outputs=[
                {"output_type": "stream", "name": "stdout", "text": "stored output\n"}])
        out.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "cells": out,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}, **metadata}}


def as_notebook_step(lab: Path, nb: dict | str) -> Path:
    """Step 2 of the example lab replaced by a notebook."""
    path = lab / "steps" / "02-task.ipynb"
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb, indent=1))
    (lab / "steps" / "02-task.md").unlink()
    edit(lab / "lab.yaml", "file: steps/02-task.md", "file: steps/02-task.ipynb")
    return path


def test_a_notebook_step_is_its_markdown_and_code_cells(lab):
    task = (lab / "steps" / "02-task.md").read_text()
    head, tail = task.split("::: exercise which-ns\n")
    as_notebook_step(lab, notebook(
        ("markdown", head.splitlines(keepends=True)),
        ("code", "import os\nprint('{{ secret }}', ```` == 1)\n".replace("````", "os.getpid()")),
        ("markdown", "::: exercise which-ns\n\n" + tail),
        ("code", ""),  # Jupyter's empty last cell
        ("code", "```\nnot a fence```\n".replace("```", "x = '''", 1).replace("```", "'''"))))
    loaded = load_lab(lab)
    assert loaded.errors == []
    step = loaded.steps[1]
    assert step.notebook and step.exercises == ["which-ns", "sleeper"]
    assert step.conditions == {"cgroup-v1", "cgroup-v2"}
    parts = split_step(step.source)
    cells = [p for p in parts if p.kind == "cell"]
    assert [(c.index, c.value) for c in cells] == [
        (0, "import os\nprint('{{ secret }}', os.getpid() == 1)\n"),
        (1, "x = '''\nnot a fence'''\n")]
    assert "stored output" not in step.source  # outputs in the file are not the learner's
    assert [p.kind for p in parts] == ["markdown", "cell", "exercise", "markdown", "markdown",
                                       "markdown", "exercise", "cell"]


def test_a_notebook_reports_errors_by_cell(lab):
    f = "example/steps/02-task.ipynb"
    path = as_notebook_step(lab, notebook(
        ("markdown", "# Processes\n\n::: exercise which-ns\n\n::: exercise sleeper\n"),
        ("code", "x = 1\nprint(x +)\n"),
        ("markdown", "{{ nope }}\n\n```python cel\nx\n```\n"),
        ("markdown", "```sh\nnever closed\n"),
        ("raw", "raw text\n")))
    assert errors(lab) == [
        f"{f}: cell 4: this fenced block is never closed in its cell: close it with a line "
        "of its own",
        f"{f}: cell 5: a raw cell has no place in a lab step: make it a markdown or a code cell",
        f"{f}: cell 3: {{{{ nope }}}} names no param (params: note, secret)",
        f"{f}: cell 2, line 2: the cell is not valid Python: invalid syntax",
        f"{f}: cell 3, line 3: unknown info string 'python cel': a runnable cell is marked "
        "```python cell (plain ```python stays plain code)",
    ]
    # What nbformat rejects: a code cell without outputs, a cell without an id.
    nb = notebook(("markdown", "::: exercise which-ns\n::: exercise sleeper\n"),
                  ("code", "print(1)\n"))
    del nb["cells"][1]["outputs"]
    path.write_text(json.dumps(nb))
    # (A rejected notebook is no text: its exercises are reported as placed nowhere too.)
    assert errors(lab)[0] == f"{f}: cell 2: nbformat rejects the notebook: 'outputs' is a " \
                             "required property"
    del nb["cells"][0]["id"]
    nb["cells"][1]["outputs"] = []
    path.write_text(json.dumps(nb))
    assert errors(lab)[0] == f"{f}: cell 1: the cell has no id (nbformat 4.5 needs one): open " \
                             "and save it in Jupyter"
    nb["cells"][0]["id"] = nb["cells"][1]["id"]
    path.write_text(json.dumps(nb))
    assert errors(lab)[0] == f"{f}: cell 2: the cell's id 'c2' is also the id of cell 1"
    # Another kernel's notebook, an old format, and a file that is not JSON at all.
    path.write_text(json.dumps(notebook(
        ("markdown", "::: exercise which-ns\n::: exercise sleeper\n"),
        kernelspec={"name": "ir", "display_name": "R", "language": "R"})))
    assert errors(lab) == [f"{f}:1: the notebook's kernel language is 'R': a lab's cells run "
                           "in a python kernel"]
    path.write_text(json.dumps({**notebook(), "nbformat": 3}))
    assert errors(lab)[0] == f"{f}:1: nbformat 3 is not supported: save the notebook as " \
                             "nbformat 4 (any current Jupyter does)"
    path.write_text('{\n "cells": [\n  {,\n')
    assert errors(lab)[0].startswith(f"{f}:3: not a notebook: not valid JSON")


def test_validate_command_reports_cells_and_notebooks(lab, tmp_path):
    path = as_notebook_step(lab, notebook(
        ("markdown", "::: exercise which-ns\n\n::: exercise sleeper\n"),
        ("code", "def f(:\n    pass\n")))
    bad = nslab("lab", "validate", str(lab))
    assert bad.returncode == 1
    assert bad.stdout == "example/steps/02-task.ipynb: cell 2: the cell is not valid Python: " \
                         "invalid syntax\n"
    path.write_text(json.dumps(notebook(("markdown", "::: exercise which-ns\n"
                                                     "::: exercise sleeper\n"),
                                        ("code", "def f():\n    pass\n"))))
    assert nslab("lab", "validate", str(lab)).returncode == 0


def test_an_exercise_title_may_show_a_param_but_never_a_hidden_one(lab):
    """Titles are what a learner reads first: `{{ name }}` is expanded there like in the
    text, and a hidden param there is an error with its line."""
    meta = lab / "lab.yaml"
    edit(meta, "    title: Write your secret into a file\n", "    title: Write {{ secret }}\n")
    assert errors(lab) == []
    edit(meta, "    title: Write {{ secret }}\n", "    title: Write {{ note }}\n")
    assert any(f"example/lab.yaml:{line_of(meta, 'title: Write {{ note }}')}:" in e
               and "hidden param" in e for e in errors(lab)), errors(lab)
