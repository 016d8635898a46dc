"""What checks read of a sandbox's container store (`nslab.labkit.images`) and the glass box
they show after a pass (`nslab.labkit.glassbox`), on stores and facts shaped like the real
ones (tests/test_docker_course.py reads a real store through a real sandbox).

The store is the learner's to write: a forged or broken one must give a clear Fail or a
missing image, never a crash and never a loop."""

from __future__ import annotations

import base64
import json

import pytest

from nslab.labkit.check import Fail, SandboxView
from nslab.labkit.glassbox import FLAGS, glass_box
from nslab.labkit.images import (IMAGES_JSON, LAYERS_JSON, STORE, StoreUnreadable,
                                 name_matches, read_images)

NGINX_ID = "055ec96289239f83fe266759b35f719028f526b81db5f7f6dbcff577ff76d6fc"
BUILD_ID = "46531f9c78d19338baa8436a9f6d1c6ac31ebf21eef34cd2950176ca46438b11"


def store(images, layers, extra=None) -> dict[str, bytes]:
    files = {IMAGES_JSON: json.dumps(images).encode(), LAYERS_JSON: json.dumps(layers).encode()}
    files.update(extra or {})
    return files


def reader(files: dict[str, bytes]):
    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]
    return read


def config_path(image_id: str) -> str:
    key = base64.b64encode(f"sha256:{image_id}".encode()).decode()
    return f"{STORE}/overlay-images/{image_id}/={key}"


LAYERS = [{"id": "base", "diff-digest": "sha256:base", "diff-size": 100},
          {"id": "run", "parent": "base", "diff-digest": "sha256:run", "diff-size": 5},
          {"id": "copy", "parent": "run", "diff-digest": "sha256:copy", "diff-size": 2}]
IMAGES = [{"id": NGINX_ID, "digest": "sha256:e35f", "names": ["docker.io/library/nginx:latest"],
           "layer": "base"},
          {"id": BUILD_ID, "digest": "sha256:d998", "names": ["localhost/testnginx:7"],
           "layer": "copy"},
          {"id": "f" * 64, "layer": "run"}]  # an intermediate build image: no name


def test_images_with_names_digests_and_layer_chains_bottom_first():
    images = read_images(reader(store(IMAGES, LAYERS)))
    assert [i.id for i in images] == [NGINX_ID, BUILD_ID, "f" * 64]
    nginx, build, mid = images
    assert nginx.digest == "sha256:e35f" and nginx.named("nginx") and nginx.named("nginx:latest")
    assert [layer.id for layer in build.layers] == ["base", "run", "copy"]
    assert build.top_layer.diff_digest == "sha256:copy" and build.top_layer.size == 2
    assert build.named("testnginx:7") and not build.named("testnginx")  # :latest is not :7
    assert mid.names == () and mid.digest is None


@pytest.mark.parametrize("label,wanted,matches", [
    ("docker.io/library/nginx:latest", "nginx", True),
    ("docker.io/library/nginx:latest", "nginx:latest", True),
    ("docker.io/library/nginx:latest", "docker.io/library/nginx:latest", True),
    ("docker.io/library/nginx:latest", "nginx:1", False),
    ("docker.io/library/nginx:latest", "ngin", False),
    ("localhost/testnginx:1", "testnginx:1", True),
    ("localhost/testnginx:1", "testnginx", False),
    ("localhost/testnginx:1", "testnginx:10", False),
    ("docker.io/library/debian:bookworm", "debian:bookworm", True),
    ("docker.io/library/debian:bookworm", "debian", False),
    (None, "nginx", False),
])
def test_names_resolve_as_docker_resolves_them(label, wanted, matches):
    assert name_matches(label, wanted) is matches


def test_no_store_is_no_images():
    assert read_images(reader({})) == []


def test_store_without_layers_file_still_lists_images():
    files = store(IMAGES, LAYERS)
    del files[LAYERS_JSON]
    assert [i.layers for i in read_images(reader(files))] == [(), (), ()]


@pytest.mark.parametrize("images_bytes", [b"{not json", b"\xff\xfe", b'{"id": 1}', b"42"])
def test_a_broken_store_is_unreadable_not_a_crash(images_bytes):
    files = store(IMAGES, LAYERS)
    files[IMAGES_JSON] = images_bytes
    with pytest.raises(StoreUnreadable):
        read_images(reader(files))


def test_forged_entries_are_skipped_and_a_layer_loop_ends():
    layers = [{"id": "a", "parent": "b"}, {"id": "b", "parent": "a"}, "junk", {"id": 3}]
    images = [{"id": "x" * 64, "layer": "a", "names": ["ok:1", 5, None]}, "junk", {"names": []},
              {"id": "y" * 64, "layer": "missing", "digest": 7}]
    x, y = read_images(reader(store(images, layers)))
    assert [layer.id for layer in x.layers] == ["b", "a"] and x.names == ("ok:1",)
    assert y.layers == () and y.digest is None


def test_config_gives_entrypoint_and_history():
    conf = {"created": "2026-12-07T11:29:40Z",
            "config": {"Entrypoint": ["nginx", "-g", "daemon off;"], "Env": ["PATH=/bin"]},
            "history": [{"created_by": "mmdebstrap"},
                        {"created_by": "/bin/sh -c #(nop) ENTRYPOINT [\"nginx\"]",
                         "empty_layer": True}, "junk"]}
    files = store(IMAGES, LAYERS, {config_path(BUILD_ID): json.dumps(conf).encode()})
    build = read_images(reader(files))[1]
    c = build.config()
    assert c.entrypoint == ("nginx", "-g", "daemon off;") and c.cmd is None
    assert [h.empty_layer for h in c.history] == [False, True]
    with pytest.raises(FileNotFoundError):
        read_images(reader(files))[0].config()  # no config blob kept for it


