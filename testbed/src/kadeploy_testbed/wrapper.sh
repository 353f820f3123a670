#!/bin/sh
# kadeploy-testbed: bind-mounted over reboot, halt, poweroff, shutdown and kexec
# (or over systemctl when those are its symlinks) inside a node. Power actions
# are requests to the node supervisor, written to the fifo /dev/.ktb/ctl; as on
# real hardware the caller then simply dies with the rest of the node.
CTL=/dev/.ktb
name=${0##*/}
if [ "$name" = systemctl ]; then
  name=${1:-}
  [ $# -gt 0 ] && shift
  case "$name" in
    reboot|halt|poweroff|kexec) ;;
    *) echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2; exit 1 ;;
  esac
  [ "$name" = kexec ] && { set -- -e; }
fi
# reboot/poweroff return at once, as systemctl does once the job is queued (the caller,
# often `ssh node reboot`, gets exit status 0); the supervisor acts a moment later.
# kexec -e never returns.
request() { echo "$1" > "$CTL/ctl"; [ "$1" = kexec ] && sleep 60; exit 0; }
case "$name" in
  kexec)
    mode=""; kernel=""
    for arg in "$@"; do
      case "$arg" in
        -l|--load) mode=load ;;
        -e|--exec) mode=exec ;;
        -u|--unload) mode=unload ;;
        -*) ;;
        *) [ -z "$kernel" ] && kernel=$arg ;;
      esac
    done
    case "$mode" in
      load)
        [ -n "$kernel" ] && [ -e "$kernel" ] || { echo "kexec: cannot open kernel '$kernel'" >&2; exit 1; }
        # line 2: the kernel's digest, so the supervisor knows a deployment kernel (SetDeploymentEnvKexec)
        { printf '%s\n' "$*"; sha256sum "$kernel" 2>/dev/null | cut -d' ' -f1; } > "$CTL/kexec"; exit 0 ;;
      unload) rm -f "$CTL/kexec"; exit 0 ;;
      exec)
        [ -s "$CTL/kexec" ] || { echo "kexec: nothing has been loaded" >&2; exit 1; }
        request kexec ;;
      *) echo "kexec (testbed): only -l, -e and -u are emulated" >&2; exit 1 ;;
    esac ;;
  reboot) request reboot ;;
  halt|poweroff) request poweroff ;;
  shutdown)
    case " $* " in *" -r "*) request reboot ;; *) request poweroff ;; esac ;;
  *) echo "$name: not emulated by the testbed" >&2; exit 1 ;;
esac
