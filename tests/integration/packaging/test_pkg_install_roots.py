"""The packages, built by packaging/build.sh, installed where no checkout is.

One build per module (a couple of minutes: a virtual environment from the
wheels, dpkg-deb, lintian, rpmbuild), then:

* the .deb files install with dpkg into a fresh Debian 12 root made by
  debootstrap (minbase plus what the packages depend on; the root is cached
  as a tarball under /var/cache/kadeploy-packaging, keyed by its package
  list and mirror), the `deploy` user and the deploy key are made,
  `kadeploy3d --check-config` accepts the sample configuration as the deploy
  user, the installed kadeploy3d serves it and every client answers `--help`
  and `--version` (the version is asked of that server, as Kadeploy3's
  clients do), the installed server and client deploy onto the installed
  fake testbed and, once, the debian12-min image onto 2 nodes of the netns
  virtual testbed (brought up from the checkout on the host; the root shares
  the host's network), a reinstall keeps a locally edited conffile, and a
  purge removes everything but the deploy user;
* the RPMs list the same files, require what they must, and install with
  `rpm --root` (scripts run: useradd, byte-compiling, the key) into another
  copy of that root, whose kadeploy3d then accepts the sample configuration.

The chroots run in their own network, mount and pid namespaces: the server
listens on the namespace's loopback, never the host's; except for the netns
testbed deployment, whose server listens on the testbed bridge's address, as
the testbed's configuration says (run that test under `flock
/tmp/kadeploy-lab.lock`: one testbed at a time).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.deployed import assert_debian_on_partition
from tests.requirements import require

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "packaging" / "build.sh"
CACHE = Path("/var/cache/kadeploy-packaging")
# what the packages depend on (socat: the testbed's fake BMC) and the server recommends (ipmitool: the power
# commands of the netns testbed's configuration), so that dpkg -i needs no network in the test
ROOT_PACKAGES = ("python3.11", "adduser", "openssh-client", "socat", "ipmitool")
CLIENTS = ("kadeploy3", "kareboot3", "kapower3", "kaconsole3", "kanodes3", "kaenv3", "kastat3", "karights3")
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
DEBVERSION = f"{VERSION}-1"


def _run(argv: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]


def _mirror() -> str:
    """The Debian mirror apt is configured with (deb822 `URIs:` or one-line `deb` entries)."""
    sources = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def _root_tarball() -> Path:
    """A debootstrapped Debian 12 root as a tarball, made once per package list and mirror."""
    mirror = _mirror()
    key = hashlib.sha256(f"bookworm minbase {' '.join(ROOT_PACKAGES)} {mirror}".encode()).hexdigest()[:12]
    tarball = CACHE / f"bookworm-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = CACHE / f"build-{key}-{os.getpid()}"
    partial = tarball.with_suffix(f".partial-{os.getpid()}")  # renamed into place whole: readers never see half
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        made = _run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}", "bookworm",
                     str(scratch), mirror], timeout=1200)
        assert made.returncode == 0, f"debootstrap from {mirror} failed:\n{made.stdout[-3000:]}{made.stderr[-3000:]}"
        packed = _run(["tar", "-C", str(scratch), "--numeric-owner", "-cf", str(partial), "."], timeout=600)
        assert packed.returncode == 0, packed.stderr
        partial.rename(tarball)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return tarball


def _fresh_root(tarball: Path, where: Path) -> Path:
    where.mkdir()
    unpacked = _run(["tar", "-C", str(where), "--numeric-owner", "-xpf", str(tarball)], timeout=600)
    assert unpacked.returncode == 0, unpacked.stderr
    hosts = where / "etc" / "hosts"
    if not hosts.exists():  # as the Debian installer writes it (debootstrap does not)
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    return where


def _in_root(root: Path, script: str, timeout: float = 300, *, host_network: bool = False,
             binds: Sequence[tuple[Path, bool]] = ()) -> subprocess.CompletedProcess[str]:
    """`sh -c script` chrooted in `root`, in new mount and pid namespaces and a new network namespace
    (loopback up), or the host's with `host_network`.

    `binds`: (host path, writable) pairs, each bind-mounted at the same path inside the root, in the
    private mount namespace only: they vanish with it, the host never sees them (so removing the
    root afterwards cannot reach through them). Every process started in the root dies with the pid
    namespace, also when this call times out (--kill-child)."""
    mounts = []
    for path, writable in binds:
        source, target = shlex.quote(str(path)), shlex.quote(f"{root}{path}")
        mounts.append(f"{{ [ -e {target} ] || mkdir -p {target}; }} && mount --bind {source} {target}"
                      + ("" if writable else f" && mount -o remount,bind,ro {target}"))
    inner = " && ".join([*mounts, *([] if host_network else ["ip link set lo up"]),
                         f"exec chroot {shlex.quote(str(root))} /bin/sh -c \"$0\""])
    return _run(["unshare", *([] if host_network else ["--net"]), "--mount", "--pid", "--fork", "--kill-child",
                 f"--mount-proc={root}/proc",
                 "/bin/sh", "-c", inner, f"set -e; export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8; {script}"],
                timeout=timeout)


def _ok(result: subprocess.CompletedProcess[str], what: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{what}: exit {result.returncode}\n{output[-4000:]}"
    assert "Traceback" not in output, f"{what}: a Python traceback\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("root", "debootstrap", "dpkg-dev", "lintian", "rpm")  # chroots and namespaces need root
    prebuilt = os.environ.get("KADEPLOY_PACKAGES_DIR")  # packages build.sh made earlier, to rerun only the checks
    if prebuilt:
        return Path(prebuilt)
    out = tmp_path_factory.mktemp("packages")
    built = _run([str(BUILD), str(out)], timeout=3600, cwd=REPO)
    assert built.returncode == 0, f"packaging/build.sh failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def root_tarball(packages: Path) -> Path:
    return _root_tarball()


def _debs(packages: Path) -> dict[str, Path]:
    debs = {path.name.split("_")[0]: path for path in packages.glob("*.deb")}
    assert sorted(debs) == ["kadeploy3-client", "kadeploy3-common", "kadeploy3-server", "kadeploy3-testbed"]
    return debs


def test_lintian_leaves_no_error_or_warning_unexplained(packages: Path) -> None:
    report = (packages / "lintian.txt").read_text()
    unexplained = [line for line in report.splitlines() if line[:2] in ("E:", "W:")]
    assert not unexplained, "\n".join(unexplained)
    # the overrides are there (and so are the tags they answer): the check ran on the packages
    assert "O: kadeploy3-client: wrong-path-for-interpreter" in report


def test_debs_split_and_conffiles(packages: Path) -> None:
    debs = _debs(packages)

    def contents(pkg: str) -> str:
        return _ok(_run(["dpkg-deb", "-c", str(debs[pkg])], timeout=120), f"dpkg-deb -c {pkg}")

    def field(pkg: str, name: str) -> str:
        return _run(["dpkg-deb", "-f", str(debs[pkg]), name], timeout=60).stdout.strip()

    server, client, common, testbed = (contents(p) for p in ("kadeploy3-server", "kadeploy3-client",
                                                                  "kadeploy3-common", "kadeploy3-testbed"))
    assert "./usr/sbin/kadeploy3d" in server and "./lib/systemd/system/kadeploy3d.service" in server
    assert "./usr/share/man/man8/kadeploy3d.8.gz" in server
    for tool in CLIENTS + ("kadeploy-capture",):
        assert f"./usr/bin/{tool}\n" in client, tool
        assert f"./usr/share/man/man1/{tool}.1.gz\n" in client, tool  # made from the tool's --help
        assert f"/usr/bin/{tool}" not in server + common
    assert "./usr/lib/kadeploy3/venv/lib/python3.11/site-packages/kadeploy/server/daemon.py" in common
    assert "./usr/lib/kadeploy3/venv/lib/python3.11/site-packages/sqlalchemy/" in common
    assert "kadeploy_testbed/" in testbed and "kadeploy_testbed/" not in common
    assert "__pycache__" not in common + testbed  # byte-code is made by postinst, removed by prerm
    conffiles = _run(["dpkg-deb", "-I", str(debs["kadeploy3-server"]), "conffiles"], timeout=60).stdout.split()
    assert {"/etc/kadeploy3/server.conf", "/etc/kadeploy3/clusters.conf", "/etc/kadeploy3/sample-cluster.conf",
            "/etc/kadeploy3/command.conf"} <= set(conffiles)
    assert _run(["dpkg-deb", "-I", str(debs["kadeploy3-client"]), "conffiles"], timeout=60).stdout.split() == [
        "/etc/kadeploy3/client.conf"]
    assert f"kadeploy3-common (= {DEBVERSION})" in field("kadeploy3-server", "Depends")
    assert "python3.11" in field("kadeploy3-common", "Depends")
    assert field("kadeploy3-common", "Architecture") != "all"  # compiled wheels inside
    assert "socat" in field("kadeploy3-testbed", "Depends")  # the fake mode's BMC script


@pytest.fixture(scope="module")
def deb_root(packages: Path, root_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Debian 12 root with the four .deb files installed by dpkg (the tests below share it, in order)."""
    root = _fresh_root(root_tarball, tmp_path_factory.mktemp("debroot") / "root")
    try:
        incoming = root / "tmp" / "debs"
        incoming.mkdir(parents=True)
        for deb in _debs(packages).values():
            shutil.copy(deb, incoming)
        assert not (root / "usr/lib/kadeploy3").exists() and not any(root.glob("**/pyproject.toml"))
        _ok(_in_root(root, "dpkg -i /tmp/debs/*.deb"), "dpkg -i")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)  # a root is 300 MB; nothing is mounted in it outside _in_root