class Facts(SandboxView):
    """A view over fixed facts, as sandboxd would send them."""

    def __init__(self, facts: dict, files: dict[str, bytes] | None = None):
        super().__init__(None, "fake")
        self._facts = facts
        self._files = files or {}

    def read_file(self, path, pid=None, limit=1 << 20):
        return reader(self._files)(path)


SANDBOX_NS = {"cgroup": 10, "ipc": 11, "mnt": 12, "net": 13, "pid": 14, "user": 15, "uts": 16}


def facts(version: int, limits: dict) -> dict:
    init = {"host_pid": 100, "pid": 1, "nspids": [100, 1], "ppid": 1, "comm": "catatonit",
            "cmdline": ["catatonit"], "host_uid": 0, "uid": 0, "state": "S",
            "namespaces": SANDBOX_NS, "cgroup": "/", "cgroups": {}, "cpu_ns": 0,
            "cpus_allowed": "0-1"}
    ns = dict(SANDBOX_NS, ipc=21, mnt=22, net=23, pid=24, uts=26)
    container = {"pid_namespace": 24, "level": 1,
                 "main": {"pid": 1, "sandbox_pid": 283, "host_pid": 27170, "comm": "nginx",
                          "cmdline": ["nginx"], "parent_host_pid": 27160,
                          "parent_comm": "conmon"},
                 "processes": [27170], "namespaces": ns,
                 "new_namespaces": ["ipc", "mnt", "net", "pid", "uts"],
                 "cgroup": "/libpod_parent/libpod-abc", "cgroups": {}, "limits": limits,
                 "oom_kills": 0, "sockets": [], "id": "abc", "name": "web", "image": None}
    return {"cgroup_version": version, "processes": [init], "containers": [container]}


V1 = {"cpu_quota_us": 50000, "cpu_period_us": 100000, "cpus": 0.5, "cpu_shares": 512,
      "cpuset_cpus": "0", "memory_max": 64 << 20, "memsw_max": 128 << 20, "swap_max": 64 << 20,
      "memory_reservation": 32 << 20, "memory_swappiness": 10, "kmem_max": None,
      "oom_kill_disable": True, "under_oom": False, "oom_kills": 0, "pids_max": 50}
V2 = {"cpu_quota_us": 50000, "cpu_period_us": 100000, "cpus": 0.5, "cpu_weight": 20,
      "cpuset_cpus": "0", "memory_max": 64 << 20, "swap_max": 64 << 20,
      "memory_reservation": 32 << 20, "memory_low": 32 << 20, "memory_high": None,
      "oom_kills": 0, "pids_max": 50}


def test_glass_box_on_v1_names_each_flag_file_and_the_new_namespaces():
    sb = Facts(facts(1, V1))
    text = glass_box(sb, sb.container(name="web"), tuple(FLAGS))
    assert "| net | `23` | `13` | new |" in text and "| user | `15` | `15` | shared |" in text
    assert "pid 283 in your sandbox, 27170 on the host" in text and "`conmon`" in text
    for row in ("| `--cpus` | `cpu.cfs_quota_us` | `50000` |",
                "| `-c/--cpu-shares` | `cpu.shares` | `512` |",
                "| `-m/--memory` | `memory.limit_in_bytes` | `67108864` (64 MiB) |",
                "| `--memory-swap` | `memory.memsw.limit_in_bytes` | `134217728` (128 MiB) |",
                "| `--memory-reservation` | `memory.soft_limit_in_bytes` | `33554432` (32 MiB) |",
                "| `--oom-kill-disable` | `memory.oom_control` | `1` |",
                "| `--kernel-memory` | `memory.kmem.limit_in_bytes` | `max` (no limit) |",
                "| `--pids-limit` | `pids.max` | `50` |"):
        assert row in text, text
    assert "memory.swap.max" not in text and "cpu.max" not in text


def test_glass_box_on_v2_says_which_flags_do_nothing_there():
    sb = Facts(facts(2, V2))
    text = glass_box(sb, sb.containers[0], ("cpus", "cpu-shares", "memory-swap",
                                            "memory-swappiness", "oom-kill-disable",
                                            "kernel-memory"))
    assert "| `--cpus` | `cpu.max` | `50000 100000` |" in text
    assert "| `-c/--cpu-shares` | `cpu.weight` | `20` |" in text
    assert "| `--memory-swap` | `memory.swap.max` | `67108864` (64 MiB) |" in text
    assert "| `--oom-kill-disable` | — | no such switch: the flag is ignored |" in text
    assert "Its cgroup: `/sys/fs/cgroup/libpod_parent/libpod-abc`" in text


def test_glass_box_refuses_an_unknown_flag():
    sb = Facts(facts(1, V1))
    with pytest.raises(ValueError, match="cpu-quota"):
        glass_box(sb, sb.containers[0], ("cpu-quota",))


def test_sandbox_view_images_fail_clearly_on_a_broken_store():
    files = store(IMAGES, LAYERS)
    sb = Facts(facts(1, V1), files)
    assert sb.image("testnginx:7").id == BUILD_ID and sb.image("testnginx") is None
    files[LAYERS_JSON] = b"[{"
    with pytest.raises(Fail, match="cannot be read"):
        sb.images()
