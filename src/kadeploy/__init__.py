"""Kadeploy in Python: a drop-in re-implementation of Kadeploy3.

Rooms (see docs/architecture.md); a room imports only from rooms below it:
nodeset, errors < config < db, remote, broadcast, boot < engine < steps, catalog
< server < client < cli. The testbed is a separate distribution (`testbed/`,
package `kadeploy_testbed`) that imports from here; nothing here imports it.
"""

__version__ = "3.3.11.0"
#: what GET /version answers (Kadeploy3 clients parse the major.minor part)
SERVER_VERSION = "3.3.11.py"
