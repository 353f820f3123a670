#!/bin/sh
# kadeploy-testbed node init: PID 1 of a node's PID namespace, in its own mount
# and UTS namespaces and its network namespace (started by the supervisor with
# `ip netns exec ktb-K unshare --mount --uts --pid --fork --kill-child`).
# Everything mounted here lives in this private mount namespace and vanishes
# when the supervisor kills the namespace (power off), so nothing leaks to the host.
#
# Environment (set by the supervisor, never user input):
#   KTB_MODE      deploy | partition
#   KTB_RUN       host directory of this node (ctl/ holds the fifo and wrappers)
#   KTB_LOOP      host loop device of the node's disk (/dev/loopN)
#   KTB_DISK      block device name seen by the node (sda)
#   KTB_LOWER     deploy rootfs (deploy mode)
#   KTB_PART      partition number to boot (partition mode)
#   KTB_HOSTNAME  node FQDN
#   KTB_KEY       public deploy key file (deploy mode)
#   KTB_BOOT      the supervisor's number of this boot, echoed in the `booted` announcement
# Exit status 3 means "hung": nothing bootable; the supervisor keeps the node on, unreachable.
#
# The node announces `booted KTB_BOOT [what is missing]` on the control fifo only once its
# services listen (the marker port, then sshd): until then the supervisor shows it `booting`,
# so a status of deploy-env or partition N means those ports accept connections.

