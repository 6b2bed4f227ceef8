"""The lean HTTP client and the openai provider over it, against a real local server that sends exact bytes.

The server here is a plain TCP server on 127.0.0.1:0 whose answer per request is scripted as raw bytes (and
pauses), so the tests can cut a stream anywhere, split it into 1-byte writes, answer badly, or go silent.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from actors.providers import (
    Completed,
    Message,
    ModelRequest,
    ProviderError,
    ProviderStatusError,
    ProviderUnavailable,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    create_provider,
)
from actors.providers._http import HttpClient
from actors.providers.openai_provider import OpenAIProvider

#: Every wait in these tests is bounded by this.
TEST_TIMEOUT_S = 10.0
#: A read timeout short enough for a test, long enough for a loaded machine's loopback.
SHORT_READ_TIMEOUT_S = 0.3
#: Bound on joining the server's threads.
JOIN_TIMEOUT_S = 5.0

#: A connection's script: (the request's path, parsed body, request number on this connection) -> what to do.
Script = Callable[["Exchange"], None]


class Exchange:
    """One request on the raw server: what came in, and the socket to answer on."""

    def __init__(self, sock: socket.socket, path: str, body: dict[str, Any], index: int) -> None:
        self.sock = sock
        self.path = path
        self.body = body
        self.index = index  # 0 for the first request on this connection
        self.keep_open = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_bytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])

    def close(self) -> None:
        self.keep_open = False


class RawServer:
    """Answers each HTTP request with ``script(exchange)``; counts connections; joins its threads on close."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="raw-http-accept")
        self._accepter.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), name="raw-http-conn")
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(TEST_TIMEOUT_S)
        reader = sock.makefile("rb")
        try:
            index = 0
            while not self._stop.is_set():
                request_line = reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                path = request_line.split()[1].decode()
                exchange = Exchange(sock, path, json.loads(body or b"{}"), index)
                self.requests.append((path, exchange.body))
                self.script(exchange)
                index += 1
                if not exchange.keep_open:
                    return
        except OSError:
            return
        finally:
            reader.close()
            sock.close()

    def close(self) -> None:
        self._stop.set()
        for sock in list(self._socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accepter.join(JOIN_TIMEOUT_S)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        self._listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# --- wire builders ----------------------------------------------------------------------------------


def sse(payload: dict[str, Any] | str, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return ((f"event: {event}\n" if event else "") + f"data: {data}\n\n").encode()


def responses_body(text: str = "hello world", call: tuple[str, str] | None = None) -> bytes:
    out = [sse({"type": "response.created", "response": {}}, "response.created")]
    for word in text.split(" "):
        out.append(sse({"type": "response.output_text.delta", "delta": word + " "}))
    if call is not None:
        name, arguments = call
        out.append(sse({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": arguments}))
        out.append(sse({"type": "response.output_item.done",
                        "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name,
                                 "arguments": ""}}))
    out.append(sse({"type": "response.completed",
                    "response": {"usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}}}))
    return b"".join(out)


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def head(status: int = 200, *extra: str, length: int | None = None, chunked_body: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: text/event-stream", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif chunked_body:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def provider_for(url: str, **extra: Any) -> OpenAIProvider:
    options = {"base_url": url, "api_key": "k", "model": "m", "api": "responses", "max_retries": 0, **extra}
    provider = create_provider("openai", options)
    assert isinstance(provider, OpenAIProvider)
    return provider


async def run(provider: OpenAIProvider, prompt: str = "hi") -> list[StreamItem]:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with aclosing(provider.stream(ModelRequest("", "", [Message.user(prompt)]))) as items:
            return [item async for item in items]


HELLO = [TextDelta("hello "), TextDelta("world "), Completed(TokenUsage(3, 4, 7), "stop")]


# --- streaming and framing ----------------------------------------------------------------------------


async def test_a_stream_written_one_byte_at_a_time(raw_server: Callable[[Script], RawServer]) -> None:
    """Every SSE event, chunk header and CRLF arrives split: the items are the same."""
    body = responses_body(call=("shell", '{"command": "echo hi"}'))
    server = raw_server(lambda ex: ex.send_bytewise(head() + chunked(body, size=5)))
    provider = provider_for(server.base_url)
    try:
        items = await run(provider)
    finally:
        await provider.aclose()
    assert items == [TextDelta("hello "), TextDelta("world "),
                     ToolCallItem(ToolCall("call_1", "shell", {"command": "echo hi"})),
                     Completed(TokenUsage(3, 4, 7), "tool_calls")]


@pytest.mark.parametrize("framing", ["content-length", "close-delimited"])
async def test_other_body_framings(raw_server: Callable[[Script], RawServer], framing: str) -> None:
    body = responses_body()

    def answer(ex: Exchange) -> None:
        if framing == "content-length":
            ex.send(head(length=len(body)) + body)
        else:  # no length, no chunking: the body ends when the server closes (HTTP/1.0 style)
            ex.send(head(200, "Connection: close", chunked_body=False) + body)
            ex.close()

    server = raw_server(answer)
    provider = provider_for(server.base_url)
    try:
        assert await run(provider) == HELLO
        assert await run(provider) == HELLO
    finally:
        await provider.aclose()
    assert server.connections == (1 if framing == "content-length" else 2)


async def test_keep_alive_and_a_connection_closed_while_idle(raw_server: Callable[[Script], RawServer]) -> None:
    """Requests share one connection; when the server drops it between requests, the next one still works."""
    body = chunked(responses_body())

    def answer(ex: Exchange) -> None:
        ex.send(head() + body)
        if ex.index == 1:
            ex.close()  # the server closes after its second answer, without saying so

    server = raw_server(answer)
    provider = provider_for(server.base_url)
    try:
        for _ in range(3):
            assert await run(provider) == HELLO
    finally:
        await provider.aclose()
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_chat_completions_stream_ends_at_done(raw_server: Callable[[Script], RawServer]) -> None:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "function": {"name": "shell", "arguments": '{"command"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ': "ls"}'}}]},
                      "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}},
    ]
    body = b"".join(sse(c) for c in chunks) + sse("[DONE]")
    server = raw_server(lambda ex: ex.send(head() + chunked(body, size=3)))
    provider = provider_for(server.base_url, api="chat")
    try:
        items = await run(provider)
    finally:
        await provider.aclose()
    assert items == [TextDelta("hi"), ToolCallItem(ToolCall("c1", "shell", {"command": "ls"})),
                     Completed(TokenUsage(5, 6, 11), "tool_calls")]
    assert server.requests[0][0] == "/v1/chat/completions"


# --- errors -----------------------------------------------------------------------------------------------


async def test_error_status_carries_the_servers_message(raw_server: Callable[[Script], RawServer]) -> None:
    error = json.dumps({"error": {"message": "model m does not exist", "type": "invalid_request_error"}}).encode()
    server = raw_server(lambda ex: ex.send(head(400, length=len(error)) + error))
    provider = provider_for(server.base_url, max_retries=2)
    try:
        with pytest.raises(ProviderStatusError, match="HTTP 400: model m does not exist") as caught:
            await run(provider)
    finally:
        await provider.aclose()
    assert caught.value.status == 400
    assert len(server.requests) == 1  # a client error is not retried


async def test_busy_server_is_retried_after_retry_after(raw_server: Callable[[Script], RawServer]) -> None:
    body = chunked(responses_body())
    busy = b'{"error": {"message": "slow down"}}'

    def answer(ex: Exchange) -> None:
        if len(server.requests) == 1:
            ex.send(head(429, "Retry-After: 0", length=len(busy)) + busy)
        else:
            ex.send(head() + body)

    server = raw_server(answer)
    provider = provider_for(server.base_url, max_retries=1)
    try:
        assert await run(provider) == HELLO
    finally:
        await provider.aclose()
    assert len(server.requests) == 2


async def test_a_server_that_is_down_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listened, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = provider_for(f"http://127.0.0.1:{port}/v1")
    started = time.monotonic()
    try:
        with pytest.raises(ProviderUnavailable, match="cannot connect"):
            await run(provider)
    finally:
        await provider.aclose()
    assert time.monotonic() - started < TEST_TIMEOUT_S / 2


@pytest.mark.parametrize(("cut", "match"), [
    ("before the head", "closed the connection"),
    ("in the head", "closed the connection"),
    ("mid body", "closed the connection before the response was complete"),
])
async def test_a_connection_cut_is_unavailable(raw_server: Callable[[Script], RawServer], cut: str,
                                               match: str) -> None:
    whole = head() + chunked(responses_body())
    upto = {"before the head": 0, "in the head": 10, "mid body": len(whole) // 2}[cut]

    def answer(ex: Exchange) -> None:
        ex.send(whole[:upto])
        ex.close()

    server = raw_server(answer)
    provider = provider_for(server.base_url)
    seen: list[StreamItem] = []
    try:
        with pytest.raises(ProviderUnavailable, match=match), trio.fail_after(TEST_TIMEOUT_S):
            async with aclosing(provider.stream(ModelRequest("", "", [Message.user("x")]))) as items:
                async for item in items:
                    seen.append(item)
    finally:
        await provider.aclose()
    assert not any(isinstance(item, Completed) for item in seen)


async def test_a_silent_server_hits_the_read_timeout(raw_server: Callable[[Script], RawServer]) -> None:
    release = threading.Event()

    def answer(ex: Exchange) -> None:
        piece = sse({"type": "response.output_text.delta", "delta": "a"})
        ex.send(head() + b"%x\r\n%s\r\n" % (len(piece), piece))  # one chunk, and no end of the body
        release.wait(TEST_TIMEOUT_S)  # then nothing more until the test ends
        ex.close()

    server = raw_server(answer)
    provider = provider_for(server.base_url, timeout_s=SHORT_READ_TIMEOUT_S)
    try:
        with pytest.raises(ProviderUnavailable, match="read timeout"):
            await run(provider)
    finally:
        release.set()
        await provider.aclose()


@pytest.mark.parametrize(("answer", "match"), [
    (b"SPDY/9 200 nonsense\r\n\r\n", "malformed HTTP response"),
    (head() + chunked(b"data: {not json\n\n"), "not JSON"),
    (head() + chunked(sse({"type": "error", "message": "overloaded"})), "model stream error: overloaded"),
    (head() + chunked(sse({"type": "response.failed", "response": {"error": {"message": "bad"}}})),
     "model response failed: bad"),
    (head() + chunked(sse({"type": "response.output_text.delta", "delta": "x"})),
     "ended before response.completed"),
])
async def test_bad_answers_are_provider_errors(raw_server: Callable[[Script], RawServer], answer: bytes,
                                               match: str) -> None:
    def script(ex: Exchange) -> None:
        ex.send(answer)
        ex.close()

    server = raw_server(script)
    provider = provider_for(server.base_url)
    try:
        with pytest.raises(ProviderError, match=match) as caught:
            await run(provider)
    finally:
        await provider.aclose()
    assert not isinstance(caught.value, ProviderUnavailable)


async def test_closed_client_refuses_and_bad_urls_are_refused() -> None:
    client = HttpClient("http://127.0.0.1:9/v1", connect_timeout_s=1, read_timeout_s=1)
    await client.aclose()
    with pytest.raises(ProviderError, match="closed"):
        async with client.post("responses", b"{}"):
            pass
    for url in ("ftp://example.invalid/v1", "http:///v1", "http://127.0.0.1:notaport/v1"):
        with pytest.raises(ProviderError, match=r"base_url|port"):
            HttpClient(url, connect_timeout_s=1, read_timeout_s=1)


# --- TLS ------------------------------------------------------------------------------------------------


async def test_https_with_the_trust_store_from_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    body = chunked(responses_body())

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        length = int(data.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(data.split(b"\r\n\r\n", 1)[1]) < length:
            data += await stream.receive_some(4096)
        await stream.send_all(head(200, "Connection: close") + body)
        await stream.aclose()

    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, serve, 0, server_ctx, host="127.0.0.1", https_compatible=True))
        port = listeners[0].transport_listener.socket.getsockname()[1]
        provider = provider_for(f"https://127.0.0.1:{port}/v1")
        try:
            assert await run(provider) == HELLO
        finally:
            await provider.aclose()
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusting = provider_for(f"https://127.0.0.1:{port}/v1")
        try:
            with pytest.raises(ProviderUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await run(untrusting)
        finally:
            await untrusting.aclose()
        nursery.cancel_scope.cancel()
