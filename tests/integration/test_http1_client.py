"""The gateway's lean HTTP/1.1 client against a real TCP server that answers each request as its path says.

The server reads whole requests (request line, headers, Content-Length body) and answers by path:
/ok/<n> echoes `n` in a JSON body, /chunked, /until-close, /gzip, /brotli, /slow, /cut, /big, /garbage,
/interim, /close, /fragments/<sizes> (the answer written in pieces of those sizes). It counts the
connections it accepted, so reuse is visible from the other side of the socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ssl
from collections.abc import Awaitable, Callable

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.providers.http1 import (
    CannotConnect,
    ConnectionLost,
    Http1Client,
    Http1Error,
    encode_headers,
    parse_url,
)

JSON = encode_headers({"content-type": "application/json"})


def _answer(status: int, body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n" % (status, len(body))
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


class _Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (path, body)
        self.close_idle = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.requests.append((path, body))
                if not await self.answer(path, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, path: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Writes the answer `path` asks for; False closes the connection."""
        kind, _, arg = path.lstrip(b"/").partition(b"/")
        if kind == b"ok":
            writer.write(_answer(200, orjson.dumps({"n": arg.decode(), "echo": body.decode()})))
        elif kind == b"chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"6\r\n{\"a\": \r\n3\r\n\"b\"\r\n1\r\n}\r\n0\r\n\r\n")
        elif kind == b"until-close":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"whole\": true}")
            await writer.drain()
            return False
        elif kind == b"gzip":
            writer.write(_answer(200, gzip.compress(b'{"zipped": 1}'), b"content-encoding: gzip"))
        elif kind == b"brotli":
            writer.write(_answer(200, b"\x0b\x02\x80{}\x03", b"content-encoding: br"))
        elif kind == b"slow":
            await asyncio.sleep(float(arg))
            writer.write(_answer(200, b'{"late": true}'))
        elif kind == b"cut":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":")
            await writer.drain()
            return False
        elif kind == b"big":
            writer.write(_answer(200, b"x" * int(arg)))
        elif kind == b"garbage":
            writer.write(b"SMTP ready\r\n\r\n")
        elif kind == b"interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + _answer(200, b'{"after": "interim"}'))
        elif kind == b"close":
            writer.write(_answer(200, b'{"closing": true}', b"connection: close"))
            await writer.drain()
            return False
        elif kind == b"fragments":
            whole = _answer(201, b'{"pieces": "' + arg + b'"}', b"x-kind: fragments")
            sizes = [int(s) for s in arg.split(b",") if s]
            at = 0
            for size in sizes:
                writer.write(whole[at:at + size])
                at += size
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(whole[at:])
        else:
            writer.write(_answer(404, b"{}"))
        await writer.drain()
        return True

    def drop_all(self) -> None:
        for writer in self._writers:
            writer.close()


async def _serving(scenario: Callable[[str, _Server, Http1Client], Awaitable[None]],
                   *, client: Http1Client | None = None, ssl_context: ssl.SSLContext | None = None) -> _Server:
    server = _Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
    port = listener.sockets[0].getsockname()[1]
    client = client or Http1Client()
    scheme = "https" if ssl_context else "http"
    try:
        async with listener:
            await scenario(f"{scheme}://127.0.0.1:{port}", server, client)
    finally:
        await client.aclose()
    return server


def run(scenario: Callable[[str, _Server, Http1Client], Awaitable[None]], **options: object) -> _Server:
    return asyncio.run(_serving(scenario, **options))  # type: ignore[arg-type]


# --- exchanges ----------------------------------------------------------------------------------------


def test_sequential_requests_share_one_kept_alive_connection():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        for n in range(5):
            response = await client.post(f"{base}/ok/{n}", b"hello", JSON, 5)
            assert response.status == 200
            assert orjson.loads(response.body) == {"n": str(n), "echo": "hello"}
        assert client.idle_connections() == 1

    server = run(scenario)
    assert server.connections == 1
    assert [path for path, _ in server.requests] == [b"/ok/%d" % n for n in range(5)]


