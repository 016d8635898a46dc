"""The course's labs prove themselves on real sandboxes, as `nslab lab test` does: each
exercise fails on a fresh sandbox, passes after its reference solution, and fails with the
expected feedback after each typical wrong answer (anti-tamper attempts among them)."""

from __future__ import annotations

import pytest

from nslab.cli.web import DEMO_LABS
from nslab.labkit.catalog import default_labs_dir
from nslab.labkit.loader import load_lab
from nslab.labkit.replay import replay_lab

pytestmark = pytest.mark.privileged


# The demo course in its order (nslab.cli.web.DEMO_LABS).
COURSE = list(DEMO_LABS)


@pytest.mark.slow
# A Docker lab replays each exercise on several fresh sandboxes, each pulling its images:
# 2-4 minutes on this 2-core host, more when it is busy.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("lab_id", COURSE)
def test_lab_replays(lab_id, client):
    lab = load_lab(default_labs_dir() / lab_id)
    assert lab.errors == []
    lines: list[str] = []
    ok = replay_lab(client, lab, seed=None, echo=lines.append)
    print("\n".join(lines))
    assert ok, "\n".join(lines)
    assert len(lab.exercises) >= 6


def test_the_two_labs_have_at_least_12_graded_exercises_between_them():
    labs = [load_lab(default_labs_dir() / name) for name in ("namespaces", "cgroups")]
    assert all(lab.errors == [] for lab in labs), [str(e) for lab in labs for e in lab.errors]
    assert sum(len(lab.exercises) for lab in labs) >= 12
    for lab in labs:
        for ex in lab.exercises.values():
            assert ex.wrong, f"{lab.id}/{ex.id} has no wrong answer"
            assert ex.hints, f"{lab.id}/{ex.id} has no hint"
