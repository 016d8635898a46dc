"""Root filesystem images: the host skeleton for real, the Debian build's helpers offline.

`build_debian` itself is not run here (minutes, and the network); its progress parser,
mirror lookup and the identity it writes are.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from sandbox import images as im
from sandbox.config import HostConfig
from sandbox.errors import InvalidRequest, NotFound
from sandbox.protocol import Reason


def require_root():
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (files owned by root and uid 1000); "
                    "run them as root, they must not be skipped")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An ImageStore on a temp state dir, its `host` image built once."""
    require_root()
    config = HostConfig(name=f"test-{secrets.token_hex(4)}",
                        state_dir=tmp_path_factory.mktemp("images"))
    images = im.ImageStore(config)
    images.ensure_host()
    return images


@pytest.mark.privileged
def test_host_skeleton(store):
    image = store.ensure_host()
    root = image.rootfs
    assert image.name == "host" and root.is_dir()
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "learner:x:1000:1000:Learner:/home/learner:/bin/bash" in passwd
    assert passwd[0] == "root:x:0:0:root:/root:/bin/bash"
    assert {line.split(":")[0] for line in passwd} == {
        "root", "daemon", "bin", "sys", "sync", "www-data", "nobody", "learner"}
    groups = {line.split(":")[0]: line.split(":")[2]
              for line in (root / "etc/group").read_text().splitlines()}
    assert groups["learner"] == "1000" and groups["users"] == "100"
    assert groups["nogroup"] == "65534" and groups["tty"] == "5" and groups["shadow"] == "42"

    # merged-/usr as on the host, or binds where the host is not merged
    for name in im.USR_MERGED:
        host = Path("/") / name
        if host.is_symlink():
            assert os.readlink(root / name) == os.readlink(host)
        elif host.is_dir():
            assert (str(host), name) in image.binds and (root / name).is_dir()
        else:
            assert not os.path.lexists(root / name)
    assert ("/usr", "usr") in image.binds
    assert (root / "usr").is_dir() and not any((root / "usr").iterdir())
    assert os.readlink(root / "var/run") == "/run"
    assert os.readlink(root / "var/lock") == "/run/lock"
    modes = {"tmp": 0o1777, "var/tmp": 0o1777, "root": 0o700, "proc": 0o555}
    for rel, mode in modes.items():
        assert stat.S_IMODE(os.lstat(root / rel).st_mode) == mode, rel
    for rel in ("dev", "sys", "home", "run/lock", "var/log/nginx", "var/lib/nginx", "opt",
                "srv", "mnt", "media", "var/cache", "var/spool", "var/mail", "var/opt"):
        assert (root / rel).is_dir(), rel
    home = os.stat(root / "home/learner")
    assert (home.st_uid, home.st_gid) == (1000, 1000)

    assert (root / "etc/hostname").read_text() == "sandbox\n"
    assert "localhost" in (root / "etc/hosts").read_text()
    resolv = (root / "etc/resolv.conf").read_text()
    assert "nameserver" not in resolv and "egress" in resolv
    assert (root / "etc/machine-id").read_bytes() == b""
    shadow = os.stat(root / "etc/shadow")
    assert (stat.S_IMODE(shadow.st_mode), shadow.st_uid, shadow.st_gid) == (0o640, 0, 42)
    for line in (root / "etc/shadow").read_text().splitlines():
        assert line.split(":")[1] in ("*", "!"), "every password is locked"

    # Owned by host root, except the learner's home and the shadow files' group.
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            s = os.lstat(path)
            if path == root / "home/learner":
                continue
            assert s.st_uid == 0, path
            assert s.st_gid == (42 if name in ("shadow", "gshadow") else 0), path
            assert not s.st_mode & (stat.S_ISUID | stat.S_ISGID) or stat.S_ISDIR(s.st_mode), path


