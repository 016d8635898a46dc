"""The rules of the architecture that a machine can check (docs/architecture.md).

The import layers themselves are import-linter contracts (`.importlinter`, run by
`scripts/test`); these tests keep the contracts honest and check what import-linter cannot:
that no code branches on an error's message text.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What unprivileged code may import of the engine package (docs/architecture.md).
UNPRIVILEGED = {"sandbox.client", "sandbox.errors", "sandbox.protocol"}

# String methods and `re` functions that compare or search text.
_TEXT_TESTS = {"startswith", "endswith", "find", "rfind", "index", "rindex", "count",
               "__contains__"}
_RE_FUNCS = {"match", "search", "fullmatch", "findall", "finditer"}
_MESSAGE_ATTRS = {"message", "strerror", "args"}


def _engine_modules() -> set[str]:
    out = set()
    for path in (ROOT / "sandbox").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.add(".".join(parts))
    return out - {"sandbox"}


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return parser


def _listed(value: str) -> set[str]:
    return {line.strip() for line in value.splitlines() if line.strip()}


def test_every_engine_module_is_forbidden_to_unprivileged_code():
    """A new engine module must join the forbidden list (or be one of the three modules
    unprivileged code may import): otherwise the web app could import it unnoticed."""
    contracts = _contracts()
    forbidden = set()
    for section in contracts.sections():
        if contracts[section].get("type") == "forbidden" and \
                "webapp" in _listed(contracts[section].get("source_modules", "")):
            forbidden |= _listed(contracts[section]["forbidden_modules"])
    assert forbidden, "no forbidden contract with webapp among its sources in .importlinter"
    engine = _engine_modules()
    missing = sorted(m for m in engine - UNPRIVILEGED
                     if not any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not missing, f"engine modules unprivileged code could import: {missing}"
    assert not forbidden & UNPRIVILEGED


def _except_names(tree: ast.AST) -> set[str]:
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ExceptHandler) and node.name}


def _is_message(node: ast.AST, exc_names: set[str]) -> bool:
    """An error's text: `x.message`, `x.strerror`, `e.args[...]`, or `str(e)` / `repr(e)`
    / `f"{e}"` of a name an `except ... as e` bound."""
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute) and node.attr in _MESSAGE_ATTRS:
        # `args` is an error's text only as `e.args` of an `except ... as e`: a traced
        # call's arguments (labkit.check.Syscall.args) are strace's text, not an error's.
        return node.attr != "args" or (isinstance(node.value, ast.Name)
                                       and node.value.id in exc_names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr in {"lower", "upper", "casefold", "strip"}:
        return _is_message(node.func.value, exc_names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in {"str", "repr", "format"} and node.args:
        arg = node.args[0]
        return isinstance(arg, ast.Name) and arg.id in exc_names
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                   and v.value.id in exc_names for v in node.values)
    return False


def message_comparisons(source: str, filename: str = "<source>") -> list[str]:
    """Places in `source` that compare or search an error's message text."""
    tree = ast.parse(source, filename)
    names = _except_names(tree)
    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.Compare):
            hit = any(_is_message(x, names) for x in [node.left, *node.comparators])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _TEXT_TESTS:
                hit = _is_message(node.func.value, names)
            elif node.func.attr in _RE_FUNCS and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "re":
                hit = any(_is_message(a, names) for a in node.args)
        if hit:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("code", [
    'try:\n    f()\nexcept E as e:\n    if "no such file" in e.message: pass',
    'try:\n    f()\nexcept E as e:\n    ok = e.message.startswith("no such")',
    'try:\n    f()\nexcept OSError as e:\n    if "busy" not in str(e).lower(): raise',
    'try:\n    f()\nexcept E as err:\n    x = "proc" if "proc filesystem" in err.message else "plain"',
    'import re\ntry:\n    f()\nexcept E as e:\n    re.search("busy", f"{e}")',
    'try:\n    f()\nexcept E as e:\n    same = e.args[0] == "gone"',
])
def test_the_checker_finds_message_matching(code):
    assert message_comparisons(code)


@pytest.mark.parametrize("code", [
    'try:\n    f()\nexcept E as e:\n    if e.reason is Reason.NO_SUCH_FILE: pass',
    'try:\n    f()\nexcept E as e:\n    flash(f"could not: {e.message}")',
    'try:\n    f()\nexcept OSError as e:\n    if e.errno != errno.EBUSY: raise',
])
def test_the_checker_lets_reasons_and_display_pass(code):
    assert not message_comparisons(code)


def _sources() -> list[Path]:
    files = [p for d in ("webapp", "nslab", "sandbox") for p in (ROOT / d).rglob("*.py")]
    files += sorted((ROOT / "labs").glob("*/checks.py"))
    return [p for p in files if "migrations" not in p.parts]


def test_no_code_branches_on_error_text():
    """Error meaning travels in `reason` (sandbox.protocol.Reason) or the errno, never in
    the message, which is for people and may be reworded."""
    found = []
    for path in _sources():
        found += message_comparisons(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "compare the error's reason, not its text:\n" + "\n".join(found)


def test_the_daemon_command_forks_its_spawner_without_the_rest_of_the_cli():
    """`nslab sandboxd` forks its spawner from the CLI's own process and every sandbox and
    exec is a fork of the spawner: the web app, the lab machinery, the benchmarks and the
    daemon's HTTP client must not be in that process (a bigger heap slows every fork)."""
    import subprocess
    import sys

    code = ("import sys; from nslab.cli import build_parser; import sandbox.main; "
            "build_parser('sandboxd'); print('\\n'.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True, cwd=ROOT).stdout.split())
    heavy = {m for m in loaded if m.split(".")[0] in {"webapp", "flask", "sqlalchemy", "aiohttp",
                                                       "yaml", "websocket", "pyroute2", "asyncio"}
             or m.startswith(("nslab.labkit", "nslab.bench", "sandbox.client", "sandbox.daemon",
                              "sandbox.engine"))}
    assert not heavy, sorted(heavy)
    assert "nslab.cli.daemon" in loaded and "nslab.cli.web" not in loaded


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_lab_checks_import_only_the_check_api():
    """A lab's checks.py is not a package, so import-linter does not see it: it may use the
    standard library, the lab machinery and the daemon's client, never an engine module or
    the web app (checks run in the web app, which is not root)."""
    import sys

    allowed = ("nslab.labkit", *UNPRIVILEGED)
    bad = []
    for path in sorted((ROOT / "labs").glob("*/checks.py")):
        for name in _imports(path):
            if name.split(".")[0] in sys.stdlib_module_names or name == "__future__" or \
                    any(name == a or name.startswith(a + ".") for a in allowed):
                continue
            bad.append(f"{path.relative_to(ROOT)}: import {name}")
    assert not bad, bad
