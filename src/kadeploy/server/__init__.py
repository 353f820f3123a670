"""Server room: kadeploy3d (HTTP API, authentication, rights, workflow registry, daemon).

Imports `kadeploy.db`, `kadeploy.config`, `kadeploy.catalog`, `kadeploy.errors`,
`kadeploy.nodeset`. Operations are executed by a pluggable `OperationRunner`
(`kadeploy.server.operations`); build the app with `kadeploy.server.app.create_app`.
"""
