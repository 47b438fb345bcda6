"""A lean HTTP/1.1 client for the gateway's hot path: whole requests and whole responses, nothing else.

Why not aiohttp for these calls: against the bench's local upstream, one aiohttp POST cost about
145 µs of CPU, this client about 40 µs (docs/gateway.md, "The upstream client"). Each request is one
socket write of prebuilt bytes; httptools (llhttp, in C) parses the response; connections are kept
alive per origin and reused newest first. Streams keep aiohttp, whose line reader they use.

What it does not do, on purpose: proxies from the environment (the aiohttp session it replaces did
not trust the environment either), redirects (an API answering a POST with a redirect is an error to
see, not to follow), cookies, and sending a request again on its own: a POST whose connection dies is
reported, and the gateway's routing decides whether to try again (it records each attempt).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class Http1Error(Exception):
    """The exchange failed below HTTP: connection refused or lost, a malformed or oversized response."""


class CannotConnect(Http1Error):
    """No connection to the origin could be made (refused, unresolvable, TLS handshake failed)."""


class ConnectionLost(Http1Error):
    """The connection closed before the whole response arrived."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


@lru_cache(maxsize=256)
def parse_url(url: str) -> tuple[Origin, bytes]:
    """The origin to connect to and the request target, checked once per distinct URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"expected an http:// or https:// URL with a host and no credentials, got {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    shown = f"[{host}]".encode() if ":" in host else host.encode("idna")
    host_header = shown if port == default_port else b"%s:%d" % (shown, port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    _check_header_value(target)
    return Origin(parts.scheme, host, port, host_header), target.encode()


def _check_header_value(value: str) -> None:
    # A CR or LF would end the line early and let the rest be read as a header of our own.
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError("a request line or header value holds a line break")


def encode_headers(headers: dict[str, str]) -> bytes:
    """Header lines for `post`, encoded once by the caller; refuses values that would break the framing."""
    lines = []
    for name, value in headers.items():
        _check_header_value(name)
        _check_header_value(value)
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange in flight, answered through `waiter`."""

    def __init__(self, max_response_bytes: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._max = max_response_bytes
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._until_close = False  # the body ends when the server closes (no length, not chunked)
        self._headers_done = False

    # -- the exchange ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, request: bytes) -> asyncio.Future[Response]:
        self._headers = {}
        self._body = []
        self._size = 0
        self._until_close = self._headers_done = False
        self.waiter = loop.create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        return self.waiter

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self._fail(Http1Error("the server sent bytes nobody asked for"))  # never reuse such a connection
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Http1Error("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(Http1Error(f"malformed HTTP response ({exc})"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if self._headers_done and self._until_close and exc is None:
            try:
                waiter.set_result(self._response())
            except Http1Error as error:
                waiter.set_exception(error)
        else:
            reason = f" ({type(exc).__name__}: {exc})" if exc else ""
            waiter.set_exception(ConnectionLost(f"the connection closed before the whole response arrived{reason}"))

    # -- httptools callbacks -------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        self._until_close = ("content-length" not in self._headers and "transfer-encoding" not in self._headers
                             and status >= 200 and status not in (204, 304))

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:
            return  # failed already: the rest of this feed is dropped with the connection
        self._size += len(body)
        if self._size > self._max:
            self._fail(Http1Error(f"the response is larger than {self._max} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._headers = {}  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._headers_done = False
            return
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if not self._parser.should_keep_alive():
            self.close()
        try:
            waiter.set_result(self._response())
        except Http1Error as exc:
            waiter.set_exception(exc)
            self.close()

    def _response(self) -> Response:
        body = b"".join(self._body)
        encoding = self._headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                body = zlib.decompress(body, wbits=47)  # 32 + 15: a gzip or zlib header, told apart
            except zlib.error as exc:
                raise Http1Error(f"the {encoding} response body does not decompress ({exc})") from None
        elif encoding != "identity":
            raise Http1Error(f"the response is encoded as {encoding!r}, which we did not ask for")
        return Response(self._parser.get_status_code(), self._headers, body)


class Http1Client:
    """Keep-alive HTTP/1.1 connections per origin, for one event loop."""

    def __init__(self, *, max_connections: int = 1000, idle_timeout_s: float = 30.0,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, ssl_context: ssl.SSLContext | None = None,
                 user_agent: str = "nexusai") -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._idle_timeout_s = idle_timeout_s
        self._max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context
        self._fixed = f"user-agent: {user_agent}\r\naccept-encoding: identity\r\n".encode()
        self._closed = False

    async def post(self, url: str, body: bytes, headers: bytes, timeout_s: float) -> Response:
        """POST `body` with the `encode_headers` lines; the whole exchange within `timeout_s`.

        Raises TimeoutError (the connection is then dropped: its answer would belong to nobody),
        Http1Error for anything that went wrong below HTTP, ValueError for a URL we cannot send to."""
        origin, target = parse_url(url)
        request = b"".join((b"POST ", target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n", self._fixed,
                            headers, b"content-length: %d\r\n\r\n" % len(body), body))
        async with asyncio.timeout(timeout_s), self._slots:
            connection = await self._connection(origin)
            try:
                response = await connection.start(asyncio.get_running_loop(), request)
            except BaseException:
                connection.close()  # cut off mid-exchange (timeout, cancellation, failure): never reused
                self._busy.discard(connection)
                raise
            self._release(origin, connection)
            return response

    async def _connection(self, origin: Origin) -> _Connection:
        if self._closed:
            raise Http1Error("the client is closed")
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the newest: the likeliest to be open at the other end
            if connection.closed:
                continue
            if now - connection.idle_since > self._idle_timeout_s:
                connection.close()
                continue
            self._busy.add(connection)
            return connection
        loop = asyncio.get_running_loop()
        secure = origin.scheme == "https"
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_response_bytes), origin.host, origin.port,
                ssl=(self._ssl_context or _default_ssl_context()) if secure else None,
                server_hostname=origin.host if secure else None)
        except (OSError, ssl.SSLError) as exc:
            raise CannotConnect(f"cannot connect to {origin.host}:{origin.port} ({type(exc).__name__}: {exc})") from None
        self._busy.add(connection)
        return connection

    def _release(self, origin: Origin, connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.closed or self._closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, deque())
        idle.append(connection)
        # the oldest sit at the left: drop those the server has closed or that idled too long
        while idle and (idle[0].closed or connection.idle_since - idle[0].idle_since > self._idle_timeout_s):
            idle.popleft().close()

    def idle_connections(self) -> int:
        return sum(1 for idle in self._idle.values() for c in idle if not c.closed)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks


@lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()
