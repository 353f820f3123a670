"""HTTP conventions of the Kadeploy3 API (room `server`, reference 1.3).

Parameters come from the query string (a repeated key becomes a list) or from
a JSON or YAML body of at most 1 MB that must be a mapping (a `client` file
server URL must name the host the request came from, and is rewritten to its
address: `kadeploy.catalog.fetchpolicy.check_client_callback`); responses are
JSON, or YAML when the client sends `Accept: application/x-yaml`, and plain
text for strings. Application errors are HTTP 400 with
`X-Application-Error-Code` and `X-Application-Error-Info` (base64 of the
message), the message also being the text body. A request that has not
started its answer after `request_timeout` seconds (Kadeploy3 kills such a
servlet after 600 s) is cancelled and answered HTTP 500: long work is done by
workflows, which clients poll.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kadeploy.catalog.fetchpolicy import check_client_callback
from kadeploy.errors import ErrorCode, KadeployError

log = logging.getLogger("kadeploy.server")

MAX_BODY = 1024 * 1024
CANCEL_GRACE = 5.0  # seconds a timed-out handler gets to unwind after its cancellation
YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml")


class HTTPProblem(Exception):
    """A protocol-level error (401, 403, 404, 406, 413, 415...) with a text body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


async def read_params(request: Request) -> dict[str, Any]:
    """Query string and body parameters merged (body wins), as Kadeploy3's `parse_params`."""
    params = await _merged_params(request)
    if params.get("client"):
        # the server fetches a user's local files from this URL: only ever from the requesting host
        params["client"] = await check_client_callback(params["client"], request.client.host if request.client else "")
    return params


async def _merged_params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in request.query_params.keys():
        values = request.query_params.getlist(key)
        params[key] = values if len(values) > 1 else values[0]
    if request.method in ("GET", "HEAD"):
        return params
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise HTTPProblem(413, f"Request body too large (max {MAX_BODY} bytes)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPProblem(413, f"Request body too large (max {MAX_BODY} bytes)")
    if not body.strip():
        return params
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if content_type in YAML_TYPES:
            data = yaml.safe_load(body)
        elif content_type in ("application/json", "text/json", ""):
            data = json.loads(body)
        else:
            raise HTTPProblem(415, f"Unsupported content type {content_type!r} (JSON or YAML expected)")
    except (ValueError, yaml.YAMLError) as exc:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid request body: {exc}") from None
    if data is None:
        return params
    if not isinstance(data, dict):
        raise KadeployError(ErrorCode.INVALID_OPTION, "The request body must be a mapping (hash)")
    params.update(data)
    return params


def wants_yaml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(kind in accept for kind in YAML_TYPES)


def render(request: Request, data: Any, status: int = 200) -> Response:
    """JSON (default) or YAML (Accept: application/x-yaml); strings as text/plain."""
    if isinstance(data, Response):
        return data
    if isinstance(data, str):
        return PlainTextResponse(data, status_code=status)
    if wants_yaml(request):
        return Response(yaml.safe_dump(data, default_flow_style=False, sort_keys=False), status_code=status,
                        media_type="application/x-yaml")
    return Response(json.dumps(data), status_code=status, media_type="application/json")


def error_response(exc: KadeployError) -> Response:
    """HTTP 400 + the Kadeploy3 error headers."""
    info = base64.b64encode(exc.message.encode()).decode()
    return PlainTextResponse(exc.message, status_code=400, headers={
        "X-Application-Error-Code": str(int(exc.code)), "X-Application-Error-Info": info})


def problem_response(exc: HTTPProblem) -> Response:
    return PlainTextResponse(exc.message, status_code=exc.status, headers=exc.headers)


class RequestTimeout:
    """ASGI middleware: a request must start its answer within `timeout` seconds, else HTTP 500.

    Only the time to the start of the answer is limited: a long download that
    has begun (a kastat3 CSV to a slow client) goes on.
    """

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.timeout or self.timeout <= 0:
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, send_watched))
        answering = asyncio.ensure_future(started.wait())
        try:
            done, _ = await asyncio.wait({handler, answering}, timeout=self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            handler.cancel()
            raise
        finally:
            answering.cancel()
        if done:
            await handler  # answered (or answering): the rest of the body is not limited
            return
        handler.cancel()
        await asyncio.wait({handler}, timeout=CANCEL_GRACE)
        if started.is_set():  # it began answering while being cancelled: nothing clean to add
            return
        message = (f"The request {scope.get('method', '')} {scope.get('path', '')} was killed after "
                   f"{self.timeout:g} s (long operations are workflows, poll them instead)")
        log.warning("%s", message)
        await PlainTextResponse(message, status_code=500)(scope, receive, send)


# -- typed access to loosely typed parameters -------------------------------

def as_bool(params: dict[str, Any], key: str, default: bool = False) -> bool:
    """A flag given as JSON bool or query string ("true", "1", "" for present)."""
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("", "true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected a boolean, got {value!r}")


def as_int(params: dict[str, Any], key: str, default: int | None = None, *,
           minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected an integer, "
                                                      f"got {value!r}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: {number} is out of range "
                                                      f"[{minimum}, {maximum}]")
    return number


def as_str(params: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected a string, got {value!r}")


def as_list(params: dict[str, Any], key: str) -> list[str] | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected a list of strings")


def as_dict(params: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if not isinstance(value, dict):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected a mapping")
    return value
