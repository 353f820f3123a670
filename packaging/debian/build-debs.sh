#!/bin/sh
# Turn the staged package trees of packaging/build.sh into .deb files and check them with lintian.
#
#   build-debs.sh STAGE OUTDIR DEBVERSION ARCH MAINTAINER
#
# STAGE/<package>/ holds each package's files as installed. This adds DEBIAN/ (control with
# Installed-Size and, for trees with compiled code, the shared-library dependencies that
# dpkg-shlibdeps finds; conffiles = every file under /etc; md5sums; maintainer scripts), the
# Debian changelog and the lintian overrides, then builds with dpkg-deb (root-owned files,
# no fakeroot needed). lintian's errors and warnings fail the build; its full output,
# overridden tags included, is OUTDIR/lintian.txt.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stage=$1 out=$2 debversion=$3 arch=$4 maintainer=$5
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}
date=$(date -u -R -d "@$epoch")

subst() {  # subst FILE: the template with its @NAME@ fields filled
    sed -e "s/@DEBVERSION@/$debversion/g" -e "s/@ARCH@/$pkgarch/g" -e "s/@MAINTAINER@/$maintainer/g" \
        -e "s/@DATE@/$date/g" -e "s/@SIZE@/$size/g" -e "s/@SHLIBS@/$shlibs/g" \
        -e "s/@SHLIBS_COMMA@/${shlibs:+, $shlibs}/g" "$1"
}

shlibs_of() {  # shlibs_of TREE: the Depends that the ELF objects under TREE need ("" if none)
    tree=$1
    objects=$(find "$tree" -type f \( -name '*.so' -o -name '*.so.*' \) | sort)
    [ -n "$objects" ] || return 0
    # libraries bundled beside the objects (wheels' *.libs directories) are found, not depended on
    libdirs=$(find "$tree" -type d -name '*.libs' | sed 's/^/-l/' | tr '\n' ' ')
    scratch=$(mktemp -d)
    mkdir -p "$scratch/debian"
    printf 'Source: kadeploy3\n\nPackage: x\nArchitecture: any\n' > "$scratch/debian/control"
    # (its warnings are about the staged layout, not the result: kept in its log, not shown)
    # shellcheck disable=SC2086
    if ! (cd "$scratch" && dpkg-shlibdeps -O --ignore-missing-info $libdirs $objects) \
            > "$scratch/out" 2> "$scratch/log"; then
        cat "$scratch/log" >&2
        rm -rf "$scratch"
        return 1
    fi
    sed -n 's/^shlibs:Depends=//p' "$scratch/out"
    rm -rf "$scratch"
}

rm -f "$out"/kadeploy3-*.deb
size=0 shlibs=""
for tree in "$stage"/*/; do
    tree=${tree%/}
    pkg=$(basename "$tree")
    # the product's launchers and configuration are the same everywhere; compiled code is not
    if find "$tree" -type f \( -name '*.so' -o -name '*.so.*' \) | grep -q .; then pkgarch=$arch; else pkgarch=all; fi
    shlibs=$(shlibs_of "$tree") || { echo "build-debs.sh: dpkg-shlibdeps failed for $pkg" >&2; exit 1; }
    doc=$tree/usr/share/doc/$pkg
    mkdir -p "$doc"
    subst "$here/changelog" | gzip -9n > "$doc/changelog.Debian.gz"
    if [ -f "$here/$pkg.lintian-overrides" ]; then
        install -D -m 644 "$here/$pkg.lintian-overrides" "$tree/usr/share/lintian/overrides/$pkg"
    fi
    chmod -R u+rwX,go+rX,go-w "$tree"
    mkdir -p "$tree/DEBIAN"
    for script in preinst postinst prerm postrm; do
        if [ -f "$here/$pkg.$script" ]; then install -m 755 "$here/$pkg.$script" "$tree/DEBIAN/$script"; fi
    done
    if [ -d "$tree/etc" ]; then
        (cd "$tree" && find etc -type f | sort | sed 's#^#/#') > "$tree/DEBIAN/conffiles"
    fi
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | sort |
        xargs -d '\n' md5sum) > "$tree/DEBIAN/md5sums"
    size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
    subst "$here/$pkg.control" > "$tree/DEBIAN/control"
    find "$tree" -exec touch -h -d "@$epoch" {} +
    dpkg-deb --root-owner-group -Zgzip --build "$tree" "$out/${pkg}_${debversion}_${pkgarch}.deb" >/dev/null
done

# One run for the report (overridden tags shown, with lintian's explanations) and the verdict:
# errors and warnings fail the build. (--fail-on is not used: with --show-overrides it counts the
# overridden tags too: the verdict is ours, from the report.)
lintian --fail-on none --info --display-info --show-overrides "$out"/kadeploy3-*.deb > "$out/lintian.txt" 2>&1 || {
    echo "build-debs.sh: lintian could not check the packages:" >&2
    grep -vE '^(N|I|O|M|P):' "$out/lintian.txt" | head -n 40 >&2
    exit 1
}
if grep -qE '^(E|W):' "$out/lintian.txt"; then
    echo "build-debs.sh: lintian reports errors or warnings (all of it in $out/lintian.txt):" >&2
    grep -E '^(E|W):' "$out/lintian.txt" | sort | uniq -c | sort -rn | head -n 40 >&2
    exit 1
fi
echo "lintian: no error, no warning; $(grep -c '^O:' "$out/lintian.txt" || true) overridden (reasons in packaging/debian/*.lintian-overrides), $(grep -c '^I:' "$out/lintian.txt" || true) info tags"