def test_debs_install_make_the_user_key_and_byte_code(deb_root: Path) -> None:
    root = deb_root
    status = _ok(_in_root(root, "dpkg-query -W -f '${Package} ${Status}\\n' 'kadeploy3-*'"), "dpkg-query")
    assert status.count("install ok installed") == 4, status
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^deploy:x:\d+:\d+:[^:]*:/var/lib/kadeploy3:/usr/sbin/nologin$", passwd, re.M), passwd
    key = root / "etc/kadeploy3/keys/id_deploy"
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    assert oct((root / "etc/kadeploy3/server.conf").stat().st_mode & 0o777) == "0o640"
    assert list((root / "usr/lib/kadeploy3/venv/lib/python3.11/site-packages/kadeploy").glob("__pycache__/*.pyc"))


def test_installed_server_checks_the_sample_and_every_client_answers(deb_root: Path) -> None:
    root = deb_root
    checked = _ok(_in_root(root, "runuser -u deploy -- kadeploy3d --check-config"), "kadeploy3d --check-config")
    assert "Configuration in /etc/kadeploy3 is valid" in checked

    # the installed server, as its unit runs it (deploy user, run directory made as RuntimeDirectory would),
    # and each installed client against it
    clients = " ".join(CLIENTS)
    session = f"""
install -d -o deploy -g deploy -m 0750 /run/kadeploy3d
runuser -u deploy -- env KADEPLOY3_RUN_DIR=/run/kadeploy3d kadeploy3d --pidfile /run/kadeploy3d/pid \
    >/tmp/server.out 2>&1 &
i=0
until kanodes3 --version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 240 ] || {{ echo 'kadeploy3d did not answer'; cat /tmp/server.out; exit 1; }}; sleep 0.5
done
for tool in {clients}; do
    echo "== $tool --help"; $tool --help
    echo "== $tool --version"; $tool --version
done
echo "== kadeploy-capture --help"; kadeploy-capture --help
echo "== kadeploy-testbed --help"; kadeploy-testbed --help
kill $(cat /run/kadeploy3d/pid)
"""
    output = _ok(_in_root(root, session, timeout=900), "installed server and clients")
    for tool in CLIENTS:
        block = output.split(f"== {tool} --help\n", 1)[1].split("== ", 1)[0]
        assert block.startswith(f"usage: {tool}"), block[:300]
        version = output.split(f"== {tool} --version\n", 1)[1].split("== ", 1)[0]
        assert VERSION in version, f"{tool} --version: {version!r}"
    assert "usage: kadeploy-capture" in output and "usage: kadeploy-testbed" in output


