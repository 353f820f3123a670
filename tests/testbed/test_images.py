"""Testbed images: recipes hash by content, builds fail loudly, packs are real images.

The build tests need root, network access to the Debian mirror the first time
(minutes), and are instant afterwards thanks to the cache.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from kadeploy.errors import KadeployError
from kadeploy_testbed import images
from kadeploy_testbed.images import (
    DEFAULT_CACHE,
    PACKS,
    BuildLog,
    RootfsRecipe,
    UserImages,
    ensure_deploy_rootfs,
    ensure_user_images,
    environment_description,
)
from tests.requirements import require

# --------------------------------------------------------------------------- fast, no root


def test_recipe_digest_ignores_package_order_but_not_content() -> None:
    a = RootfsRecipe("x", ("python3", "openssh-server"))
    b = RootfsRecipe("x", ("openssh-server", "python3"))
    c = RootfsRecipe("x", ("openssh-server", "python3", "vim"))
    d = RootfsRecipe("x", ("openssh-server", "python3"), version=a.version + 1)
    assert a.digest() == b.digest()
    assert len({a.digest(), c.digest(), d.digest(), a.digest("sshd tweak")}) == 4


def test_failed_build_command_names_the_command_and_the_log(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "logs" / "x.log")
    with pytest.raises(KadeployError) as raised:
        log.run(["sh", "-c", "echo boom-output; exit 3"])
    message = str(raised.value)
    assert "exit status 3" in message
    assert "echo boom-output" in message
    assert str(log.path) in message
    assert "boom-output" in log.path.read_text()


def test_build_command_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "x.log")
    started = time.monotonic()
    with pytest.raises(KadeployError, match="timed out"):
        log.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5


def test_missing_build_tool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KadeployError, match="cannot run"):
        BuildLog(tmp_path / "x.log").run(["/nonexistent/debootstrap"])


def test_cached_build_is_returned_without_rebuilding(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(work: Path, log: BuildLog) -> None:
        calls.append(work)
        (work / "content").write_text("built")

    require("root")  # the first build checks for root
    first = images._build_cached(tmp_path, "thing", "abc123", build)
    second = images._build_cached(tmp_path, "thing", "abc123", build)
    assert first == second == tmp_path / "thing-abc123"
    assert (first / "content").read_text() == "built"
    assert len(calls) == 1
    assert not list(tmp_path.glob(".build-*"))


def test_failed_build_leaves_no_partial_tree(tmp_path: Path) -> None:
    require("root")  # the build checks for root

    def build(work: Path, log: BuildLog) -> None:
        (work / "half").write_text("x")
        log.run(["false"])

    with pytest.raises(KadeployError, match="false"):
        images._build_cached(tmp_path, "thing", "def456", build)
    assert not (tmp_path / "thing-def456").exists()
    assert not list(tmp_path.glob(".build-*"))


def test_unusable_cache_directory_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    require("root")  # a build checks for root first
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert images.main_build(["--cache", str(not_a_directory), "--only", "deploy"]) == 1
    error = capsys.readouterr().err
    assert f"cannot use the image cache {not_a_directory}" in error
    assert "Traceback" not in error


def test_prune_keeps_current_builds_and_other_rooms_builds(tmp_path: Path) -> None:
    for name in ("deploy-rootfs-old111", "deploy-rootfs-new222", "user-images-old333",
                 "user-images-new444", "deploy-kernel-abc555"):
        (tmp_path / name / "etc").mkdir(parents=True)
    (tmp_path / "deploy-rootfs").symlink_to("deploy-rootfs-new222")
    (tmp_path / "user-images").symlink_to("user-images-new444")
    removed = images.prune_cache(tmp_path)
    assert sorted(p.name for p in removed) == ["deploy-rootfs-old111", "user-images-old333"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "deploy-kernel-abc555", "deploy-rootfs", "deploy-rootfs-new222",
        "user-images", "user-images-new444"]


def test_environment_description_follows_the_kadeploy_format(tmp_path: Path) -> None:
    by_suffix = {pack.suffix: pack for pack in PACKS}
    tzst = environment_description(by_suffix["tzst"], tmp_path / "debian12-min.tzst")
    assert tzst["name"] == "debian12-min-tzst"
    assert tzst["image"] == {"file": f"server://{tmp_path}/debian12-min.tzst",
                             "kind": "tar", "compression": "zstd"}
    dd = environment_description(by_suffix["ddgz"], tmp_path / "debian12-min.ddgz")
    assert dd["image"]["kind"] == "dd" and dd["image"]["compression"] == "gzip"
    tgz = environment_description(by_suffix["tgz"], tmp_path / "debian12-min.tgz")
    assert tgz["name"] == "debian12-min" and tgz["version"] == 1
    for description in (tzst, dd, tgz):
        assert description["os"] == "linux"
        assert description["boot"] == {"kernel": "/vmlinuz", "initrd": "/initrd.img"}
        assert description["filesystem"] == "ext4"
        assert description["partition_type"] == 131


def test_every_description_is_accepted_by_the_catalog_parser(tmp_path: Path) -> None:
    from kadeploy.catalog.environment import parse_environment

    for pack in PACKS:
        text = "---\n" + yaml.safe_dump(
            environment_description(pack, tmp_path / f"debian12-min.{pack.suffix}"))
        parsed = parse_environment(text, f"{pack.env_name}.yaml")
        assert (parsed.name, parsed.image.kind, parsed.image.compression) == \
            (pack.env_name, pack.kind, pack.compression)


def test_mounts_below_sees_real_mounts_only_under_the_path(tmp_path: Path) -> None:
    assert images._mounts_below(tmp_path) == []
    assert Path("/") in images._mounts_below(Path("/"))


# --------------------------------------------------------------------------- real builds

CACHE = Path(os.environ.get("KADEPLOY_TESTBED_CACHE", str(DEFAULT_CACHE)))


@pytest.fixture(scope="module")
def deploy_rootfs() -> Path:
    return ensure_deploy_rootfs(CACHE)


@pytest.fixture(scope="module")
def user_images() -> UserImages:
    return ensure_user_images(CACHE)


def _listing(archive: Path, decompressor: str) -> set[str]:
    proc = subprocess.run(["tar", "-I", decompressor, "-tf", str(archive)],
                          capture_output=True, text=True, timeout=600, check=True)
    return set(proc.stdout.splitlines())


@pytest.mark.root
@pytest.mark.slow
def test_deploy_rootfs_has_the_deployment_tools_and_sshd_config(deploy_rootfs: Path) -> None:
    for tool in ("usr/sbin/sshd", "usr/bin/python3", "usr/sbin/parted", "usr/sbin/fdisk",
                 "usr/sbin/mkfs.ext4", "usr/sbin/mkfs.xfs", "usr/sbin/mkfs.vfat", "usr/bin/tar",
                 "usr/bin/zstd", "usr/bin/pigz", "usr/bin/xz", "usr/bin/bzip2", "usr/sbin/kexec",
                 "usr/bin/nc", "usr/sbin/ip", "etc/ssh/ssh_host_ed25519_key"):
        assert (deploy_rootfs / tool).exists(), tool
    config = subprocess.run(["chroot", str(deploy_rootfs), "/usr/sbin/sshd", "-T"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "permitrootlogin without-password" in config or \
        "permitrootlogin prohibit-password" in config
    assert "usedns no" in config
    assert not list((deploy_rootfs / "var/lib/apt/lists").glob("*_Packages"))
    assert (CACHE / "deploy-rootfs").resolve() == deploy_rootfs.resolve()


@pytest.mark.root
@pytest.mark.slow
def test_second_ensure_builds_nothing(deploy_rootfs: Path, user_images: UserImages, monkeypatch) -> None:
    def no_build(*_args: object):
        def build(work: Path, log: BuildLog) -> None:
            raise AssertionError(f"the second ensure rebuilt an image in {work}")
        return build

    # shown by the builders not being called, not by a time bound a loaded machine could break
    monkeypatch.setattr(images, "_build_deploy_rootfs", no_build)
    monkeypatch.setattr(images, "_build_user_images", no_build)
    assert ensure_deploy_rootfs(CACHE) == deploy_rootfs
    assert ensure_user_images(CACHE) == user_images


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("suffix,decompressor", [("tgz", "gzip"), ("txz", "xz"),
                                                 ("tzst", "zstd")])
def test_tarballs_hold_sshd_and_the_kernel(user_images: UserImages, suffix: str,
                                           decompressor: str) -> None:
    names = _listing(getattr(user_images, suffix), decompressor)
    for member in ("./usr/sbin/sshd", "./vmlinuz", "./initrd.img", "./usr/bin/python3",
                   "./etc/ssh/sshd_config.d/kadeploy-testbed.conf"):
        assert member in names, member
    assert any(n.startswith("./usr/lib/modules/") and n.endswith("/modules.dep") for n in names)
    assert any("/kernel/drivers/net/ethernet/" in n for n in names)
    assert not any("/kernel/drivers/gpu/" in n for n in names)


@pytest.mark.root
@pytest.mark.slow
def test_tarball_keeps_numeric_root_ownership(user_images: UserImages) -> None:
    with tarfile.open(user_images.tgz) as archive:
        shadow = archive.getmember("./etc/shadow")
        sshd = archive.getmember("./usr/sbin/sshd")
        assert (shadow.uid, sshd.uid) == (0, 0)
        root_entry = next(line for line in archive.extractfile(shadow).read().decode().splitlines()
                          if line.startswith("root:"))
    assert root_entry.split(":")[1].startswith(("!", "*"))   # password locked


@pytest.mark.root
@pytest.mark.slow
def test_descriptions_parse_and_name_their_image(user_images: UserImages) -> None:
    assert set(user_images.descriptions) == {p.env_name for p in PACKS}
    for pack in PACKS:
        description = yaml.safe_load(user_images.descriptions[pack.env_name].read_text())
        assert description["name"] == pack.env_name
        image_path = Path(description["image"]["file"].removeprefix("server://"))
        assert image_path == getattr(user_images, pack.suffix)
        assert image_path.is_file() and image_path.stat().st_size > 10 * 2**20
        assert description["image"]["kind"] == pack.kind


@pytest.mark.root
@pytest.mark.slow
def test_ddgz_is_a_clean_ext4_filesystem_with_the_system(user_images: UserImages,
                                                         tmp_path: Path) -> None:
    raw = tmp_path / "root.ext4"
    with gzip.open(user_images.ddgz, "rb") as source, raw.open("wb") as target:
        shutil.copyfileobj(source, target, 4 * 2**20)
    header = subprocess.run(["dumpe2fs", "-h", str(raw)], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert "Filesystem state:         clean" in header
    assert "has_journal" in header
    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True,
                              text=True, timeout=60, check=True).stdout

    assert "Type: regular" in debugfs("stat /usr/sbin/sshd")
    assert 'VERSION_CODENAME=bookworm' in debugfs("cat /usr/lib/os-release")
    fsck = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert fsck.returncode == 0, fsck.stdout


# --------------------------------------------------------------------------- the images boot sshd

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def chrooted_sshd(rootfs: Path, work: Path) -> Iterator[tuple[int, Path]]:
    """Start the rootfs's own /usr/sbin/sshd in a chroot of an overlay on it, as the
    testbed does when it boots a partition; yield (port, client key)."""
    upper, workdir, merged = work / "upper", work / "work", work / "merged"
    for directory in (upper, workdir, merged):
        directory.mkdir()
    mounted: list[Path] = []

    def mount(*args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, timeout=30)
        mounted.append(target)

    sshd: subprocess.Popen[bytes] | None = None
    try:
        mount("-t", "overlay", "overlay", "-o",
              f"lowerdir={rootfs},upperdir={upper},workdir={workdir}", target=merged)
        mount("--bind", "/dev", target=merged / "dev")
        mount("-t", "proc", "proc", target=merged / "proc")
        mount("-t", "tmpfs", "tmpfs", target=merged / "run")
        (merged / "run/sshd").mkdir()
        key = work / "id_test"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, timeout=30)
        authorized = merged / "root/.ssh/authorized_keys"
        authorized.write_text(key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        port = _free_port()
        # -D keeps sshd in the foreground (chroot execs it), so its pid is ours to stop.
        sshd = subprocess.Popen(["chroot", str(merged), "/usr/sbin/sshd", "-D", "-e",
                                 "-p", str(port), "-o", "ListenAddress=127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert sshd.poll() is None, "sshd exited"
                assert time.monotonic() < deadline, "sshd did not listen within 20 s"
                time.sleep(0.1)
        yield port, key
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=10)
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False, timeout=30)


def _ssh(port: int, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.root
@pytest.mark.slow
def test_user_image_sshd_accepts_the_deploy_key(user_images: UserImages, tmp_path: Path) -> None:
    with chrooted_sshd(user_images.rootfs, tmp_path) as (port, key):
        result = _ssh(port, key, "cat /etc/os-release; python3 -c 'print(6*7)'")
        assert result.returncode == 0, result.stderr
        assert 'VERSION_ID="12"' in result.stdout
        assert "42" in result.stdout
    assert images._mounts_below(tmp_path) == []


@pytest.mark.root
@pytest.mark.slow
def test_deploy_rootfs_runs_the_deployment_tools_over_ssh(deploy_rootfs: Path,
                                                          tmp_path: Path) -> None:
    with chrooted_sshd(deploy_rootfs, tmp_path) as (port, key):
        result = _ssh(port, key, "parted -v && mkfs.xfs -V && kexec -v && zstd -V && "
                                 "pigz -V && fsarchiver -V && nc -h 2>&1 | head -1")
        assert result.returncode == 0, result.stderr
        assert "GNU parted" in result.stdout and "mkfs.xfs" in result.stdout
        assert "fsarchiver 0.8" in result.stderr  # fsarchiver -V prints on stderr
    assert images._mounts_below(tmp_path) == []


@pytest.mark.root
@pytest.mark.slow
def test_image_build_command_prints_every_image_and_description(
        deploy_rootfs: Path, user_images: UserImages, capsys) -> None:
    assert images.main_build(["--cache", str(CACHE)]) == 0
    printed = capsys.readouterr().out
    assert str(deploy_rootfs) in printed
    for pack in PACKS:
        assert str(user_images.descriptions[pack.env_name]) in printed
    assert str(images.ensure_fsa_images(CACHE).description) in printed


# --------------------------------------------------------------------------- the fsa multipart image


@pytest.fixture(scope="module")
def fsa_images() -> images.FsaImages:
    return images.ensure_fsa_images(CACHE)


@pytest.mark.root
@pytest.mark.slow
def test_fsa_archive_holds_the_root_and_data_filesystems_in_id_order(fsa_images: images.FsaImages) -> None:
    archinfo = subprocess.run(["fsarchiver", "archinfo", str(fsa_images.image)], capture_output=True, text=True,
                              timeout=120, check=True)
    info = archinfo.stdout + archinfo.stderr  # fsarchiver prints its report on stderr
    ids = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Filesystem id in archive")]
    labels = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Filesystem label")]
    assert ids == ["0", "1"] and labels == ["root", "fsa-data"]
    assert (CACHE / images.FSA_FAMILY).resolve() == fsa_images.directory.resolve()


@pytest.mark.root
@pytest.mark.slow
def test_fsa_restores_onto_block_devices_with_its_markers(fsa_images: images.FsaImages, tmp_path: Path) -> None:
    """What decompress_environment does on a node, on two loop devices of this host."""
    targets = []
    for name, size in (("root", "1200M"), ("data", "64M")):
        disk = tmp_path / f"{name}.img"
        subprocess.run(["truncate", "-s", size, str(disk)], check=True)
        targets.append(disk)
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    devices = [subprocess.run(["losetup", "--find", "--show", str(disk)], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip() for disk in targets]
    try:
        subprocess.run(["fsarchiver", "-j", "2", "-z", str(images.FSA_COMPRESSION), "restfs", str(fsa_images.image),
                        f"id=0,dest={devices[0]}", f"id=1,dest={devices[1]}"], capture_output=True, check=True,
                       timeout=900)
        read = {}
        for device, path in ((devices[0], images.FSA_ROOT_MARKER), (devices[1], images.FSA_DATA_MARKER)):
            subprocess.run(["mount", "-o", "ro", device, str(mount_point)], check=True, timeout=30)
            try:
                read[path] = (mount_point / path.lstrip("/")).read_text()
                if path == images.FSA_ROOT_MARKER:
                    assert (mount_point / "vmlinuz").exists() and (mount_point / "usr/sbin/sshd").exists()
            finally:
                subprocess.run(["umount", str(mount_point)], check=True, timeout=30)
        assert read == {images.FSA_ROOT_MARKER: fsa_images.root_marker,
                        images.FSA_DATA_MARKER: fsa_images.data_marker}
    finally:
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False, timeout=30)


@pytest.mark.root
@pytest.mark.slow
def test_fsa_description_is_a_valid_multipart_environment(fsa_images: images.FsaImages) -> None:
    from kadeploy.catalog.environment import parse_environment

    env = parse_environment(fsa_images.description.read_text(), str(fsa_images.description))
    assert env.multipart and env.image_kind_short == f"fsa{images.FSA_COMPRESSION}" and env.warnings == []
    assert Path(env.image.file.removeprefix("server://")) == fsa_images.image
    assert [(p.id, p.device) for p in env.options.partitions] == [(0, "/dev/sda3"), (1, "/dev/sda5")]
    assert (env.boot.block_device, env.boot.partition) == ("/dev/sda", 3)
