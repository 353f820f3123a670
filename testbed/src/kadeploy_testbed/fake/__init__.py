"""testbed.fake: the fake (scale) mode of the testbed.

Thousands of nodes served by asyncio worker processes on loopback
addresses (127.1.x.y): asyncssh endpoints that answer the deployment
commands (`shell`, `node`), an in-process broadcast relay (`relay`, `sinks`,
`memlink`), power through the control socket (`daemon`, `control`,
`etc/scripts/fake-bmc`), the daemon as the front of K workers (`pool`),
seeded failures and boot delays (`model`). `cli.up`/`cli.down` are the entry points
of `kadeploy-testbed up --mode fake` / `down`. Imports `kadeploy_testbed`
(layout, configdir, profiles, state), `kadeploy.remote.shell` (the wrapper's
marker) and `kadeploy.errors`; the server never imports this package.
"""