def test_concurrent_requests_each_get_their_own_answer():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        answers = await asyncio.gather(*(client.post(f"{base}/ok/{n}", str(n).encode(), JSON, 5) for n in range(40)))
        assert [orjson.loads(a.body) for a in answers] == [{"n": str(n), "echo": str(n)} for n in range(40)]
        again = await asyncio.gather(*(client.post(f"{base}/ok/{n}", b"", JSON, 5) for n in range(40)))
        assert [orjson.loads(a.body)["n"] for a in again] == [str(n) for n in range(40)]

    server = run(scenario)
    assert server.connections == 40  # the second round reused the first round's connections


def test_bodies_framed_by_chunks_or_by_the_close_arrive_whole():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert orjson.loads((await client.post(f"{base}/chunked", b"", JSON, 5)).body) == {"a": "b"}
        assert orjson.loads((await client.post(f"{base}/until-close", b"", JSON, 5)).body) == {"whole": True}
        assert client.idle_connections() == 0  # a body ended by the close leaves nothing to reuse

    run(scenario)


def test_a_gzip_body_is_unpacked_and_an_encoding_we_did_not_ask_for_is_an_error():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert orjson.loads((await client.post(f"{base}/gzip", b"", JSON, 5)).body) == {"zipped": 1}
        with pytest.raises(Http1Error, match="encoded as 'br'"):
            await client.post(f"{base}/brotli", b"", JSON, 5)

    run(scenario)


def test_an_interim_100_continue_is_skipped_for_the_final_answer():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        response = await client.post(f"{base}/interim", b"", JSON, 5)
        assert (response.status, orjson.loads(response.body)) == (200, {"after": "interim"})
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 1


def test_headers_are_read_case_insensitively():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        response = await client.post(f"{base}/fragments/", b"", JSON, 5)
        assert response.status == 201
        assert response.headers["x-kind"] == "fragments"

    run(scenario)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=8))
