#!/bin/sh
# The main job: install, build the images (cached), bring up a 4-node virtual testbed,
# start kadeploy3d on the embedded defaults (SQLite, local files), register debian12-min
# as a public environment, deploy it with `kadeploy3 -e debian12-min -f nodes -k` and
# show the result. Leaves the testbed and the server running; see the end of the output.
set -eu
cd "$(dirname "$0")/.."
NODES=${NODES:-4}
TESTBED=${KADEPLOY_TESTBED_DIR:-/var/lib/kadeploy-testbed}
./scripts/install.sh

echo "== Building images (cached after the first run)"
kadeploy-testbed image build

if [ -f "$TESTBED/run/kadeploy3d.pid" ] && kill -0 "$(cat "$TESTBED/run/kadeploy3d.pid")" 2>/dev/null; then
    echo "== Stopping the kadeploy3d of a previous demo"
    kill "$(cat "$TESTBED/run/kadeploy3d.pid")"
    sleep 2
fi
if [ -e "$TESTBED/state.json" ]; then
    echo "== A testbed is already up in $TESTBED; taking it down first"
    kadeploy-testbed down
fi
echo "== Bringing up a $NODES-node testbed"
kadeploy-testbed up --nodes "$NODES"
export KADEPLOY3_CONFIG_DIR="$TESTBED/etc"

echo "== Starting kadeploy3d"
mkdir -p "$TESTBED/log" "$TESTBED/run"
KADEPLOY3_LOG_DIR="$TESTBED/log" KADEPLOY3_RUN_DIR="$TESTBED/run" \
    kadeploy3d --detach --pidfile "$TESTBED/run/kadeploy3d.pid"
for i in $(seq 1 50); do kadeploy3 -v >/dev/null 2>&1 && break; sleep 0.2; done
kadeploy3 -v

# the user's own key is what -k installs on the nodes (as on a Grid'5000 frontend)
[ -f "$HOME/.ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$HOME/.ssh/id_ed25519"
touch "$HOME/.ssh/authorized_keys"
grep -qF "$(cat "$HOME/.ssh/id_ed25519.pub")" "$HOME/.ssh/authorized_keys" || cat "$HOME/.ssh/id_ed25519.pub" >> "$HOME/.ssh/authorized_keys"

echo "== Registering debian12-min"
IMAGES=${KADEPLOY_TESTBED_CACHE:-/var/cache/kadeploy-testbed}
kaenv3 -l | grep -q '^debian12-min ' || kaenv3 -a "$IMAGES/user-images/debian12-min.yaml"
kaenv3 -l

echo "== kadeploy3 -e debian12-min -f $TESTBED/nodes -k"
start=$(date +%s)
kadeploy3 -e debian12-min -f "$TESTBED/nodes" -k -o "$TESTBED/deployed-ok" -n "$TESTBED/deployed-ko"
echo "(deployment wall time: $(( $(date +%s) - start ))s)"

echo "== /etc/os-release on every node"
for node in $(cat "$TESTBED/nodes"); do
    echo "--- $node"
    ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@$node" cat /etc/os-release | grep -E '^(PRETTY_NAME|VERSION_ID)='
done

echo "== kastat3"
kastat3 -F wid,hostname,step1,step2,step3,step1_duration,step2_duration,step3_duration,success,error

cat <<EOT

The testbed is still up. Use it:
  export KADEPLOY3_CONFIG_DIR=$TESTBED/etc
  kadeploy3 -e debian12-min -f $TESTBED/nodes -k     # deploy again
  kadeploy-testbed status                            # power state and what each node booted
  ssh root@node-1.c1.testbed
Take it down:
  kill \$(cat $TESTBED/run/kadeploy3d.pid); kadeploy-testbed down
EOT
