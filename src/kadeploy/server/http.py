"""HTTP conventions of the Kadeploy3 API (room `server`, reference 1.3).

Parameters come from the query string (a repeated key becomes a list) or from
a JSON or YAML body of at most 1 MB that must be a mapping (a `client` file
server URL must name the host the request came from, and is rewritten to its
address: `kadeploy.catalog.fetchpolicy.check_client_callback`); responses are
JSON, or YAML when the client sends `Accept: application/x-yaml` (Ruby's
`to_yaml` by `kadeploy.psych`, so that Kadeploy3's kanodes3, which prints
that text as it comes, prints `:wid:` where the route built its hash with
`psych.Symbol` keys as Kadeploy3's server builds it with `:wid =>`), and
plain text for strings. Application errors are HTTP 400 with
`X-Application-Error-Code` and `X-Application-Error-Info` (base64 of the
message, cut to `MAX_ERROR_MESSAGE` characters), the message also being the
text body.

Sizes users control are bounded here, before any work: the body is parsed in
a worker thread (a 1 MB YAML document costs seconds of pure Python), nested at
most `MAX_DEPTH` levels, without YAML aliases (a "billion laughs" document is
small but expands exponentially for whoever walks it), with integers within 64
bits and floats finite; `as_int` keeps integers within the database's 32-bit
columns. A request that has not
started its answer after `request_timeout` seconds (Kadeploy3 kills such a
servlet after 600 s) is cancelled and answered HTTP 500: long work is done by
workflows, which clients poll.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from typing import Any

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kadeploy import psych
from kadeploy.catalog.fetchpolicy import check_client_callback
from kadeploy.errors import ErrorCode, KadeployError

log = logging.getLogger("kadeploy.server")

MAX_BODY = 1024 * 1024
CANCEL_GRACE = 5.0  # seconds a timed-out handler gets to unwind after its cancellation
MAX_DEPTH = 32  # nesting levels of a body (an environment description needs about 5)
MAX_ERROR_MESSAGE = 4096  # characters of an error message sent back (it becomes an HTTP header)
INT64_MAX = 2 ** 63 - 1
DB_INT_MIN, DB_INT_MAX = -(2 ** 31), 2 ** 31 - 1  # SQL INTEGER in MySQL and PostgreSQL
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
    if content_type in YAML_TYPES:
        data = await run_in_threadpool(parse_body, body, True)
    elif content_type in ("application/json", "text/json", ""):
        data = await run_in_threadpool(parse_body, body, False)
    else:
        raise HTTPProblem(415, f"Unsupported content type {content_type!r} (JSON or YAML expected)")
    if data is None:
        return params
    if not isinstance(data, dict):
        raise KadeployError(ErrorCode.INVALID_OPTION, "The request body must be a mapping (hash)")
    params.update(data)
    return params


class _BodyLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with a nesting bound, checked while composing."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a request",
                                              event.start_mark)
        if isinstance(event, yaml.ScalarEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_body(text: bytes | str, is_yaml: bool) -> Any:
    """A JSON or YAML document, refused (error 4) when it is malformed or beyond the bounds above."""
    try:
        data = yaml.load(text, Loader=_BodyLoader) if is_yaml else json.loads(text)  # noqa: S506 (safe loader)
    except RecursionError:
        raise KadeployError(ErrorCode.INVALID_OPTION,
                            f"Invalid request body: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid request body: {_cut(str(exc), 1024)}") from None
    check_bounds(data)
    return data


def check_bounds(data: Any) -> None:
    """Error 4 if `data` nests deeper than MAX_DEPTH, or holds an integer beyond 64 bits or a non-finite float.

    Iterative: a walk that recursed would itself be the depth bomb it looks for.
    """
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not -INT64_MAX - 1 <= value <= INT64_MAX:
                raise KadeployError(ErrorCode.INVALID_OPTION,
                                    f"Invalid value at {where or 'the top'}: an integer beyond 64 bits")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value at {where or 'the top'}: {value}")
            continue
        if isinstance(value, (dict, list)):
            if depth + 1 > MAX_DEPTH:
                raise KadeployError(ErrorCode.INVALID_OPTION,
                                    f"Invalid request body: nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, (int, float, dict, list)):
                    stack.append((item, depth + 1, f"{where}/{_cut(str(key), 64)}"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} characters)"


def wants_yaml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(kind in accept for kind in YAML_TYPES)


def render(request: Request, data: Any, status: int = 200) -> Response:
    """JSON (default) or YAML (Accept: application/x-yaml); strings as text/plain."""
    if isinstance(data, Response):
        return data
    if isinstance(data, str):
        return PlainTextResponse(data, status_code=status)
    if wants_yaml(request):  # Ruby's `to_yaml`, as Kadeploy3's server answers (Symbol keys stay `:wid:`)
        return StreamingResponse(_yaml_text(data), status_code=status, media_type="application/x-yaml")
    return Response(json.dumps(data), status_code=status, media_type="application/json")


async def _yaml_text(data: Any) -> Any:
    """The YAML body, written in a worker thread: a site's node states take about a second of pure Python."""
    yield await run_in_threadpool(psych.dump, data)


def error_response(exc: KadeployError) -> Response:
    """HTTP 400 + the Kadeploy3 error headers."""
    message = _cut(exc.message, MAX_ERROR_MESSAGE)
    info = base64.b64encode(message.encode()).decode()
    return PlainTextResponse(message, status_code=400, headers={
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
    """An integer parameter, refused (error 4) outside [minimum, maximum], by default the SQL INTEGER range."""
    minimum = DB_INT_MIN if minimum is None else max(minimum, DB_INT_MIN)
    maximum = DB_INT_MAX if maximum is None else min(maximum, DB_INT_MAX)
    value = params.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str) and len(value.strip()) > 32:  # int() of a long string is quadratic
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: {_cut(value, 40)!r} is out "
                                                      f"of range [{minimum}, {maximum}]")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected an integer, "
                                                      f"got {_cut(repr(value), 40)}") from None
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
    if isinstance(value, str):  # from the query string: bounded like a body
        try:
            value = json.loads(value)
        except RecursionError:
            raise KadeployError(ErrorCode.INVALID_OPTION,
                                f"Invalid value for {key!r}: nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            pass
    if isinstance(value, dict):
        check_bounds(value)
    if not isinstance(value, dict):
        raise KadeployError(ErrorCode.INVALID_OPTION, f"Invalid value for {key!r}: expected a mapping")
    return value