def test_however_the_answer_is_cut_into_packets_it_is_read_exactly(sizes):
    path = "/fragments/" + ",".join(map(str, sizes))

    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        response = await client.post(base + path, b"", JSON, 5)
        assert response.status == 201
        assert orjson.loads(response.body) == {"pieces": ",".join(map(str, sizes))}
        assert response.headers["x-kind"] == "fragments"
        assert (await client.post(f"{base}/ok/after", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 1


# --- connections that must not be reused ------------------------------------------------------------


def test_a_timed_out_request_drops_its_connection_so_its_late_answer_reaches_nobody():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        with pytest.raises(TimeoutError):
            await client.post(f"{base}/slow/0.3", b"", JSON, 0.05)
        response = await client.post(f"{base}/ok/next", b"", JSON, 5)
        assert orjson.loads(response.body)["n"] == "next"  # not the slow request's answer
        await asyncio.sleep(0.4)
        assert (await client.post(f"{base}/ok/later", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 2


def test_a_cancelled_request_drops_its_connection_too():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        task = asyncio.create_task(client.post(f"{base}/slow/0.2", b"", JSON, 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.25)
        assert orjson.loads((await client.post(f"{base}/ok/mine", b"", JSON, 5)).body)["n"] == "mine"

    assert run(scenario).connections == 2


def test_a_connection_cut_mid_body_is_reported_and_the_next_request_reconnects():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        with pytest.raises(ConnectionLost):
            await client.post(f"{base}/cut", b"", JSON, 5)
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 2


def test_connection_close_in_the_answer_is_honoured():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert (await client.post(f"{base}/close", b"", JSON, 5)).status == 200
        assert client.idle_connections() == 0
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 2


def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200
        server.drop_all()
        await asyncio.sleep(0.05)
        assert client.idle_connections() == 0
        assert (await client.post(f"{base}/ok/2", b"", JSON, 5)).status == 200

    assert run(scenario).connections == 2


def test_a_connection_idle_past_its_timeout_is_replaced():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200
        await asyncio.sleep(0.15)
        assert (await client.post(f"{base}/ok/2", b"", JSON, 5)).status == 200

    assert run(scenario, client=Http1Client(idle_timeout_s=0.1)).connections == 2


def test_an_oversized_answer_is_refused_and_its_connection_dropped():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        assert len((await client.post(f"{base}/big/1000", b"", JSON, 5)).body) == 1000
        with pytest.raises(Http1Error, match="larger than 1000 bytes"):
            await client.post(f"{base}/big/5000", b"", JSON, 5)
        assert (await client.post(f"{base}/ok/1", b"", JSON, 5)).status == 200

    assert run(scenario, client=Http1Client(max_response_bytes=1000)).connections == 2


def test_something_that_is_not_http_is_an_error_not_a_hang():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        with pytest.raises(Http1Error, match="malformed HTTP response"):
            await client.post(f"{base}/garbage", b"", JSON, 5)

    run(scenario)


def test_a_refused_connection_is_reported_as_such():
    async def scenario() -> None:
        client = Http1Client()
        with pytest.raises(CannotConnect, match="cannot connect to 127.0.0.1:9"):
            await client.post("http://127.0.0.1:9/x", b"", JSON, 5)
        await client.aclose()

    asyncio.run(scenario())


def test_the_connection_limit_queues_requests_instead_of_opening_more():
    async def scenario(base: str, server: _Server, client: Http1Client) -> None:
        answers = await asyncio.gather(*(client.post(f"{base}/ok/{n}", b"", JSON, 5) for n in range(12)))
        assert all(a.status == 200 for a in answers)

    assert run(scenario, client=Http1Client(max_connections=3)).connections == 3


# --- TLS --------------------------------------------------------------------------------------------


def _self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert_file, key_file)
    client_side = ssl.create_default_context(cafile=str(cert_file))
    return server_side, client_side


def test_https_works_and_an_untrusted_certificate_is_refused(tmp_path):
    server_side, client_side = _self_signed(tmp_path)

    async def trusted(base: str, server: _Server, client: Http1Client) -> None:
        assert base.startswith("https://")
        assert orjson.loads((await client.post(f"{base}/ok/tls", b"", JSON, 5)).body)["n"] == "tls"
        assert (await client.post(f"{base}/ok/again", b"", JSON, 5)).status == 200

    assert run(trusted, client=Http1Client(ssl_context=client_side), ssl_context=server_side).connections == 1

    async def untrusted(base: str, server: _Server, client: Http1Client) -> None:
        with pytest.raises(CannotConnect, match="SSLCertVerificationError"):
            await client.post(f"{base}/ok/tls", b"", JSON, 5)

    run(untrusted, ssl_context=server_side)  # the system's default trust store knows nothing of this one


# --- what is sent -----------------------------------------------------------------------------------


def test_a_line_break_in_a_header_value_is_refused_before_anything_is_sent():
    with pytest.raises(ValueError, match="line break"):
        encode_headers({"authorization": "Bearer sk-1\r\nx-injected: yes"})


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http:///nohost", "http://user:pw@example.com/x"])
def test_urls_we_cannot_send_to_are_refused(url):
    with pytest.raises(ValueError, match="expected an http"):
        parse_url(url)


def test_the_host_header_names_the_port_only_when_it_is_not_the_default():
    assert parse_url("https://api.example.com/v1/chat")[0].host_header == b"api.example.com"
    assert parse_url("http://localhost:8080/v1/chat?x=1") == (parse_url("http://localhost:8080/")[0], b"/v1/chat?x=1")
    assert parse_url("http://localhost:8080/")[0].host_header == b"localhost:8080"
    assert parse_url("http://[::1]:11434/api")[0].host_header == b"[::1]:11434"
