"""Pure rules of running a container inside its image: Kubernetes' command/args over the
image's ENTRYPOINT/CMD, the user and groups containerd resolves, runAsNonRoot, capabilities,
symlinks that must not lead out of the root filesystem, image references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lightkube.models.core_v1 import (
    Capabilities,
    Container,
    PodSecurityContext,
    PodSpec,
    SecurityContext,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from drover_localcluster.images.layout import Image, ImageConfig, normalize, repository
from drover_localcluster.nodeagent.imagerun import (
    ContainerConfigError,
    capabilities,
    identity,
    image_env,
    process_argv,
)
from drover_localcluster.nodeagent.sandbox import DEFAULT_CAPABILITIES, resolve_in


def image(**config: Any) -> Image:
    fields = {"user": "", "entrypoint": (), "cmd": (), "env": (), "working_dir": "", **config}
    return Image("ghcr.io/acme/app:1", "sha256:" + "0" * 64, ImageConfig(**fields), ())


def pod(context: PodSecurityContext | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="ns"),
        spec=PodSpec(containers=[Container(name="c")], securityContext=context),
    )


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, ["tini", "--", "serve", "--port=80"]),  # ENTRYPOINT + CMD
        (None, ["--port=$(PORT)"], ["tini", "--", "--port=8080"]),  # args replace CMD only
        (["run"], None, ["run"]),  # command replaces both ...
        (["run"], ["x"], ["run", "x"]),  # ... and args follow it
        (["echo", "$$(PORT)"], None, ["echo", "$(PORT)"]),
    ],
)
def test_command_and_args_combine_with_the_image_as_kubernetes_does(
    command: list[str] | None, args: list[str] | None, expected: list[str]
) -> None:
    img = image(entrypoint=("tini", "--"), cmd=("serve", "--port=80"))
    container = Container(name="c", command=command, args=args)
    assert process_argv(container, img, {"PORT": "8080"}) == expected


def test_the_image_parts_are_never_expanded() -> None:
    img = image(entrypoint=("sh", "-c", "echo $(HOME)"))
    assert process_argv(Container(name="c"), img, {"HOME": "/x"}) == ["sh", "-c", "echo $(HOME)"]


def test_environment_starts_from_the_image_and_the_node_wins() -> None:
    img = image(env=("PATH=/opt/bin", "LANG=C.UTF-8", "HOSTNAME=image"))
    env = image_env(img, {"HOSTNAME": "pod", "KUBERNETES_SERVICE_PORT": "6443"})
    assert env == {
        "PATH": "/opt/bin",
        "LANG": "C.UTF-8",
        "HOSTNAME": "pod",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    assert image_env(image(), {})["PATH"].startswith("/usr/local/sbin:")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\ndrover:x:10001:10001::/home/drover:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\ndrover:x:10001:\nstaff:x:50:drover,other\n")
    return tmp_path / "rootfs"


def test_image_user_by_name_resolves_in_the_image(rootfs: Path) -> None:
    who = identity(rootfs, "drover", pod(), Container(name="c"))
    assert (who.uid, who.gid, who.groups, who.home) == (10001, 10001, (10001, 50), "/home/drover")


def test_numeric_image_user_and_group(rootfs: Path) -> None:
    who = identity(rootfs, "10001:50", pod(), Container(name="c"))
    assert (who.uid, who.gid) == (10001, 50)
    nobody = identity(rootfs, "4242", pod(), Container(name="c"))
    assert (nobody.uid, nobody.gid, nobody.home) == (4242, 0, "/")  # not in passwd


def test_security_context_overrides_the_image_user(rootfs: Path) -> None:
    context = PodSecurityContext(
        runAsUser=1000, runAsGroup=2000, fsGroup=3000, supplementalGroups=[4000]
    )
    container = Container(name="c", securityContext=SecurityContext(runAsUser=1234))
    who = identity(rootfs, "drover", pod(context), container)
    assert (who.uid, who.gid, who.groups) == (1234, 2000, (2000, 4000, 3000))


def test_run_as_non_root_refuses_root_and_names_it_cannot_check(rootfs: Path) -> None:
    context = PodSecurityContext(runAsNonRoot=True)
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        identity(rootfs, "", pod(context), Container(name="c"))
    with pytest.raises(ContainerConfigError, match="non-numeric user \\(drover\\)"):
        identity(rootfs, "drover", pod(context), Container(name="c"))
    assert identity(rootfs, "10001", pod(context), Container(name="c")).uid == 10001


def test_unknown_user_is_a_configuration_error(rootfs: Path) -> None:
    with pytest.raises(ContainerConfigError, match="unable to find user ghost"):
        identity(rootfs, "ghost", pod(), Container(name="c"))


def test_passwd_is_read_inside_the_image_even_through_an_absolute_symlink(
    rootfs: Path, tmp_path: Path
) -> None:
    (rootfs / "etc" / "real").mkdir()
    (rootfs / "etc" / "passwd").rename(rootfs / "etc" / "real" / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("/etc/real/passwd")  # absolute: inside the image
    assert identity(rootfs, "drover", pod(), Container(name="c")).uid == 10001


def test_symlinks_never_lead_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    (root / "up").symlink_to("../../..")
    (root / "loop").symlink_to("loop")
    assert resolve_in(str(root), "/escape/hosts") == str(root / "etc" / "hosts")
    assert resolve_in(str(root), "/up/up/etc") == str(root / "etc")
    assert resolve_in(str(root), "/../../etc/passwd") == str(root / "etc" / "passwd")
    with pytest.raises(Exception, match="symbolic links"):
        resolve_in(str(root), "/loop/x")


def test_capabilities_default_drop_add_and_privileged() -> None:
    def caps(context: SecurityContext | None) -> set[str]:
        return set(capabilities(Container(name="c", securityContext=context)))

    assert caps(None) == set(DEFAULT_CAPABILITIES)
    assert caps(SecurityContext(capabilities=Capabilities(drop=["ALL"]))) == set()
    dropped = caps(SecurityContext(capabilities=Capabilities(drop=["ALL"], add=["NET_ADMIN"])))
    assert dropped == {"NET_ADMIN"}
    assert "KILL" not in caps(SecurityContext(capabilities=Capabilities(drop=["CAP_KILL"])))
    assert "SYS_ADMIN" in caps(SecurityContext(privileged=True))


@pytest.mark.parametrize(
    ("reference", "normalized"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("acme/app:1", "docker.io/acme/app:1"),
        ("ghcr.io/drover-dev/drover-runner:0.1.0", "ghcr.io/drover-dev/drover-runner:0.1.0"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64),
    ],
)
def test_references_are_normalized_as_docker_does(reference: str, normalized: str) -> None:
    assert normalize(reference) == normalized


def test_repository_drops_tag_and_digest() -> None:
    assert repository("ghcr.io/acme/app:1") == "ghcr.io/acme/app"
    assert repository("localhost:5000/app@sha256:" + "a" * 64) == "localhost:5000/app"