def test_installed_server_deploys_the_installed_fake_testbed(deb_root: Path) -> None:
    """One deployment by the packaged kadeploy3d and kadeploy3, onto the packaged testbed's fake nodes.

    The fake mode (in-process SSH nodes on 127.1.x.y that emulate the deployment environment and
    check the image they receive) needs no root and no images: the run stays inside the chroot's
    namespaces, and everything it started dies with the namespace's first process.
    """
    script = """
D=/var/lib/ktb
trap 'echo "== server output"; cat $D/server.out 2>/dev/null' EXIT
kadeploy-testbed --dir $D up --mode fake --nodes 4 --fake-workers 1
export KADEPLOY3_CONFIG_DIR=$D/etc KADEPLOY3_LOG_DIR=$D/log KADEPLOY3_RUN_DIR=$D/run
mkdir -p $D/log $D/run
kadeploy3d --pidfile $D/run/pid >$D/server.out 2>&1 &
image=$(/usr/lib/kadeploy3/venv/bin/python3 -c 'import pathlib, sys
from kadeploy_testbed.fake.harness import make_tiny_image
print(make_tiny_image(pathlib.Path(sys.argv[1]))[0])' $D/envs)
cat >$D/envs/tiny.yaml <<EOF
name: tiny
version: 1
os: linux
image: {file: "server://$image", kind: tar, compression: gzip}
boot: {kernel: /vmlinuz, initrd: /initrd.img}
filesystem: ext4
partition_type: 131
EOF
i=0
until kanodes3 --version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 240 ] || { echo 'kadeploy3d did not answer'; exit 1; }; sleep 0.5
done
echo "== kadeploy3"
kadeploy3 -a $D/envs/tiny.yaml -f $D/nodes -o $D/ok -n $D/ko
echo "== deployed"; cat $D/ok
kill $(cat $D/run/pid)
"""
    output = _ok(_in_root(deb_root, script, timeout=1200), "fake-testbed deployment with the installed packages")
    nodes = (deb_root / "var/lib/ktb/nodes").read_text().split()
    assert len(nodes) == 4
    assert sorted((deb_root / "var/lib/ktb/ok").read_text().split()) == sorted(nodes), output[-3000:]
    ko = deb_root / "var/lib/ktb/ko"
    assert not ko.exists() or not ko.read_text().strip(), ko.read_text()


