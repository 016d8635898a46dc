"""The lab format: every error an author can make is reported with file:line, and
`nslab lab validate` / `nslab lab test` behave as documented in docs/authoring.md."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nslab.labkit.loader import load_lab
from nslab.labkit.params import draw_params, expand, split_at_exercises

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
    assert [e.id for e in example.ordered_exercises()] == ["make-file", "pid-one", "sleeper"]
    assert example.max_points == 6 and example.sandbox["memory"] == "256m"
    assert example.exercises["pid-one"].kind == "quiz"
    assert example.exercises["make-file"].check == "make_file"  # the id, - turned into _


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
        f"example/steps/02-task.md:{where['::: hint']}: unknown directive '::: hint' (the only "
        "one is `::: exercise ID`)",
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
           "param (params: secret)" in got


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


def test_steps_split_at_their_exercises():
    example = load_lab(EXAMPLE)
    parts = split_at_exercises(example.steps[0].source)
    assert [k for k, _ in parts] == ["markdown", "exercise", "exercise"]
    assert [v for k, v in parts if k == "exercise"] == ["make-file", "pid-one"]


def nslab(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nslab", *args], capture_output=True,
                          text=True, cwd=REPO, **kw)


def test_validate_command_reports_and_exits_1(lab, tmp_path):
    ok = nslab("lab", "validate", str(lab))
    assert ok.returncode == 0 and ok.stdout == "example: ok (2 steps, 3 exercises, 6 points)\n"
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