@pytest.mark.privileged
def test_host_image_holds_no_host_secrets(store):
    etc = store.ensure_host().rootfs / "etc"
    host_shadow = Path("/etc/shadow").read_text()
    assert (etc / "shadow").read_text() != host_shadow
    host_root = next(line for line in host_shadow.splitlines() if line.startswith("root:"))
    root_hash = host_root.split(":")[1]
    image_bytes = b"".join(p.read_bytes() for p in etc.rglob("*")
                           if p.is_file() and not p.is_symlink())
    assert host_root.encode() not in image_bytes
    if len(root_hash) > 2:  # a real hash, not just "*" or "!"
        assert root_hash.encode() not in image_bytes
    assert not list(etc.glob("ssh/ssh_host_*"))
    assert not (etc / "ssl/private").exists()
    assert not list(etc.glob("sudoers*"))
    assert not [p for p in etc.iterdir() if p.name.endswith("-")]
    # Nothing that is root-only on the host was copied.
    for path in etc.rglob("*"):
        host = Path("/etc") / path.relative_to(etc)
        if path.is_file() and not path.is_symlink() and host.exists() and not host.is_symlink():
            if path.name not in ("shadow", "gshadow"):
                assert os.stat(host).st_mode & 0o004, host


@pytest.mark.privileged
def test_copy_etc_filters_planted_secrets(tmp_path):
    require_root()
    src, dst = tmp_path / "etc", tmp_path / "copy"
    for d in ("ssh", "ssl/private", "sudoers.d", "apt/auth.conf.d", "app"):
        (src / d).mkdir(parents=True)
    os.chmod(src / "ssl/private", 0o710)
    planted = {
        "shadow": (0o640, "root:$6$PLANTEDHASH:19000:0:99999:7:::\n"),
        "gshadow": (0o640, "root:*::\n"),
        "passwd-": (0o644, "old backup\n"),
        "machine-id": (0o444, "0123456789abcdef0123456789abcdef\n"),
        "ssh/ssh_host_ed25519_key": (0o600, "PRIVATE\n"),
        "ssh/ssh_host_ed25519_key.pub": (0o644, "ssh-ed25519 AAAA host\n"),
        "ssl/private/key.pem": (0o600, "PRIVATE\n"),
        "sudoers": (0o440, "root ALL=(ALL) ALL\n"),
        "sudoers.d/extra": (0o440, "x\n"),
        "app/token": (0o600, "SECRET\n"),
        "app/readable.conf": (0o640, "db_password=SECRET\n"),
        "app/public.conf": (0o644, "fine\n"),
        "ssh/ssh_config": (0o644, "Host *\n"),
    }
    for rel, (mode, text) in planted.items():
        (src / rel).write_text(text)
        os.chmod(src / rel, mode)
    os.symlink("/usr/share/zoneinfo/Etc/UTC", src / "localtime")
    dst.mkdir()
    im.copy_etc(dst, src)
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert copied == ["app", "app/public.conf", "apt", "localtime", "ssh", "ssh/ssh_config", "ssl"]
    assert os.readlink(dst / "localtime") == "/usr/share/zoneinfo/Etc/UTC"


@pytest.mark.privileged
def test_rebuild_is_idempotent_and_keeps_a_rootfs_in_use(store, tmp_path):
    first = store.ensure_host()
    again = store.ensure_host()
    assert again.rootfs == first.rootfs and again.created == first.created
    record = first.rootfs.parent / "image.json"

    def pretend_inputs_changed():
        meta = json.loads(record.read_text())
        meta["inputs"] = "changed"
        record.write_text(json.dumps(meta))

    # A rebuild makes a new rootfs; the old one stays while a mount uses it (a
    # running sandbox's overlay), and goes with the next rebuild once it is free.
    pretend_inputs_changed()
    target = tmp_path / "in-use"
    target.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(first.rootfs), str(target)], check=True)
    try:
        second = store.ensure_host()
        assert second.rootfs != first.rootfs and second.rootfs.is_dir()
        assert first.rootfs.is_dir()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    pretend_inputs_changed()
    third = store.ensure_host()
    assert not first.rootfs.exists() and not second.rootfs.exists()
    assert sorted(p.name for p in third.rootfs.parent.iterdir()) == sorted(
        [".lock", "image.json", third.rootfs.name])
    assert store.get("host").rootfs == third.rootfs


