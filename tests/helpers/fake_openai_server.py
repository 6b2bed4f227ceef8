"""A real local HTTP server speaking the OpenAI streaming wire formats, scripted per test.

Contract:
- Binds 127.0.0.1 on port 0 (never anything else); ``base_url`` is ``http://127.0.0.1:<port>/v1``.
- Each POST to ``/v1/responses`` or ``/v1/chat/completions`` consumes the next scripted ``Reply`` and
  streams it as server-sent events in that endpoint's format (Responses events, or chat completion
  chunks ending in ``data: [DONE]``). Every request is recorded (path + parsed JSON body).
- ``responses_api=False`` answers 404 on ``/v1/responses``, like servers that only speak Chat Completions.
- ``Reply.hold_after`` makes the server stop after that many text deltas and wait (bounded) until
  ``release()`` or ``close()``: a stream that is provably still open, for cancellation tests.
- ``close()`` stops accepting, wakes held streams, cuts open connections and joins every handler thread.
- ``router`` (optional) picks the reply from the request itself (concurrent subagents each get theirs); when it
  returns None the next queued reply is used. A ``Reply`` can carry a reasoning summary, cached and reasoning
  token counts; a ``ScriptedCall`` can name a tool ``namespace`` or be a freeform ``custom_tool_call``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply", "ScriptedCall"]

#: Longest a held stream waits for release before giving up (a test failing must not hang forever).
HOLD_LIMIT_S = 10.0
#: Idle keep-alive connections are dropped after this long so handler threads always end.
HANDLER_IDLE_TIMEOUT_S = 5.0
#: Bound on joining the serving thread at close.
JOIN_TIMEOUT_S = 5.0
#: How often the accept loop checks for shutdown (bounds how long ``close`` takes).
SERVE_POLL_S = 0.02
#: Default usage figures a reply reports.
DEFAULT_INPUT_TOKENS = 11
DEFAULT_OUTPUT_TOKENS = 7


@dataclass(frozen=True)
class ScriptedCall:
    """A function call the fake model makes; its arguments stream in ``argument_chunks`` pieces."""

    name: str
    arguments: dict[str, Any]
    call_id: str = ""
    argument_chunks: int = 3
    #: Set for a freeform (custom) tool call: its raw input (``arguments`` is then ignored).
    custom: str | None = None
    #: The namespace the model calls the tool in (Responses API), if any.
    namespace: str | None = None
    custom_input: str | None = None  # same as ``custom`` (the recorder's spelling)


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: text deltas, then tool calls, then usage."""

    text_deltas: tuple[str, ...] = ()
    calls: tuple[ScriptedCall, ...] = ()
    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    hold_after: int | None = None
    status: int = 200
    reasoning: tuple[str, ...] = ()  # summary text deltas of a reasoning item streamed before the message
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = HANDLER_IDLE_TIMEOUT_S
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read recorded requests
        pass

    def setup(self) -> None:
        super().setup()
        # many small SSE writes: without NODELAY, Nagle + delayed ACK stall each response ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass  # the client hung up (or idled out) between requests: nothing to answer

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        recorded = RecordedRequest(self.path, body, {k.lower(): v for k, v in self.headers.items()})
        owner._record(recorded)
        if self.path.endswith("/responses") and not owner.responses_api:
            self._send_json(404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
            return
        reply = owner._next_reply(recorded)
        if reply is None:
            self._send_json(500, {"error": {"message": "fake server: no scripted reply left"}})
            return
        if reply.status != 200:
            self._send_json(reply.status, {"error": {"message": f"scripted status {reply.status}"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        model = str(body.get("model", "fake-model"))
        try:
            if self.path.endswith("/responses"):
                self._stream_responses(reply, model)
            elif self.path.endswith("/chat/completions"):
                self._stream_chat(reply, model)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, OSError):
            owner.disconnects += 1
            self.close_connection = True

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _sse(self, payload: dict[str, Any] | str, event: str | None = None) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        head = f"event: {event}\n" if event else ""
        self._chunk(f"{head}data: {data}\n\n".encode())

    def _maybe_hold(self, reply: Reply, sent: int) -> None:
        if reply.hold_after is not None and sent == reply.hold_after:
            self.server.owner._held.set()
            self.server.owner._release.wait(HOLD_LIMIT_S)

    # --- Responses API -------------------------------------------------------------------------
    def _stream_responses(self, reply: Reply, model: str) -> None:
        seq = iter(range(1_000_000))
        base: dict[str, Any] = {
            "id": "resp_fake", "object": "response", "created_at": 0, "model": model,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "status": "in_progress",
            "output": [],
        }

        def emit(kind: str, **fields: Any) -> None:
            self._sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        emit("response.created", response=base)
        output: list[dict[str, Any]] = []
        if reply.reasoning:
            rs_id = "rs_fake"
            summary = "".join(reply.reasoning)
            item = {"id": rs_id, "type": "reasoning", "summary": []}
            emit("response.output_item.added", output_index=0, item=item)
            emit("response.reasoning_summary_part.added", item_id=rs_id, output_index=0, summary_index=0,
                 part={"type": "summary_text", "text": ""})
            for delta in reply.reasoning:
                emit("response.reasoning_summary_text.delta", item_id=rs_id, output_index=0, summary_index=0,
                     delta=delta)
            emit("response.reasoning_summary_text.done", item_id=rs_id, output_index=0, summary_index=0,
                 text=summary)
            done = {**item, "summary": [{"type": "summary_text", "text": summary}]}
            emit("response.output_item.done", output_index=0, item=done)
            output.append(done)
        if reply.text_deltas:
            msg_id = "msg_fake"
            index = len(output)
            text = "".join(reply.text_deltas)
            item = {"id": msg_id, "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
            emit("response.output_item.added", output_index=index, item=item)
            for sent, delta in enumerate(reply.text_deltas):
                self._maybe_hold(reply, sent)
                emit("response.output_text.delta", item_id=msg_id, output_index=index, content_index=0,
                     delta=delta, logprobs=[])
            emit("response.output_text.done", item_id=msg_id, output_index=index, content_index=0,
                 text=text, logprobs=[])
            done = {**item, "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
            emit("response.output_item.done", output_index=index, item=done)
            output.append(done)
        for n, call in enumerate(reply.calls):
            index = len(output)
            item_id = f"fc_{n}"
            call_id = call.call_id or f"call_{n}"
            if call.custom_input is not None:
                output.append(self._stream_custom_call(emit, call, index, item_id, call_id))
                continue
            arguments = json.dumps(call.arguments)
            if call.custom is not None:
                item = {"id": item_id, "type": "custom_tool_call", "status": "completed", "call_id": call_id,
                        "name": call.name, "input": call.custom}
                emit("response.output_item.added", output_index=index, item=item)
                emit("response.output_item.done", output_index=index, item=item)
                output.append(item)
                continue
            item = {"id": item_id, "type": "function_call", "status": "in_progress", "call_id": call_id,
                    "name": call.name, "arguments": ""}
            if call.namespace:
                item["namespace"] = call.namespace
            emit("response.output_item.added", output_index=index, item=item)
            for piece in _split(arguments, call.argument_chunks):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                     delta=piece)
            emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
                 arguments=arguments)
            done = {**item, "status": "completed", "arguments": arguments}
            emit("response.output_item.done", output_index=index, item=done)
            output.append(done)
        usage = {
            "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        }
        emit("response.completed", response={**base, "status": "completed", "output": output, "usage": usage})

    @staticmethod
    def _stream_custom_call(
        emit: Callable[..., None], call: ScriptedCall, index: int, item_id: str, call_id: str
    ) -> dict[str, Any]:
        raw = call.custom_input or ""
        item = {"id": item_id, "type": "custom_tool_call", "status": "in_progress", "call_id": call_id,
                "name": call.name, "input": ""}
        emit("response.output_item.added", output_index=index, item=item)
        for piece in _split(raw, call.argument_chunks):
            emit("response.custom_tool_call_input.delta", item_id=item_id, output_index=index, delta=piece)
        emit("response.custom_tool_call_input.done", item_id=item_id, output_index=index, input=raw)
        done = {**item, "status": "completed", "input": raw}
        emit("response.output_item.done", output_index=index, item=done)
        return done

    # --- Chat Completions ----------------------------------------------------------------------
    def _stream_chat(self, reply: Reply, model: str) -> None:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
            self._sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                       "model": model, "choices": choices, **extra})

        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for sent, delta in enumerate(reply.text_deltas):
            self._maybe_hold(reply, sent)
            chunk([{"index": 0, "delta": {"content": delta}, "finish_reason": None}])
        for n, call in enumerate(reply.calls):
            pieces = _split(json.dumps(call.arguments), call.argument_chunks)
            first = {"index": n, "id": call.call_id or f"call_{n}", "type": "function",
                     "function": {"name": call.name, "arguments": pieces[0]}}
            chunk([{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}])
            for piece in pieces[1:]:
                chunk([{"index": 0, "delta": {"tool_calls": [{"index": n, "function": {"arguments": piece}}]},
                        "finish_reason": None}])
        finish = "tool_calls" if reply.calls else "stop"
        chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
        chunk([], usage={"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
                         "total_tokens": reply.input_tokens + reply.output_tokens})
        self._sse("[DONE]")


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: FakeOpenAIServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeOpenAIServer:
    """A scripted OpenAI-compatible streaming server on loopback; use as a context manager."""

    def __init__(
        self,
        replies: list[Reply] | None = None,
        *,
        responses_api: bool = True,
        router: Callable[[RecordedRequest], Reply | None] | None = None,
    ) -> None:
        self.responses_api = responses_api
        self.router = router
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._replies = list(replies or [])
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._held = threading.Event()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL clients are given."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def config_toml(self) -> str:
        """A session ``config.toml`` whose model is this server (the ``openai`` provider, Responses API)."""
        return ('model_provider = "openai"\nmodel = "fake-model"\n'
                f'[model_providers.openai]\nbase_url = "{self.base_url}"\napi_key = "test-key"\n'
                'api = "responses"\nmax_retries = 0\n')

    def start(self) -> FakeOpenAIServer:
        """Bind and start serving in a background thread."""
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SERVE_POLL_S,), name="fake-openai-server"
        )
        self._thread.start()
        return self

    def add_replies(self, *replies: Reply) -> None:
        """Append more scripted replies."""
        with self._lock:
            self._replies.extend(replies)

    def wait_held(self, timeout: float) -> bool:
        """Block until a stream reached its ``hold_after`` point (False on timeout)."""
        return self._held.wait(timeout)

    def wait_disconnects(self, count: int, timeout: float) -> bool:
        """Poll until at least ``count`` streams found their client gone (False on timeout)."""
        deadline = time.monotonic() + timeout
        while self.disconnects < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(SERVE_POLL_S)
        return True

    def release(self) -> None:
        """Let held streams continue."""
        self._release.set()

    def close(self) -> None:
        """Stop serving, cut open connections and join every thread the server started."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._release.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()  # joins handler threads (block_on_close)
        thread.join(JOIN_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _next_reply(self, request: RecordedRequest) -> Reply | None:
        if self.router is not None:
            routed = self.router(request)
            if routed is not None:
                return routed
        with self._lock:
            return self._replies.pop(0) if self._replies else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