NETNS_NODES = 2
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def _host_ssh(key: Path, node: str, command: str) -> str:
    result = _run(["ssh", *SSH_OPTIONS, "-i", str(key), f"root@{node}", command], timeout=60)
    assert result.returncode == 0, f"ssh {node} {command!r}: exit {result.returncode}: {result.stderr}"
    return result.stdout


def _testbed_mounts(directory: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(f"{directory}/")]


def test_installed_server_deploys_debian_onto_the_netns_testbed(deb_root: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """One real deployment by the packaged kadeploy3d and kadeploy3: debian12-min onto 2 netns nodes.

    The testbed (bridge ktb0, nodes in network namespaces booting by TFTP, IPMI BMCs) is brought up
    from the checkout on the host, as tests/e2e does: it is the machine room, not the product under
    test, and its host side (loop devices, tftpd, bridges) has no place in a server's root. The
    chroot shares the host's network namespace, so that its kadeploy3d listens on 10.200.0.1:25300
    as the testbed's configuration says and reaches the nodes and BMCs on ktb0; the testbed's
    directory (configuration, TFTP repository, database) is bind-mounted at its own path in the
    root, the image cache read-only, and /etc/hosts (the nodes' names) read-only. The server runs
    as root, as that configuration expects (its deploy key and TFTP files are root's). The nodes are
    checked from the host: each runs the deployed Debian 12 from its deploy partition (p3) with its
    own sshd, as tests/e2e's `assert_debian_on_partition` checks.

    One testbed at a time: run under `flock /tmp/kadeploy-lab.lock`, as the end-to-end suite.
    """
    from kadeploy_testbed.images import DEFAULT_CACHE, ensure_user_images

    require("tftpd", "sshd")
    if Path("/sys/class/net/ktb0").exists():
        pytest.fail("A testbed is already up (bridge ktb0 exists): take it down with `kadeploy-testbed down` "
                    "before running this test")
    images = ensure_user_images()  # built on demand the first time (minutes), cached afterwards
    description = images.descriptions["debian12-min"]
    directory = tmp_path_factory.mktemp("ktb-pkg") / "testbed"
    testbed = ["kadeploy-testbed", "--dir", str(directory)]
    try:
        started = time.monotonic()
        up = _run([*testbed, "up", "--nodes", str(NETNS_NODES)], timeout=600)
        assert up.returncode == 0, f"kadeploy-testbed up: exit {up.returncode}\n{up.stdout}{up.stderr}"
        up_seconds = time.monotonic() - started
        nodes = (directory / "nodes").read_text().split()
        assert len(nodes) == NETNS_NODES
        user_key = directory / "user_key"
        _ok(_run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], timeout=60), "ssh-keygen")
        d = shlex.quote(str(directory))
        script = f"""
trap 'echo "== server output"; cat {d}/pkg-server.out 2>/dev/null' EXIT
test ! -e {shlex.quote(str(REPO))} && test -x /usr/lib/kadeploy3/venv/bin/python3  # no checkout in the root
export KADEPLOY3_CONFIG_DIR={d}/etc KADEPLOY3_LOG_DIR={d}/pkg-log KADEPLOY3_RUN_DIR={d}/pkg-run USER=root
mkdir -p {d}/pkg-log {d}/pkg-run
kadeploy3d --pidfile {d}/pkg-run/pid >{d}/pkg-server.out 2>&1 &
i=0
until kanodes3 --version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 240 ] || {{ echo 'kadeploy3d did not answer'; exit 1; }}; sleep 0.5
done
echo "== server"; readlink /proc/$(cat {d}/pkg-run/pid)/exe; tr '\\0' ' ' </proc/$(cat {d}/pkg-run/pid)/cmdline; echo
kaenv3 -a {shlex.quote(str(description))}
echo "== kadeploy3"
kadeploy3 -e debian12-min -f {d}/nodes -k {d}/user_key.pub -o {d}/ok -n {d}/ko
kill $(cat {d}/pkg-run/pid)
"""
        started = time.monotonic()
        output = _ok(_in_root(deb_root, script, timeout=1200, host_network=True,
                              binds=[(directory, True), (DEFAULT_CACHE, False), (Path("/etc/hosts"), False)]),
                     "netns-testbed deployment with the installed server and client")
        deploy_seconds = time.monotonic() - started
        server = output.split("== server\n", 1)[1].splitlines()
        # the packaged interpreter ran the packaged launcher (python3 -I /usr/sbin/kadeploy3d)
        assert server[0].startswith("/usr/bin/python3"), server[:2]
        assert "/usr/lib/kadeploy3/venv/bin/python3 -I /usr/sbin/kadeploy3d" in server[1], server[:2]
        assert "The deployment is successful on nodes" in output, output[-4000:]
        assert sorted((directory / "ok").read_text().split()) == sorted(nodes), output[-4000:]
        assert not (directory / "ko").read_text().strip(), (directory / "ko").read_text()
        for node in nodes:  # the deployed system answers, with its own sshd, from the deploy partition
            assert_debian_on_partition(functools.partial(_host_ssh, user_key, node), node, 3)
            assert _host_ssh(user_key, node, "pgrep -x sshd >/dev/null && echo up").strip() == "up"
        print(f"netns testbed up: {up_seconds:.0f} s; packaged server's deployment run: {deploy_seconds:.0f} s")
    finally:
        _run([*testbed, "down"], timeout=300)
        if not _testbed_mounts(directory):  # never remove through a mount the testbed left
            shutil.rmtree(directory, ignore_errors=True)