@pytest.mark.privileged
def test_get_and_list(store):
    assert [i.name for i in store.list()] == ["host"]
    host = store.get("host")
    assert host.to_json()["name"] == "host"
    assert host.to_json()["binds"][0] == ["/usr", "usr"]
    assert host.size_bytes > 0
    with pytest.raises(NotFound) as info:
        store.get("nope")
    assert "host" in info.value.message and info.value.reason == Reason.NO_SUCH_IMAGE
    for bad in ("../host", "", "a/b", "Host"):
        with pytest.raises(InvalidRequest):
            store.get(bad)


# --- offline pieces of the Debian build -----------------------------------------------

MMDEBSTRAP_OUTPUT = """\
I: chroot architecture amd64 is equal to the host's architecture
I: automatically chosen format: directory
I: running apt-get update...
I: downloading packages with apt...
0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.
Get:1 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9 [2759 kB]
Get:2 http://deb.debian.org/debian bookworm/main amd64 bash amd64 5.2.15-2 [1491 kB]
I: extracting archives...
I: installing essential packages...
Unpacking libc6:amd64 (2.36-9) ...
Unpacking bash (5.2.15-2) ...
Setting up libc6:amd64 (2.36-9) ...
Setting up bash (5.2.15-2) ...
I: installing remaining packages inside the chroot...
0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.
Get:1 http://deb.debian.org/debian bookworm/main amd64 nginx-light amd64 1.22.1-9 [20 kB]
Unpacking nginx-light (1.22.1-9) ...
Setting up nginx-light (1.22.1-9) ...
I: cleaning package lists and apt cache...
I: success in 24.1 seconds
"""


def test_bootstrap_progress_is_monotonic_and_names_packages():
    seen = []
    tracker = im.BootstrapProgress(lambda f, m: seen.append((f, m)))
    for line in MMDEBSTRAP_OUTPUT.splitlines():
        tracker.feed(line)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < 0.1 and fractions[-1] == pytest.approx(0.98)
    messages = [m for _, m in seen]
    assert "downloading essential packages: bash" in messages
    assert "installing essential packages: libc6:amd64" in messages
    assert "installing lesson tools: nginx-light" in messages
    # The essential stage ends where the next starts, having counted every package.
    essential = [f for f, m in seen if m.startswith("installing essential packages:")]
    assert essential[-1] == pytest.approx(0.55)


def test_default_mirror_reads_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert im.default_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    assert (im.default_mirror("bookworm-security", tmp_path)
            == "http://security.example/debian-security")
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64 signed-by=/k.gpg] http://old.example/debian trixie main\n")
    assert im.default_mirror("trixie", tmp_path) == "http://old.example/debian"
    assert im.default_mirror("sid", tmp_path) == im.DEFAULT_MIRROR


@pytest.mark.privileged
def test_write_identity_merges_into_a_distribution(tmp_path):
    require_root()
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nshadow:x:42:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nshadow:*::\n")
    (etc / "hostname").write_text("build-host\n")
    im.write_identity(etc, merge=True)
    passwd = (etc / "passwd").read_text().splitlines()
    assert passwd[:2] == ["root:x:0:0:root:/root:/bin/bash",
                          "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin"]
    assert "learner:x:1000:1000:Learner:/home/learner:/bin/bash" in passwd
    assert sum(line.startswith("root:") for line in passwd) == 1
    groups = (etc / "group").read_text().splitlines()
    assert sum(line.startswith("shadow:") for line in groups) == 1
    assert "learner:x:1000:" in groups
    assert "learner:!:" in (etc / "shadow").read_text()
    assert (etc / "hostname").read_text() == "sandbox\n"


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_in_a_log():
    tty = FakeTTY()
    report = im.progress_bar(tty)
    report(0.42, "installing lesson tools: nginx-light")
    report(1.0, "done")
    out = tty.getvalue()
    bar = "[" + "#" * 12 + "." * 18 + "]"
    assert f"\r\x1b[K{bar}  42%  installing lesson tools: nginx-light" in out
    assert out.endswith("100%  done\n")

    log = io.StringIO()
    report = im.progress_bar(log)
    report(0.42, "extracting")
    report(0.42, "extracting")  # the same line twice is printed once
    report(1.0, "done")
    assert log.getvalue() == " 42%  extracting\n100%  done\n"
