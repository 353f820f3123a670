"""An in-process imitation of kadeploy3d's REST API (reference 1.4), for client tests.

Serves on 127.0.0.1 (random port) in a thread. A deployment stays "running"
for `polls_before_done` polls of its resource, emits two log lines, then
finishes with the nodes listed in `ko_nodes` failed. Every request is recorded.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeKadeploy:
    def __init__(self, nodes: list[str], *, ko_nodes: tuple[str, ...] = (), polls_before_done: int = 2,
                 error: tuple[int, str] | None = None, launch_error: tuple[int, str] | None = None,
                 environments: list[dict[str, Any]] | None = None) -> None:
        self.nodes = nodes
        # recorded environments GET /environments lists; None: any name asked for exists, version 1,
        # its image on the server
        self.environments = environments
        self.ko_nodes = set(ko_nodes)
        self.polls_before_done = polls_before_done
        self.error = error
        self.launch_error = launch_error
        self.requests: list[tuple[str, str, dict[str, list[str]], Any, dict[str, str]]] = []
        self.workflows: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self._counter = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append((self.command, parts.path, parse_qs(parts.query), body, dict(self.headers)))
                    status, headers, payload = fake.route(self.command, parts.path, parse_qs(parts.query), body)
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                content_type = "text/plain" if isinstance(payload, (str, bytes)) else "application/json"
                self.send_header("Content-Type", content_type)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def __enter__(self) -> FakeKadeploy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests_to(self, method: str, path: str) -> list[Any]:
        return [r for r in self.requests if r[0] == method and r[1] == path]

    @staticmethod
    def app_error(code: int, message: str) -> tuple[int, dict[str, str], str]:
        info = base64.b64encode(message.encode()).decode()
        return 400, {"X-Application-Error-Code": str(code), "X-Application-Error-Info": info}, message

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, dict, Any]:
        if path == "/version":
            return 200, {}, "3.3.11.stable"
        if path == "/auth_headers_prefix":
            return 200, {}, "X-Kadeploy-"
        if path == "/nodes" and query.get("list"):
            return 200, {}, self.nodes
        if (method, path) == ("GET", "/environments"):
            return 200, {}, self.list_environments(query)
        if (method, path) in (("POST", "/deployment"), ("POST", "/reboot"), ("PUT", "/power"), ("GET", "/power")):
            if self.launch_error:
                return self.app_error(*self.launch_error)
            if body and body.get("dry_run"):
                return 200, {}, {}
            self._counter += 1
            kind = path.strip("/")
            wid = f"{kind[0].upper()}-{self._counter:08d}"
            nodes = body["nodes"] if body else query.get("nodes", [])
            base = f"/{kind}/{wid}"
            self.workflows[wid] = {"polls": 0, "nodes": nodes, "kind": kind, "logged": False}
            return 200, {}, {"wid": wid, "resources": {
                "resource": base, "log": f"{base}/logs", "state": f"{base}/state", "status": f"{base}/status",
                "error": f"{base}/error", "debug": f"{base}/debugs"}}
        segments = path.strip("/").split("/")
        if len(segments) >= 2 and segments[1] in self.workflows:
            return self.workflow_route(method, segments[1], segments[2:])
        return 404, {}, f"No route {method} {path}"

    def list_environments(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        name = query.get("name", [""])[0]
        owner = query.get("username", [""])[0]
        if self.environments is None:
            return [{"user": owner or "tester", "name": name, "version": 1, "os": "linux",
                     "image": {"file": "server:///envs/img.tgz", "kind": "tar", "compression": "gzip"}}]
        found = [env for env in self.environments
                 if env["name"] == name and (not owner or env["user"] == owner)
                 and ("version" not in query or str(env["version"]) == query["version"][0])]
        if query.get("last"):
            last = {(env["user"], env["name"]): env for env in sorted(found, key=lambda env: env["version"])}
            found = [env for env in found if last[(env["user"], env["name"])] is env]
        return found

    def workflow_route(self, method: str, wid: str, rest: list[str]) -> tuple[int, dict, Any]:
        flow = self.workflows[wid]
        done = flow["polls"] >= self.polls_before_done
        nodes = flow["nodes"]
        ok = [n for n in nodes if n not in self.ko_nodes]
        ko = [n for n in nodes if n in self.ko_nodes]
        if method == "DELETE" and not rest:
            self.deleted.append(wid)
            return 200, {}, {"wid": wid}
        if not rest:
            flow["polls"] += 1
            info = {"wid": wid, "user": "tester", "done": done, "error": bool(done and self.error),
                    "start_time": 0, "logs": True, "debugs": False,
                    "nodes": {"ok": ok, "ko": ko} if done else {"ok": [], "ko": [], "processing": nodes}}
            return 200, {}, info
        if rest == ["logs"]:
            if flow["logged"]:
                return 200, {}, ""
            flow["logged"] = True
            return 200, {}, "1700000002.5|Performing a Deploy[SetDeploymentEnvUntrusted] step\n" \
                            "1700000001.0|Launching a deployment on " + ",".join(nodes) + "\n"
        if rest == ["state"]:
            states = {n: {"macro": "BootNewEnvKexec", "micro": "wait_reboot", "state": "ok"} for n in ok}
            states.update({n: {"macro": "SetDeploymentEnvUntrusted", "micro": "reboot", "state": "ko",
                               "error": "SetDeploymentEnvUntrusted-reboot: boom", "out": "off"} for n in ko})
            for n in ok:
                states[n]["out"] = "on"
            return 200, {}, states
        if rest == ["status"]:
            return 200, {}, {"c1": {"SetDeploymentEnvUntrusted": {"wait_reboot": {
                "nodes": {"OK": [], "KO": [], "**": nodes}, "time": 3}}}}
        if rest == ["error"]:
            if self.error:
                return self.app_error(*self.error)
            return 200, {}, ""
        return 404, {}, "unknown"