def test_reinstall_keeps_an_edited_conffile_and_purge_leaves_only_the_user(deb_root: Path) -> None:
    root = deb_root
    # a reinstall (upgrade path: prerm upgrade, new files, postinst configure <old>) keeps an edited conffile
    conf = root / "etc/kadeploy3/clusters.conf"
    conf.write_text(conf.read_text() + "# edited by the site\n")
    _ok(_in_root(root, "dpkg -i --force-confold /tmp/debs/*.deb"), "dpkg -i (again)")
    assert conf.read_text().endswith("# edited by the site\n")
    assert (root / "etc/kadeploy3/keys/id_deploy").exists()

    _ok(_in_root(root, "dpkg --purge kadeploy3-testbed kadeploy3-client kadeploy3-server kadeploy3-common"),
        "dpkg --purge")
    for gone in ("usr/lib/kadeploy3", "usr/lib/kadeploy3-testbed", "etc/kadeploy3", "var/lib/kadeploy3",
                 "var/log/kadeploy3", "var/cache/kadeploy3", "usr/sbin/kadeploy3d", "usr/bin/kadeploy3"):
        assert not (root / gone).exists(), f"/{gone} left after purge"
    assert "\ndeploy:" in "\n" + (root / "etc/passwd").read_text()  # system users stay, as Debian does


