"""`kadeploy3d`: the server launcher (room `server`, reference 1.2).

Options as Kadeploy3's: `-p/--pidfile`, `-d/--detach`, `-I/--no-stdin-pipe`,
`-O/--no-stdout-redirect`, `-E/--no-stderr-redirect`, `-S/--no-dh-seeds`
(accepted, nothing to seed), `-v/--version`, plus `--check-config`.
Environment: KADEPLOY3_CONFIG_DIR (/etc/kadeploy3), KADEPLOY3_LOG_DIR
(/var/log/kadeploy3: output.log, error.log), KADEPLOY3_RUN_DIR
(/var/run/kadeploy3d: generated TLS certificate), KADEPLOY3_VERSION.

Start: load and check the configuration, migrate the database, abort what a
crashed server left running, then serve HTTPS (or HTTP with
`secure_server: false`) on `server_hostname:kadeploy_server`. INT/TERM stop
cleanly (running workflows are cancelled, marked aborted, their nodes
released); HUP reopens the log files: output.log, error.log, and server.conf's
`logs/logfile` and `logs/debugfile` (see `kadeploy.server.logfiles`). A
configuration error, an unwritable log file included, prints one line on
stderr and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kadeploy.boot.process import use_pidfd_child_watcher
from kadeploy.errors import KadeployError
from kadeploy.server.logfiles import OperationLogs

if TYPE_CHECKING:
    from kadeploy.operations import Services
    from kadeploy.server.settings import ServerSettings

log = logging.getLogger("kadeploy.server")

DEFAULT_CONFIG_DIR = "/etc/kadeploy3"
DEFAULT_LOG_DIR = "/var/log/kadeploy3"
DEFAULT_RUN_DIR = "/var/run/kadeploy3d"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kadeploy3d", description="Kadeploy deployment server")
    parser.add_argument("-p", "--pidfile", type=Path, help="write the server's pid into FILE")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-I", "--no-stdin-pipe", action="store_true", help="do not redirect stdin to /dev/null")
    parser.add_argument("-O", "--no-stdout-redirect", action="store_true",
                        help="do not redirect stdout to output.log")
    parser.add_argument("-E", "--no-stderr-redirect", action="store_true", help="do not redirect stderr to error.log")
    parser.add_argument("-S", "--no-dh-seeds", action="store_true", help="accepted for compatibility (no effect)")
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser.parse_args(argv)


def _version(config_dir: Path) -> str:
    version = os.environ.get("KADEPLOY3_VERSION")
    if version:
        return version
    try:
        return (config_dir / "version").read_text().strip() or "3.3.11.stable"
    except OSError:
        return "3.3.11.stable"


class LogFiles:
    """output.log / error.log of the log dir and server.conf's `logs` files; reopened on SIGHUP (logrotate)."""

    def __init__(self, log_dir: Path, files: OperationLogs | None = None,
                 args: argparse.Namespace | None = None) -> None:
        self.log_dir = log_dir
        self.handler: logging.FileHandler | None = None
        self.files = files
        #: with --detach, stdout and stderr are output.log and error.log: reopened too
        self.args = args

    def open(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.log_dir / "output.log")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.INFO)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # asyncssh logs every channel at INFO (500,000 lines for a 1,000-node deployment)
        logging.getLogger("asyncssh").setLevel(logging.WARNING)

    def reopen(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()
        if self.args is not None:
            try:
                _redirect(self.args, self.log_dir, stdin=False)
            except OSError as exc:
                log.error("cannot reopen output.log/error.log: %s", exc.strerror or exc)
        self.open()
        if self.files is not None:
            self.files.reopen()  # queued: each file's writer thread reopens it after its pending lines
        log.info("log files reopened")


def _redirect(args: argparse.Namespace, log_dir: Path, *, stdin: bool = True) -> None:
    if stdin and not args.no_stdin_pipe:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    if not args.no_stdout_redirect:
        out = os.open(log_dir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(out, 1)
        os.close(out)
    if not args.no_stderr_redirect:
        err = os.open(log_dir / "error.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(err, 2)
        os.close(err)


def _detach() -> None:
    """Classic double fork: the server is re-parented to init and has no controlling terminal."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def engine_services(cfg: Any, settings: ServerSettings) -> Services:
    """The product's one way to run operations: the engine driving the real steps.

    Imported directly, never guarded: a part that cannot load stops the
    server at start rather than leaving it to answer for work it cannot do.
    """
    from kadeploy.steps.runner import create_services

    return create_services(cfg)


def main(argv: list[str] | None = None,
         services_factory: Callable[[Any, ServerSettings], Services] = engine_services) -> int:
    """Entry point of the `kadeploy3d` console script.

    `services_factory` is the composition root's one seam: the testbed's
    dummy daemon passes its own (a runner that touches no node), the
    `kadeploy3d` script never does.
    """
    args = parse_args(argv)
    config_dir = Path(os.environ.get("KADEPLOY3_CONFIG_DIR", DEFAULT_CONFIG_DIR))
    log_dir = Path(os.environ.get("KADEPLOY3_LOG_DIR", DEFAULT_LOG_DIR))
    run_dir = Path(os.environ.get("KADEPLOY3_RUN_DIR", DEFAULT_RUN_DIR))
    if args.version:
        print(f"Kadeploy version: {_version(config_dir)}")
        return 0
    try:
        from kadeploy.config import load_config
        from kadeploy.server.auth import Authenticator
        from kadeploy.server.settings import from_config

        cfg = load_config(config_dir)
        settings = from_config(cfg, config_dir=config_dir)
        settings.version = _version(config_dir)
        if not settings.auth.any_method:
            raise KadeployError(0, "server.conf: authentication: at least one method (acl, http_basic, "
                                   "certificate, ident) must be configured")
        Authenticator(settings.auth, settings.almighty_users)  # compiles whitelists, loads the CA
        files = OperationLogs(settings.logfile, settings.debugfile, settings.debugfile_level)
        try:
            files.check()  # Kadeploy3 creates them and checks they are writable when loading server.conf
        except OSError as exc:
            raise KadeployError(0, f"server.conf: logs: cannot open {exc.filename}: {exc.strerror}") from None
        services = services_factory(cfg, settings)
    except KadeployError as exc:
        print(f"kadeploy3d: configuration error: {exc.message}", file=sys.stderr)
        return 1
    if args.check_config:
        for warning in getattr(cfg, "warnings", []):
            print(f"Warning: {warning}", file=sys.stderr)
        print(f"Configuration in {config_dir} is valid")
        return 0
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"kadeploy3d: cannot create the log directory {log_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.detach:
        _detach()
        _redirect(args, log_dir)
    logs = LogFiles(log_dir, files, args if args.detach else None)
    logs.open()
    try:
        files.open()  # after the fork: the writer threads belong to the server process
    except OSError as exc:
        print(f"kadeploy3d: server.conf: logs: cannot open {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    # Until the event loop takes over INT/TERM, a stop request exits at once (pid file removed).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)
    use_pidfd_child_watcher()
    try:
        return asyncio.run(serve(settings, services, run_dir, logs))
    except KadeployError as exc:
        print(f"kadeploy3d: {exc.message}", file=sys.stderr)
        return 1
    finally:
        files.close()  # what the last workflows queued is written
        if args.pidfile:
            args.pidfile.unlink(missing_ok=True)


class _Server:
    """uvicorn's server with our own INT/TERM handling.

    uvicorn re-raises the stop signal once it has shut down, which would kill
    the process before the pid file is removed; here the signal only asks for
    a graceful stop (the app's shutdown cancels workflows and releases nodes).
    """

    def __new__(cls, config):  # type: ignore[no-untyped-def]
        import contextlib

        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # type: ignore[no-untyped-def,override]
                yield

            def stop(self) -> None:
                log.info("stop requested")
                self.should_exit = True

        return Server(config)


async def serve(settings: ServerSettings, services: Services, run_dir: Path, logs: LogFiles) -> int:
    """Prepare the database and serve until INT/TERM."""
    import uvicorn

    from kadeploy.db import Database
    from kadeploy.server.app import create_app, prepare_database
    from kadeploy.server.listener import listen_options

    database = Database(settings.database_url)
    await asyncio.to_thread(prepare_database, database)
    app = create_app(settings, database, services.runner, fetcher=services.fetcher,
                     console_factory=services.console_factory, files=logs.files)
    # TLS, client certificates and trusted proxies: see kadeploy.server.listener
    options = listen_options(settings, run_dir)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=30, **options)
    server = _Server(config)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, logs.reopen)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    log.info("kadeploy3d %s listening on %s://%s:%d", settings.version, "https" if settings.secure else "http",
             options["host"], settings.port)
    try:
        await server.serve()
    finally:
        database.dispose()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
