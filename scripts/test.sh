#!/bin/sh
# The test suite: unit tests, integration tests against real services (sshd, MariaDB,
# PostgreSQL, ipmitool) and the testbed scenarios. Run as root on Debian 12.
set -eu
cd "$(dirname "$0")/.."
./scripts/install.sh
exec python3 -m pytest -q -ra -p no:cacheprovider tests "$@"
