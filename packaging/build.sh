#!/bin/sh
# Build the Debian and RPM packages of Kadeploy in Python from this checkout.
#
#   packaging/build.sh [OUTDIR]        (default OUTDIR: packaging/dist)
#
# Produces in OUTDIR:
#   kadeploy3-common_<v>_<arch>.deb   the product and its Python dependencies in a private
#                                     virtual environment, /usr/lib/kadeploy3/venv
#   kadeploy3-server_<v>_all.deb      kadeploy3d, its systemd unit, the deploy user,
#                                     /etc/kadeploy3 sample configuration (conffiles)
#   kadeploy3-client_<v>_all.deb      kadeploy3 kareboot3 kapower3 kaconsole3 kanodes3 kaenv3
#                                     kastat3 karights3 kadeploy-capture, client.conf
#   kadeploy3-testbed_<v>_<arch>.deb  the virtual testbed (kadeploy-testbed) and what it adds
#   the same four as RPMs (packaging/rpm/kadeploy3.spec, built with rpmbuild from the same trees)
#   lintian.txt                       lintian's verdict on the .deb files (errors and warnings fail the build)
#
# Why a bundled virtual environment: docs/packaging.md. Python dependencies come from pip's
# configured index (this machine: /etc/pip.conf find-links and local indexes); nothing is
# taken from the build host's site-packages. Needs: python3.11 with venv, pip, dpkg-dev,
# fakeroot-free dpkg-deb (--root-owner-group), lintian, rpm (rpmbuild). Run as any user.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
out=${1:-"$here/dist"}
mkdir -p "$out"
out=$(cd "$out" && pwd)

