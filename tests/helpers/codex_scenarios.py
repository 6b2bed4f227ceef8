"""The fake model of the Codex 0.169 scenarios (``tests/fixtures/codex_0169/``), shared by the recorder and the tests.

Contract:
- ``SCENARIOS``: name -> (prompt, config.toml extra, extra argv) of each recorded ``codex exec --json`` run.
- ``route(scenario)`` is the fake server's router for one scenario: the reply is chosen from the request itself
  (the last user message, the tool outputs fed back), so concurrent subagents get their own answers whatever
  order their requests arrive in. ``route_any()`` serves every scenario at once, picked by the conversation's
  first prompt (the SDK test runs several threads against one server).
- ``codex_config(base_url, extra)`` is the ``config.toml`` both Codex and we run with: a ``[model_providers]``
  table pointing at the fake server, its key in ``$X`` (``env_key``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.fake_openai_server import RecordedRequest, Reply, ScriptedCall

__all__ = ["MODEL", "SCENARIOS", "codex_config", "last_user_text", "route", "route_any", "tool_outputs",
           "user_texts"]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gpt-5.5"
MULTI_AGENT_NAMESPACE = "multi_agent_v1"
TOOLBOX = ROOT / "tests" / "mcp_servers" / "toolbox.py"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
#: The provider's key variable in ``codex_config`` (Codex's ``env_key``).
KEY_ENV = "X"

Router = Callable[[RecordedRequest], Reply | None]


def user_texts(body: dict[str, Any]) -> list[str]:
    """The texts of the user messages of a Responses request, in order (string or ``input_text`` parts)."""
    texts: list[str] = []
    for item in body.get("input", []):
        if item.get("type", "message") != "message" or item.get("role") != "user":
            continue
        content = item.get("content", [])
        if isinstance(content, str):  # the Responses API takes a plain string as well as parts
            texts.append(content)
        else:
            texts += [part["text"] for part in content if part.get("type") == "input_text"]
    return texts


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message in a Responses request."""
    texts = user_texts(body)
    return texts[-1] if texts else ""


def tool_outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results fed back in a request, in order."""
    return [item for item in body.get("input", [])
            if item.get("type") in ("function_call_output", "custom_tool_call_output")]


def _agent_ids(outputs: list[dict[str, Any]]) -> list[str]:
    ids = []
    for out in outputs:
        try:
            ids.append(str(json.loads(out["output"])["agent_id"]))
        except (ValueError, KeyError, TypeError):
            ids.append(str(out.get("output")))
    return ids


def route(scenario: str) -> Router:
    """The fake model for one scenario."""

    def answer(request: RecordedRequest) -> Reply:
        body = request.body
        outs = tool_outputs(body)
        last = last_user_text(body)
        if scenario in ("simple", "mcp"):
            return Reply(text_deltas=("Hel", "lo"))
        if scenario == "resume":
            return Reply(text_deltas=("Again",) if last == "again" else ("Hel", "lo"))
        if scenario == "shell":
            if not outs:
                return Reply(calls=(ScriptedCall("exec_command", {"cmd": "echo hi"}, call_id="call_shell"),))
            return Reply(text_deltas=("done",))
        if scenario == "spawn4":
            if last.startswith("task "):
                return Reply(text_deltas=(f"result of {last}",))
            if not outs:
                return Reply(calls=tuple(
                    ScriptedCall("spawn_agent", {"message": f"task {n}"}, call_id=f"call_spawn_{n}",
                                 namespace=MULTI_AGENT_NAMESPACE) for n in range(4)))
            if len(outs) == 4:
                return Reply(calls=(ScriptedCall("wait_agent", {"targets": _agent_ids(outs), "timeout_ms": 30000},
                                                 call_id="call_wait", namespace=MULTI_AGENT_NAMESPACE),))
            return Reply(text_deltas=("all done",))
        if scenario == "extras":
            if not outs:
                plan = [{"step": "look", "status": "in_progress"}, {"step": "fix", "status": "pending"}]
                return Reply(reasoning=("Thinking ", "about it"), text_deltas=("Working.",), reasoning_tokens=5,
                             cached_tokens=3, calls=(ScriptedCall("update_plan", {"plan": plan}, call_id="call_plan"),))
            if len(outs) == 1:
                return Reply(calls=(ScriptedCall("echo", {"text": "ping"}, call_id="call_mcp",
                                                 namespace="mcp__toolbox"),))
            if len(outs) == 2:
                return Reply(calls=(ScriptedCall("apply_patch", {}, call_id="call_patch", custom_input=PATCH),))
            return Reply(text_deltas=("finished",))
        if scenario == "failed":
            return Reply(status=400)
        raise ValueError(f"unknown scenario {scenario!r}")

    return answer


def route_any() -> Router:
    """One router for the scenarios ``simple`` (and its resume), ``shell`` and ``spawn4`` at once, chosen by the
    first prompt of the conversation that is one of theirs (a subagent's ``task N`` goes to ``spawn4``)."""
    by_prompt = {"say hi": route("resume"), SCENARIOS["shell"][0]: route("shell"),
                 SCENARIOS["spawn4"][0]: route("spawn4")}
    spawn = route("spawn4")

    def answer(request: RecordedRequest) -> Reply | None:
        texts = user_texts(request.body)
        if texts and texts[-1].startswith("task "):
            return spawn(request)
        for text in texts:
            if text in by_prompt:
                return by_prompt[text](request)
        return None

    return answer


def _mcp_table(name: str, *flags: str, approve: bool = False) -> str:
    args = ", ".join(json.dumps(a) for a in (str(TOOLBOX), *flags))
    table = f'\n[mcp_servers.{name}]\ncommand = "{sys.executable}"\nargs = [{args}]\nrequired = true\n'
    return table + ('default_tools_approval_mode = "approve"\n' if approve else "")


SCENARIOS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (prompt, config.toml extra, extra argv)
    "simple": ("say hi", "", ()),
    "mcp": ("say hi", "".join(_mcp_table(f"slow{n}", "--start-delay", "1") for n in range(3)), ()),
    "shell": ("run echo hi", "", ()),
    "spawn4": ("spawn four subagents and wait for them", "", ()),
    "extras": ("plan, call the echo tool, add hello.txt",
               _mcp_table("toolbox", approve=True) + "\n[tools.update_plan]\nenabled = true\n",
               ("--sandbox", "workspace-write")),
    "failed": ("say hi", "", ()),
    "resume": ("say hi", "", ()),
}


def codex_config(base_url: str, extra: str = "", *, key_env: str = KEY_ENV) -> str:
    """A Codex ``config.toml``: the fake server as provider ``local`` (Responses API, key in ``$key_env``)."""
    return (f'model = "{MODEL}"\nmodel_provider = "local"\n\n[model_providers.local]\nname = "local"\n'
            f'base_url = "{base_url}"\nwire_api = "responses"\nenv_key = "{key_env}"\nrequest_max_retries = 0\n'
            f'stream_max_retries = 0\n{extra}')