def _rpms(packages: Path) -> dict[str, Path]:
    rpms = {}
    for path in packages.glob("*.rpm"):
        name = _run(["rpm", "-qp", "--qf", "%{NAME}", str(path)], timeout=60).stdout
        rpms[name] = path
    assert sorted(rpms) == ["kadeploy3-client", "kadeploy3-common", "kadeploy3-server", "kadeploy3-testbed"]
    return rpms


def test_rpms_list_require_and_install_into_a_scratch_root(packages: Path, root_tarball: Path,
                                                           tmp_path: Path) -> None:
    rpms = _rpms(packages)
    files = {name: _ok(_run(["rpm", "-qpl", str(path)], timeout=120), f"rpm -qpl {name}").split()
             for name, path in rpms.items()}
    assert "/usr/sbin/kadeploy3d" in files["kadeploy3-server"]
    assert "/etc/kadeploy3/server.conf" in files["kadeploy3-server"]
    assert any(path.endswith("/kadeploy3d.service") for path in files["kadeploy3-server"])
    assert {f"/usr/bin/{tool}" for tool in CLIENTS} <= set(files["kadeploy3-client"])
    assert "/usr/lib/kadeploy3/venv/lib/python3.11/site-packages/kadeploy/server/daemon.py" in files["kadeploy3-common"]
    assert not any("/DEBIAN" in path or "lintian" in path for paths in files.values() for path in paths)
    requires = {name: _run(["rpm", "-qpR", str(path)], timeout=60).stdout for name, path in rpms.items()}
    assert "python3.11" in requires["kadeploy3-common"]
    for name in ("kadeploy3-server", "kadeploy3-client", "kadeploy3-testbed"):
        assert f"kadeploy3-common = {VERSION}-1" in requires[name], requires[name]
    configs = _run(["rpm", "-qpc", str(rpms["kadeploy3-server"])], timeout=60).stdout.split()
    assert "/etc/kadeploy3/server.conf" in configs

    root = _fresh_root(root_tarball, tmp_path / "root")
    try:
        _check_rpm_install(root, rpms)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _check_rpm_install(root: Path, rpms: dict[str, Path]) -> None:
    _ok(_run(["rpm", "--root", str(root), "--initdb"], timeout=120), "rpm --initdb")
    installed = _run(["rpm", "--root", str(root), "-i", "--nodeps", *map(str, rpms.values())], timeout=900)
    _ok(installed, "rpm --root -i --nodeps")
    assert "\ndeploy:" in "\n" + (root / "etc/passwd").read_text()  # %pre server: useradd
    assert (root / "etc/kadeploy3/keys/id_deploy").exists()        # %post server: the key
    checked = _ok(_in_root(root, "runuser -u deploy -- kadeploy3d --check-config && kaenv3 --help"),
                  "kadeploy3d --check-config (RPM install)")
    assert "Configuration in /etc/kadeploy3 is valid" in checked
    queried = _ok(_run(["rpm", "--root", str(root), "-qa", "--qf", "%{NAME}\\n"], timeout=60), "rpm -qa")
    assert sorted(line for line in queried.split() if line.startswith("kadeploy3")) == sorted(rpms)