PYTHON=${PYTHON:-/usr/bin/python3.11}
PYVER=3.11
PREFIX=/usr/lib/kadeploy3
VENV=$PREFIX/venv
TBPREFIX=/usr/lib/kadeploy3-testbed
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/pyproject.toml" | head -n1)
[ -n "$version" ] || { echo "build.sh: no version in $top/pyproject.toml" >&2; exit 1; }
debversion="$version-1"
arch=$(dpkg --print-architecture)
# the packages' Maintainer field: a site rebuilding them names itself here
maintainer=${MAINTAINER:-"Kadeploy in Python maintainers <kadeploy@example.org>"}
start=$(date +%s)
step() { echo "== [$(($(date +%s) - start)) s] $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kadeploy-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
stage=$work/stage
# -qq: pip's errors only (its warnings about the local indexes' missing projects are noise here)
pip() { PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip --disable-pip-version-check --no-input "$@"; }

step "wheels of the product and the testbed ($version)"
# from copies of the sources: setuptools builds in the tree it is given, and a stale build/
# directory there (or an editable install's egg-info) would leak old files into the wheel
copy_sources() {  # copy_sources FROM TO: pyproject.toml, README.md and src/ without build litter
    mkdir -p "$2"
    cp "$1/pyproject.toml" "$2/"
    if [ -f "$1/README.md" ]; then cp "$1/README.md" "$2/"; fi
    tar -C "$1" --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.pyc' -cf - src | tar -C "$2" -xf -
}
copy_sources "$top" "$work/sources/product"
copy_sources "$top/testbed" "$work/sources/testbed"
pip wheel -qq --no-deps -w "$work/wheels" "$work/sources/product" "$work/sources/testbed"
product_wheel=$(ls "$work"/wheels/kadeploy-[0-9]*.whl)
testbed_wheel=$(ls "$work"/wheels/kadeploy_testbed-*.whl)

step "kadeploy3-common: virtual environment for $VENV"
common=$stage/kadeploy3-common
venv=$common$VENV
"$PYTHON" -m venv --without-pip "$venv"
pip --python "$venv/bin/python" install -qq --no-compile "$product_wheel"
# what the testbed adds to the product's environment (pyghmi and its own dependencies)
pip --python "$venv/bin/python" install -qq --dry-run --report "$work/testbed.json" "$testbed_wheel" >/dev/null
"$PYTHON" - "$work/testbed.json" > "$work/testbed-reqs.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for item in report["install"]:
    meta = item["metadata"]
    if meta["name"].lower().replace("_", "-") != "kadeploy-testbed":
        print(f'{meta["name"]}=={meta["version"]}')
EOF
# The environment must not point back at the build tree: generated scripts (their shebangs
# name the staging path) are replaced by our launchers, pip's install record of the local
# wheel goes, and pyvenv.cfg's `command` line names the installed path.
find "$venv/bin" -mindepth 1 ! -name 'python*' -exec rm -f {} +
find "$venv" -name direct_url.json -delete
find "$venv" -name '__pycache__' -prune -exec rm -rf {} +
sed -i "s#^command = .*#command = $PYTHON -m venv $VENV#" "$venv/pyvenv.cfg"
# the interpreter by a relative link (/usr/bin/python3.11 seen from $VENV/bin)
for link in "$venv"/bin/python*; do
    [ -L "$link" ] && [ "$(readlink "$link")" = "$PYTHON" ] && ln -sfn "../../../../bin/$(basename "$PYTHON")" "$link"
done
if grep -rlF "$work" "$venv" >/dev/null 2>&1; then
    echo "build.sh: the environment still names the build directory:" >&2
    grep -rlF "$work" "$venv" >&2
    exit 1
fi

step "kadeploy3-testbed: the testbed and $(wc -l < "$work/testbed-reqs.txt") more distribution(s)"
testbed=$stage/kadeploy3-testbed
pip install -qq --no-compile --no-deps --target "$testbed$TBPREFIX" "$testbed_wheel" -r "$work/testbed-reqs.txt"
rm -rf "$testbed$TBPREFIX/bin"
find "$testbed$TBPREFIX" -name direct_url.json -delete
find "$testbed$TBPREFIX" -name '__pycache__' -prune -exec rm -rf {} +
# the product's interpreter finds the testbed's directory through a .pth file owned by this package
mkdir -p "$testbed$VENV/lib/python$PYVER/site-packages"
echo "$TBPREFIX" > "$testbed$VENV/lib/python$PYVER/site-packages/kadeploy3-testbed.pth"

normalize_modes() {  # normalize_modes DIR: Python needs no execute bits on library files
    find "$1" -type f -exec chmod a-x {} +
}
# editor and OS litter some wheels carry (pysnmp ships macOS .DS_Store files)
find "$venv" "$testbed$TBPREFIX" \( -name .DS_Store -o -name '*.orig' -o -name '*.rej' \) -type f -delete
normalize_modes "$venv/lib"
normalize_modes "$testbed$TBPREFIX"
# ... except the testbed's shell scripts, which it copies onto its nodes
find "$testbed$TBPREFIX/kadeploy_testbed" -name '*.sh' -exec chmod 755 {} +

launcher() {  # launcher DEST MODULE FUNCTION: a script running MODULE.FUNCTION() with the bundled interpreter
    mkdir -p "$(dirname "$1")"
    cat > "$1" <<EOF
#!$VENV/bin/python3 -I
# $(basename "$1"), installed by the Kadeploy in Python packages
import sys

from $2 import $3

sys.exit($3())
EOF
    chmod 755 "$1"
}

step "kadeploy3-server, kadeploy3-client"
server=$stage/kadeploy3-server
client=$stage/kadeploy3-client
# The commands are the distributions' console scripts (pyproject.toml [project.scripts], their one
# home), read back from the installed metadata: kadeploy3d goes to the server (in /usr/sbin, as
# Kadeploy3 put it), kadeploy-testbed to the testbed, every other one to the client.
"$PYTHON" - "$venv/lib/python$PYVER/site-packages" "$testbed$TBPREFIX" > "$work/scripts.txt" <<'EOF'
import configparser, pathlib, sys
for directory in sys.argv[1:]:
    for entry_points in sorted(pathlib.Path(directory).glob("kadeploy*.dist-info/entry_points.txt")):
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str
        parser.read(entry_points)
        for name, target in parser["console_scripts"].items() if parser.has_section("console_scripts") else ():
            module, _, function = target.strip().partition(":")
            print(name, module, function)
EOF
while read -r name module function; do
    case $name in
        kadeploy3d) dest=$server/usr/sbin/$name ;;
        kadeploy-testbed) dest=$testbed/usr/bin/$name ;;
        *) dest=$client/usr/bin/$name ;;
    esac
    launcher "$dest" "$module" "$function"
    # its manual page, from its own --help (section 8 for the daemon in /usr/sbin; -B: no byte-code
    # left in the staged trees by the imports)
    case $dest in */sbin/*) section=8 ;; *) section=1 ;; esac
    pkgroot=${dest%/usr/*}
    COLUMNS=80 "$PYTHON" -I -B "$here/manpage.py" "$pkgroot/usr/share/man/man$section/$name.$section.gz" "$section" "$version" \
        "$name" "$module" "$function" "$venv/lib/python$PYVER/site-packages" "$testbed$TBPREFIX" 2>"$work/manpage.log" || {
        cat "$work/manpage.log" >&2; echo "build.sh: no manual page for $name" >&2; exit 1; }
done < "$work/scripts.txt"
for needed in "$server/usr/sbin/kadeploy3d" "$client/usr/bin/kadeploy3" "$testbed/usr/bin/kadeploy-testbed"; do
    [ -x "$needed" ] || { echo "build.sh: no console script for $needed in the wheels' metadata" >&2; exit 1; }
done

mkdir -p "$server/etc/kadeploy3"
(cd "$here/etc/kadeploy3" && tar cf - --exclude=client.conf .) | (cd "$server/etc/kadeploy3" && tar xf -)
echo "$version" > "$server/etc/kadeploy3/version"
install -D -m 644 "$here/kadeploy3d.service" "$server/lib/systemd/system/kadeploy3d.service"
install -D -m 644 "$here/common/tmpfiles.conf" "$server/usr/lib/tmpfiles.d/kadeploy3-server.conf"
install -D -m 644 "$here/common/logrotate" "$server/etc/logrotate.d/kadeploy3-server"
install -D -m 644 "$here/etc/kadeploy3/client.conf" "$client/etc/kadeploy3/client.conf"

# documentation of each package
for pkg in kadeploy3-common kadeploy3-server kadeploy3-client kadeploy3-testbed; do
    doc=$stage/$pkg/usr/share/doc/$pkg
    mkdir -p "$doc"
    cp "$here/debian/copyright" "$doc/copyright"
done
gzip -9n -c "$top/README.md" > "$common/usr/share/doc/kadeploy3-common/README.md.gz"
gzip -9n -c "$top/docs/packaging.md" > "$common/usr/share/doc/kadeploy3-common/packaging.md.gz"

step "Debian packages"
"$here/debian/build-debs.sh" "$stage" "$out" "$debversion" "$arch" "$maintainer"

step "RPM packages"
tar -C "$stage" -cf "$work/stage.tar" .
rpmtop=$work/rpmbuild
mkdir -p "$rpmtop/SOURCES" "$rpmtop/RPMS" "$rpmtop/BUILD" "$rpmtop/BUILDROOT" "$rpmtop/SPECS"
cp "$work/stage.tar" "$rpmtop/SOURCES/kadeploy3-stage.tar"
rpmbuild -bb --quiet \
    --define "_topdir $rpmtop" \
    --define "kversion $version" \
    --define "_build_id_links none" \
    --define "_binary_payload w6.gzdio" \
    "$here/rpm/kadeploy3.spec" > "$work/rpmbuild.log" 2>&1 || { cat "$work/rpmbuild.log" >&2; exit 1; }
find "$rpmtop/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls -1 "$out"
