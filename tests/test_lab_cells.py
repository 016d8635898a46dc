"""Every `python cell` of every lab runs, in a fresh sandbox of its lab (its limits, its
setup, one learner's values), and exits 0: run with `python3` through `nslab sandbox exec`,
the same interpreter and modules the learner's kernel has (the kernel itself is not needed
to prove the code). matplotlib's Agg backend draws what a cell plots into a PNG; a cell
that plots must leave one. A cell cleans up after itself: the sandbox's processes, cgroups
and UTS namespaces are the same after it as before. The two cells the issue asks for also
show what they are there to show."""

from __future__ import annotations

import random
import re

import pytest

from nslab.labkit.catalog import default_labs_dir, lab_ids
from nslab.labkit.loader import load_lab
from nslab.labkit.params import draw_params, expand, split_step
from nslab.labkit.provision import run_setup

pytestmark = pytest.mark.privileged

# After the cell: each figure it left open, drawn into a PNG, as "FIGURE <bytes> <magic>".
# (A learner's kernel shows them inline instead; the drawing is the same.)
EPILOGUE = """

import io as _nslab_io
import sys as _nslab_sys
if "matplotlib.pyplot" in _nslab_sys.modules:
    for _nslab_n in _nslab_sys.modules["matplotlib.pyplot"].get_fignums():
        _nslab_png = _nslab_io.BytesIO()
        _nslab_sys.modules["matplotlib.pyplot"].figure(_nslab_n).savefig(_nslab_png,
                                                                         format="png")
        print("FIGURE", len(_nslab_png.getvalue()), _nslab_png.getvalue()[:8].hex())
"""
PNG_MAGIC = "89504e470d0a1a0a"
CELL_TIMEOUT = 120


def lab_cells() -> list:
    """(lab id, step id, cell index) of every `python cell` of every lab."""
    out = []
    for lab_id in lab_ids(default_labs_dir()):
        lab = load_lab(default_labs_dir() / lab_id)
        for step in lab.steps:
            out += [pytest.param(lab_id, step.id, part.index,
                                 id=f"{lab_id}-{step.id}-{part.index}")
                    for part in split_step(step.source) if part.kind == "cell"]
    return out


CELLS = lab_cells()


def test_the_labs_the_issue_names_have_cells():
    assert {p.values[0] for p in CELLS} >= {"cgroups", "namespaces"}


def snapshot(client, sid: str) -> dict:
    """What a cell must leave as it found it, read from the host."""
    facts = client.inspect(sid)
    return {"processes": sorted((p["comm"], tuple(p["cmdline"])) for p in facts["processes"]),
            "cgroups": sorted(n["path"] for n in facts["cgroups"]),
            "uts": sorted(u["inode"] for u in facts["uts_namespaces"])}


def check_cgroups_plot(out: str) -> None:
    """The hog was held to its quota and throttled: the plot shows the quota at work."""
    m = re.search(r"under the quota of ([\d.]+) CPU: ([\d.]+) CPU, throttled in (\d+) of "
                  r"(\d+) periods", out)
    assert m, out
    quota, held, throttled, periods = float(m[1]), float(m[2]), int(m[3]), int(m[4])
    # A quota is a ceiling: the hog may get less on a busy host, never clearly more.
    assert 0 < held <= quota * 1.2, out
    assert periods >= 50 and throttled >= periods // 2, out


def check_uts_namespace(out: str) -> None:
    """The child's hostname and UTS namespace differ; the parent's stay as they were."""
    lines = dict(re.findall(r"^(parent, before|child|parent, after):\s+(.*)$", out, re.M))
    assert set(lines) == {"parent, before", "child", "parent, after"}, out
    assert lines["parent, before"] == lines["parent, after"], out
    assert "'in-a-cell'" in lines["child"] and "'in-a-cell'" not in lines["parent, after"]
    inode = re.compile(r"uts:\[(\d+)\]")
    assert inode.search(lines["child"])[1] != inode.search(lines["parent, after"])[1], out


WHAT_THEY_SHOW = {("cgroups", "cpu-quota"): check_cgroups_plot,
                  ("namespaces", "unshare"): check_uts_namespace}


def test_the_cells_the_issue_asks_for_are_where_expected():
    have = {(p.values[0], p.values[1]) for p in CELLS}
    assert set(WHAT_THEY_SHOW) <= have


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("lab_id", "step_id", "index"), CELLS)
def test_a_lab_cell_runs_in_a_fresh_sandbox(lab_id, step_id, index, sandboxd):
    lab = load_lab(default_labs_dir() / lab_id)
    assert lab.errors == []
    (step,) = [s for s in lab.steps if s.id == step_id]
    (cell,) = [p for p in split_step(step.source) if p.kind == "cell" and p.index == index]
    params = draw_params(lab.params, random.Random(index))
    source = expand(cell.value, lab.visible_params(params))
    client = sandboxd.client()
    sid = client.create(**lab.sandbox_limits)["id"]
    try:
        run_setup(client, sid, lab, params)
        before = snapshot(client, sid)
        run = sandboxd.cli("sandbox", "exec", "-e", "MPLBACKEND=Agg", sid, "--", "python3",
                           "-", input=(source + EPILOGUE).encode(), timeout=CELL_TIMEOUT)
        out, err = run.stdout.decode(), run.stderr.decode()
        assert run.returncode == 0, f"{lab_id}/{step.file} cell {index}:\n{out}\n{err}"
        figures = re.findall(r"^FIGURE (\d+) ([0-9a-f]+)$", out, re.M)
        if "matplotlib" in source:
            assert figures, f"the cell imports matplotlib but drew no figure:\n{out}\n{err}"
            assert all(int(size) > 1000 and magic == PNG_MAGIC for size, magic in figures)
        if check := WHAT_THEY_SHOW.get((lab_id, step_id)):
            check(out)
        assert snapshot(client, sid) == before, "the cell left something behind"
    finally:
        client.destroy(sid, purge=True)
