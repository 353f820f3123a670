"""Server room: kadeploy3d (HTTP API, authentication, rights, workflow registry, daemon).

Imports `kadeploy.db`, `kadeploy.config`, `kadeploy.catalog`, `kadeploy.errors`,
`kadeploy.nodeset` and `kadeploy.operations`. Operations are executed by a
pluggable `OperationRunner` (`kadeploy.operations`) that the daemon, the
composition root, builds with
`kadeploy.steps.runner.create_services`; nothing else here imports `kadeploy.steps`.
Build the app with `kadeploy.server.app.create_app`.
"""