set -u
say() { echo "[$(date +%H:%M:%S)] $*"; }
hang() { say "boot failed: $*"; exit 3; }
SERVICE_WAIT=300  # polls of 0.1 s: how long a service may take to listen on a loaded host
# Whether something listens on TCP port $1 in this node's network namespace (/proc/net is per netns).
listening() {
  grep -Eq "^ *[0-9]+: [0-9A-F]+:$(printf %04X "$1") [0-9A-F]+:[0-9A-F]+ 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# Wait until port $1 listens while process $2 lives; false if it died or never listened.
wait_listening() {
  n=0
  until listening "$1"; do
    kill -0 "$2" 2>/dev/null || return 1
    n=$((n + 1)); [ "$n" -le "$SERVICE_WAIT" ] || return 1
    sleep 0.1
  done
}
announce() { echo "booted $KTB_BOOT${1:+ $1}" > "$KTB_RUN/ctl/ctl"; }

hostname "$KTB_HOSTNAME" 2>/dev/null || true
M="$KTB_RUN/mnt"
mount -t tmpfs -o mode=0755,size=1g ktb-ram "$M" || hang "cannot mount ram"
R="$M/root"
mkdir -p "$R"

if [ "$KTB_MODE" = deploy ]; then
  say "Loading deployment kernel: deployment environment (overlay over $KTB_LOWER)"
  mkdir -p "$M/upper" "$M/work"
  mount -t overlay overlay -o "lowerdir=$KTB_LOWER,upperdir=$M/upper,workdir=$M/work" "$R" \
    || hang "cannot assemble the deployment rootfs"
  mkdir -p "$R/root/.ssh" "$R/tmp" "$R/mnt/dest" "$R/rambin"
  chmod 700 "$R/root/.ssh"
  cat "$KTB_KEY" > "$R/root/.ssh/authorized_keys"
  chmod 600 "$R/root/.ssh/authorized_keys"
  echo "$KTB_HOSTNAME" > "$R/etc/hostname"
  ls "$R"/etc/ssh/ssh_host_*_key >/dev/null 2>&1 || chroot "$R" ssh-keygen -A >/dev/null 2>&1
else
  dev="${KTB_LOOP}p${KTB_PART}"
  say "Chainloading ${KTB_DISK}${KTB_PART}"
  [ -b "$dev" ] || hang "no partition ${KTB_PART} on ${KTB_DISK}"
  mount "$dev" "$R" 2>/dev/null || hang "no filesystem on ${KTB_DISK}${KTB_PART}"
  [ -f "$R/boot/grub/grub.cfg" ] || hang "no bootloader on ${KTB_DISK}${KTB_PART} (missing /boot/grub/grub.cfg)"
  [ -d "$R/proc" ] && [ -d "$R/dev" ] || hang "${KTB_DISK}${KTB_PART} holds no root filesystem"
  say "Booting the system on ${KTB_DISK}${KTB_PART}"
fi

# /proc, /sys, /run, /dev: what an init and udev would provide.
mount -t proc proc "$R/proc"
[ -d "$R/sys" ] && mount --rbind /sys "$R/sys"
[ -d "$R/run" ] && mount -t tmpfs -o mode=0755,size=64m run "$R/run" && mkdir -p "$R/run/sshd" && chmod 755 "$R/run/sshd"
mount -t tmpfs -o mode=0755,size=16m dev "$R/dev"
D="$R/dev"
mknod -m 666 "$D/null" c 1 3; mknod -m 666 "$D/zero" c 1 5; mknod -m 666 "$D/full" c 1 7
mknod -m 666 "$D/random" c 1 8; mknod -m 666 "$D/urandom" c 1 9; mknod -m 666 "$D/tty" c 5 0
ln -s /proc/self/fd "$D/fd"; ln -s /proc/self/fd/0 "$D/stdin"; ln -s /proc/self/fd/1 "$D/stdout"; ln -s /proc/self/fd/2 "$D/stderr"
mkdir -p "$D/pts" "$D/shm" "$D/.host" "$D/.ktb"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$D/pts" && ln -s pts/ptmx "$D/ptmx"
mount -t tmpfs -o mode=1777,size=64m shm "$D/shm"
# The disk: sda and sdaN are links to the kernel's loopN and loopNpM nodes in a
# private devtmpfs, so partitions appear and change as soon as the node repartitions,
# and parted finds the kernel's own names (sysfs) behind the links.
mount -t devtmpfs devtmpfs "$D/.host"
loop=$(basename "$KTB_LOOP")
ln -s ".host/$loop" "$D/$KTB_DISK"
for n in $(seq 1 15); do ln -s ".host/${loop}p$n" "$D/$KTB_DISK$n"; done
mount --bind "$KTB_RUN/ctl" "$D/.ktb"

# reboot/halt/poweroff/kexec reach the supervisor through /dev/.ktb/ctl.
for name in reboot halt poweroff shutdown kexec; do
  for dir in /usr/sbin /sbin; do
    path="$R$dir/$name"
    if [ -e "$path" ] || [ -L "$path" ]; then
      target=$(chroot "$R" readlink -f "$dir/$name" 2>/dev/null || echo "$dir/$name")
      grep -q " $R$target " /proc/self/mounts || mount --bind "$KTB_RUN/ctl/wrapper" "$R$target"
      break
    elif [ "$KTB_MODE" = deploy ] && [ "$dir" = /sbin ]; then
      cp "$KTB_RUN/ctl/wrapper" "$R/usr/sbin/$name" 2>/dev/null || true
    fi
  done
done

missing=""
if [ "$KTB_MODE" = deploy ]; then
  say "Deployment environment: sshd on 22, marker port 25300"
  # one listening socket for the whole life of the environment: `nc -lk` re-listens between
  # clients, and a probe landing in that gap would take the deployment environment for another system
  chroot "$R" /usr/bin/python3 -c 'import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 25300))
s.listen(128)
while True:
    s.accept()[0].close()' </dev/null >/dev/null 2>&1 &
  # the marker listens before sshd starts: a deployment environment whose sshd answers
  # without its marker would pass for a user's system (Kadeploy's wait_reboot, ports_down)
  wait_listening 25300 $! || { say "marker port 25300 is not listening"; missing="marker port 25300 not listening"; }
fi
[ -x "$R/usr/sbin/sshd" ] || hang "no /usr/sbin/sshd in the booted system"
chroot "$R" /usr/sbin/sshd -D -e &
sshd=$!
if wait_listening 22 "$sshd"; then
  say "$KTB_HOSTNAME login: (sshd listening on 22)"
else
  say "sshd is not listening on 22"
  missing="${missing:+$missing, }sshd not listening on 22"
fi
announce "$missing"
wait "$sshd"
say "sshd exited with status $?; the system stays up without network service"
while :; do sleep 3600; done
