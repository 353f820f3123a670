#!/bin/sh
# Install what Kadeploy in Python and its virtual testbed need on Debian 12 (root).
# Idempotent: a second run only checks that everything is there.
set -eu
PACKAGES="python3 python3-pip python3-venv ipmitool debootstrap tftpd-hpa tftp-hpa openssh-server openssh-client \
parted fdisk e2fsprogs xfsprogs dosfstools zstd xz-utils bzip2 pigz iproute2 pdsh psmisc procps \
netcat-openbsd socat nftables cpio fsarchiver \
qemu-system-x86 ipxe-qemu pxelinux syslinux-common dnsmasq-base grub-pc-bin grub-common openipmi ruby \
aria2 mktorrent opentracker taktuk snmp lintian rpm debhelper dpkg-dev fakeroot"
# (the last line: the QEMU testbed mode, kadeploy-testbed up --mode qemu, whose PXE-boot tests run every time)
# (fsarchiver: the testbed builds its multipart fsa image with savefs on the host)
# (aria2, mktorrent, opentracker: the BitTorrent broadcast; taktuk: the parallel-exec peer; snmp: the PDU driver's
#  snmpset; lintian, rpm, debhelper, dpkg-dev, fakeroot: packaging/build.sh)
# (ruby: the tools' YAML is checked against Ruby's own Psych, Kadeploy3's writer, in tests/unit/cli/test_psych_dump.py)
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "Installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
# the testbed runs its own tftpd on its bridge; the distribution's service must not hold port 69
if systemctl is-active --quiet tftpd-hpa 2>/dev/null; then systemctl stop tftpd-hpa || true; fi
cd "$(dirname "$0")/.."
# the product first, then the testbed distribution (it depends on the product and owns the
# kadeploy-testbed script: installed in the other order, reinstalling an older product that
# still listed that script would delete it)
python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
python3 -m pip install -q --disable-pip-version-check -e ./testbed 2>&1 | grep -v "Running pip as the 'root' user" || true
