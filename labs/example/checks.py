"""Checks of the example lab (docs/authoring.md)."""

from nslab.labkit.check import Fail


def make_file(sb, params):
    try:
        text = sb.read_file("/root/hello").decode(errors="replace").strip()
    except FileNotFoundError:
        raise Fail("There is no /root/hello yet.") from None
    if text != params["secret"]:
        raise Fail(f"/root/hello contains {text[:40]!r}; the task asks for your secret "
                   f"{params['secret']!r}.")
    return "Right: /root/hello holds your secret."


def sleeper(sb, params):
    sleeps = [p for p in sb.processes(comm="sleep")]
    if any(p.cmdline[1:] == ["1000"] for p in sleeps):
        return "Yes: `sleep 1000` is running in the background."
    if sleeps:
        seen = ", ".join(" ".join(p.cmdline) for p in sleeps)
        raise Fail(f"No `sleep 1000` runs; I see {seen}.")
    raise Fail("No `sleep 1000` runs in your sandbox (the host sees no sleep process).")
