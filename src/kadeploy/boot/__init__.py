"""boot room: making real machines boot what the server wants, and knowing they did.

* `pxe`: PXE profile writers (PXElinux, GPXElinux, iPXE, GrubPXE), chain profiles,
  user profiles, atomic writes.
* `power`: reboot / power escalation (soft, hard, very_hard) through the
  server-wide reboot window; `commands` builds the command table, `window`
  holds the reboot window and the per-BMC interval gate, `drivers` the built-in
  IPMI and Redfish power drivers.
* `nbp`: the four profile formats; `process`: local commands killed by process
  group at their timeout; `result`: `StepResult` (same shape as the engine's).
* `probe`: reboot detection by TCP probes.
* `console`: the kaconsole bridge (TCP <-> PTY), guarded by a one-time token.

This room imports only `kadeploy.errors` and `kadeploy.nodeset`; it knows
nothing of the engine, the configuration parser or the database.
"""
