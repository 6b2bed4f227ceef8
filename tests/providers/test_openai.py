"""The openai provider against a real local streaming server (Responses API and Chat Completions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest
import trio

from actors.providers import (
    Completed,
    Message,
    ModelRequest,
    ProviderError,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    ToolSpec,
    collect_response,
    create_provider,
)
from actors.providers.openai_provider import OpenAIProvider, parse_arguments
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall

#: Every wait in these tests is bounded by this.
TEST_TIMEOUT_S = 10.0
#: A cancelled stream must let go well before the server would (it holds for 10 s).
CANCEL_BOUND_S = 1.5

SHELL = ToolSpec(
    "shell",
    "Run a shell command",
    {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def make_provider(srv: FakeOpenAIServer, **extra: Any) -> OpenAIProvider:
    options = {"base_url": srv.base_url, "api_key": "test-key", "model": "fake-model", "max_retries": 0}
    provider = create_provider("openai", {**options, **extra})
    assert isinstance(provider, OpenAIProvider)
    return provider


def request(messages: list[Message], **extra: Any) -> ModelRequest:
    return ModelRequest(model="", instructions="be brief", messages=messages, tools=[SHELL], **extra)


async def drain(provider: OpenAIProvider, req: ModelRequest) -> list[StreamItem]:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with aclosing(provider.stream(req)) as items:
            return [item async for item in items]


async def two_request_exchange(srv: FakeOpenAIServer, provider: OpenAIProvider) -> None:
    """First request -> shell{"command": "echo hi"}; second (with the tool output) -> "done"."""
    srv.add_replies(
        Reply(calls=(ScriptedCall("shell", {"command": "echo hi"}, call_id="call_a"),), input_tokens=20,
              output_tokens=5),
        Reply(text_deltas=("do", "n", "e"), input_tokens=30, output_tokens=2),
    )
    conversation = [Message.user("say hi")]
    first = await drain(provider, request(conversation))
    call = ToolCall("call_a", "shell", {"command": "echo hi"})
    assert first == [ToolCallItem(call), Completed(TokenUsage(20, 5, 25), "tool_calls")]

    conversation += [Message.assistant("", [call]), Message.tool_result("call_a", "hi\n")]
    second = await drain(provider, request(conversation))
    assert second == [
        TextDelta("do"), TextDelta("n"), TextDelta("e"), Completed(TokenUsage(30, 2, 32), "stop")
    ]


async def test_responses_api_tool_call_exchange(server: FakeOpenAIServer) -> None:
    provider = make_provider(server, api="responses")
    try:
        await two_request_exchange(server, provider)
    finally:
        await provider.aclose()
    assert [r.path for r in server.requests] == ["/v1/responses", "/v1/responses"]
    first, second = (r.body for r in server.requests)
    assert first["stream"] is True
    assert first["instructions"] == "be brief"
    assert first["tools"][0]["name"] == "shell" and first["tools"][0]["type"] == "function"
    assert first["input"] == [{"type": "message", "role": "user", "content": "say hi"}]
    assert {"type": "function_call", "call_id": "call_a", "name": "shell",
            "arguments": '{"command": "echo hi"}'} in second["input"]
    assert second["input"][-1] == {"type": "function_call_output", "call_id": "call_a", "output": "hi\n"}
    assert server.requests[0].headers["authorization"] == "Bearer test-key"


async def test_chat_completions_tool_call_exchange(server: FakeOpenAIServer) -> None:
    provider = make_provider(server, api="chat")
    try:
        await two_request_exchange(server, provider)
    finally:
        await provider.aclose()
    assert [r.path for r in server.requests] == ["/v1/chat/completions", "/v1/chat/completions"]
    first, second = (r.body for r in server.requests)
    assert first["messages"][0] == {"role": "system", "content": "be brief"}
    assert first["stream_options"] == {"include_usage": True}
    assert first["tools"][0]["function"]["name"] == "shell"
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_a"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "hi\n"}


async def test_auto_falls_back_to_chat_when_responses_is_404() -> None:
    with FakeOpenAIServer(responses_api=False) as srv:
        provider = make_provider(srv)
        try:
            await two_request_exchange(srv, provider)
            assert provider.api == "chat"
        finally:
            await provider.aclose()
        assert [r.path for r in srv.requests] == [
            "/v1/responses", "/v1/chat/completions", "/v1/chat/completions"
        ]


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_parallel_calls_and_text_in_one_answer(server: FakeOpenAIServer, api: str) -> None:
    server.add_replies(Reply(
        text_deltas=("running ", "both"),
        calls=(ScriptedCall("shell", {"command": "ls"}, argument_chunks=4),
               ScriptedCall("mcp__example__word_count", {"text": "a b c"}, argument_chunks=2)),
    ))
    provider = make_provider(server, api=api)
    try:
        response = await collect_response(provider, request([Message.user("go")]))
    finally:
        await provider.aclose()
    assert response.text == "running both"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("shell", {"command": "ls"}), ("mcp__example__word_count", {"text": "a b c"})
    ]
    assert response.completed.finish_reason == "tool_calls"
    assert response.as_message().tool_calls == response.tool_calls


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_text_deltas_stream_in_order_before_the_answer_ends(server: FakeOpenAIServer, api: str) -> None:
    deltas = tuple(f"w{i} " for i in range(12))
    server.add_replies(Reply(text_deltas=deltas, hold_after=6))
    provider = make_provider(server, api=api)
    seen: list[str] = []
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            async with aclosing(provider.stream(request([Message.user("count")]))) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
                        seen.append(item.text)
                        if len(seen) == 6:
                            # the server is still holding the rest: these arrived incrementally
                            assert await trio.to_thread.run_sync(server.wait_held, TEST_TIMEOUT_S)
                            server.release()
                    else:
                        assert isinstance(item, Completed)
    finally:
        await provider.aclose()
    assert seen == list(deltas)


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_cancel_mid_stream_closes_the_connection(server: FakeOpenAIServer, api: str) -> None:
    server.add_replies(Reply(text_deltas=("first", "never"), hold_after=1), Reply(text_deltas=("again",)))
    provider = make_provider(server, api=api)
    try:
        seen: list[StreamItem] = []
        started = time.monotonic()
        with trio.fail_after(TEST_TIMEOUT_S), trio.CancelScope() as scope:
            async with aclosing(provider.stream(request([Message.user("hang")]))) as items:
                async for item in items:
                    seen.append(item)
                    scope.cancel()
        assert scope.cancelled_caught
        assert seen == [TextDelta("first")]
        assert time.monotonic() - started < CANCEL_BOUND_S
        # the client side of the cancelled stream is gone: the server's next writes fail
        server.release()
        assert await trio.to_thread.run_sync(server.wait_disconnects, 1, TEST_TIMEOUT_S)
        # the provider stays usable after a cancelled stream
        again = await drain(provider, request([Message.user("again")]))
        assert again[0] == TextDelta("again")
    finally:
        await provider.aclose()


async def test_server_error_becomes_provider_error(server: FakeOpenAIServer) -> None:
    server.add_replies(Reply(status=500))
    provider = make_provider(server, api="responses")
    try:
        with pytest.raises(ProviderError, match="500"):
            await drain(provider, request([Message.user("x")]))
    finally:
        await provider.aclose()


async def test_request_fields_pass_through(server: FakeOpenAIServer) -> None:
    server.add_replies(Reply(text_deltas=("ok",)), Reply(text_deltas=("ok",)))
    for api in ("responses", "chat"):
        provider = make_provider(server, api=api)
        try:
            await drain(provider, ModelRequest("gpt-x", "", [Message.user("x")], [], reasoning_effort="low"))
        finally:
            await provider.aclose()
    responses_body, chat_body = (r.body for r in server.requests)
    assert responses_body["model"] == "gpt-x" and responses_body["reasoning"] == {"effort": "low"}
    assert responses_body["store"] is False and "tools" not in responses_body
    assert chat_body["model"] == "gpt-x" and chat_body["reasoning_effort"] == "low"


async def test_base_url_and_key_from_environment(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    server.add_replies(Reply(text_deltas=("hi",)))
    provider = create_provider("openai", {"model": "m", "max_retries": 0})
    try:
        response = await collect_response(provider, request([Message.user("x")]))
    finally:
        await provider.aclose()
    assert response.text == "hi"
    assert server.requests[0].headers["authorization"] == "Bearer env-key"


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="API key"):
        create_provider("openai", {"base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ProviderError, match="unknown openai provider option"):
        create_provider("openai", {"api_key": "k", "bogus": 1})
    with pytest.raises(ProviderError, match="api must be"):
        create_provider("openai", {"api_key": "k", "api": "soap"})
    with pytest.raises(ProviderError, match="unknown provider kind"):
        create_provider("nope", {})


def test_parse_arguments() -> None:
    assert parse_arguments("t", "") == {}
    assert parse_arguments("t", '{"a": 1}') == {"a": 1}
    with pytest.raises(ProviderError, match="invalid JSON arguments for tool t"):
        parse_arguments("t", "{nope")
    with pytest.raises(ProviderError, match="not a JSON object"):
        parse_arguments("t", "[1]")


def test_runs_on_the_shared_host_loop_and_its_task_scope_cancels_it(server: FakeOpenAIServer) -> None:
    """As the session uses it: built in an actor thread, streamed in the shared trio loop, cancelled by
    closing the actor's TaskScope from another thread."""
    from actors.core import TaskCancelled, get_host

    host = get_host()
    server.add_replies(Reply(text_deltas=("hello", " world")), Reply(text_deltas=("held",), hold_after=0))
    provider = make_provider(server)
    scope = host.open_scope("provider-test")
    try:
        hello = request([Message.user("hi")])
        response = host.call(collect_response, provider, hello, timeout=TEST_TIMEOUT_S)
        assert response.text == "hello world"
        hanging = scope.submit(collect_response, provider, request([Message.user("hang")]))
        assert server.wait_held(TEST_TIMEOUT_S)
        started = time.monotonic()
        assert scope.close(TEST_TIMEOUT_S)
        assert time.monotonic() - started < CANCEL_BOUND_S
        with pytest.raises(TaskCancelled):
            hanging.result(TEST_TIMEOUT_S)
    finally:
        scope.close(TEST_TIMEOUT_S)
        host.call(provider.aclose, timeout=TEST_TIMEOUT_S)
