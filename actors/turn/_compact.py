"""Compaction: when the conversation outgrows its context window, the model summarizes it and the summary
(with the most recent user messages) becomes the whole conversation: a new context window begins.

Contract (Codex's local compaction, ``codex-rs/core/src/compact.rs``):
- ``compact(...)`` first runs the PreCompact hooks (``trigger`` = ``auto`` or ``manual``,
  ``custom_instructions``), then sends the conversation plus one user message, the compact prompt
  (``configuration.compact_prompt`` or Codex's, with any ``/compact`` instructions appended), without tools.
  The answer's text is the summary.
- The new conversation is ``build_compacted_history``: the user messages of the old one (earlier summaries
  excluded), newest first up to ``COMPACT_USER_MESSAGE_MAX_TOKENS`` (the oldest one kept is cut to fit), in
  their order, then one user message ``SUMMARY_PREFIX + "\\n" + summary``.
- It replaces the conversation in place, and is logged as ``ContextCompacted`` (the new window generation and
  the summary) followed by one ``HistoryItem`` per entry of the new conversation: a rebuild from the log
  (``messages_from_history``) starts again at each ``ContextCompacted``, so resume and fork get the summary
  onward, and the number of ``ContextCompacted`` events is the window generation.
- When to compact is the turn loop's decision: ``auto_compact_limit`` gives the token limit
  (``model_auto_compact_token_limit``, else 90% of ``model_context_window``, else of the known window of the
  model's family; 0 = never).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

from actors.providers import Completed, Message, ModelProvider, ModelRequest, ProviderError, TextDelta
from protos.supervisor.v1 import config_pb2, events_pb2

__all__ = [
    "COMPACT_COMMAND",
    "COMPACT_PROMPT",
    "COMPACT_USER_MESSAGE_MAX_TOKENS",
    "SUMMARY_PREFIX",
    "approx_tokens",
    "auto_compact_limit",
    "build_compacted_history",
    "collect_user_messages",
    "compact",
    "compact_instructions",
]

logger = logging.getLogger(__name__)

#: Codex's compaction prompt (``codex-rs/core/templates/compact/prompt.md``, Apache-2.0).
COMPACT_PROMPT = """You are performing a CONTEXT CHECKPOINT COMPACTION. Create a handoff summary for another LLM \
that will resume the task.

Include:
- Goal / user objective
- Current progress and key decisions made
- Important context, constraints, or user preferences
- What remains to be done (clear next steps)
- Any critical data, examples, or references needed to continue

Be concise, structured, and focused on helping the next LLM seamlessly continue the work.
"""
#: Codex's prefix of the summary message (``codex-rs/core/templates/compact/summary_prefix.md``, Apache-2.0).
SUMMARY_PREFIX = (
    "Another language model started to solve this problem and produced a summary of its thinking process. You "
    "also have access to the state of the tools that were used by that language model. Use this to build on the "
    "work that has already been done and avoid duplicating work. Here is the summary produced by the other "
    "language model, use the information in this summary to  assist with your own analysis:"
)
#: Budget of the user messages kept beside the summary (Codex's ``COMPACT_USER_MESSAGE_MAX_TOKENS``).
COMPACT_USER_MESSAGE_MAX_TOKENS = 20_000
#: The input that asks for a compaction on demand (``/compact [instructions]``; the Compact RPC sends it).
COMPACT_COMMAND = "/compact"
#: What the summary message says when the model answered nothing.
NO_SUMMARY = "(no summary available)"
#: Share of the context window at which a turn compacts by itself (Codex: 90%).
AUTO_COMPACT_SHARE = 0.9
#: Bytes per token of the estimate (Codex's ``approx_token_count``).
BYTES_PER_TOKEN = 4
#: Context windows of the model families we know (tokens), by model-name prefix, longest prefix first.
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-5", 272_000), ("gpt-4.1", 1_047_576), ("gpt-4o", 128_000), ("o4-mini", 200_000), ("o3", 200_000),
)

HookFn = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


def approx_tokens(text: str) -> int:
    """Codex's estimate: a token per 4 bytes of UTF-8, rounded up."""
    return (len(text.encode()) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def _truncate(text: str, tokens: int) -> str:
    """``text`` cut to about ``tokens`` tokens: its head and tail around a marker naming what was cut."""
    budget = tokens * BYTES_PER_TOKEN
    data = text.encode()
    if len(data) <= budget:
        return text
    head = data[: budget // 2].decode(errors="ignore")
    tail = data[len(data) - budget // 2:].decode(errors="ignore")
    return f"{head}…{approx_tokens(text) - tokens} tokens truncated…{tail}"


def auto_compact_limit(configuration: config_pb2.SessionConfiguration) -> int:
    """The context size (tokens) past which a turn compacts; 0 when it never does by itself."""
    if configuration.model_auto_compact_token_limit > 0:
        return int(configuration.model_auto_compact_token_limit)
    window = int(configuration.model_context_window)
    if window <= 0:
        model = configuration.collaboration_mode.model
        window = next((size for prefix, size in CONTEXT_WINDOWS if model.startswith(prefix)), 0)
    return int(window * AUTO_COMPACT_SHARE)


def is_summary(message: Message) -> bool:
    """True for the summary message of an earlier compaction."""
    return message.role == "user" and message.content.startswith(SUMMARY_PREFIX + "\n")


def collect_user_messages(conversation: list[Message]) -> list[str]:
    """The user messages' texts, earlier summaries excluded."""
    return [m.content for m in conversation if m.role == "user" and not is_summary(m)]


def build_compacted_history(user_messages: list[str], summary: str,
                            max_tokens: int = COMPACT_USER_MESSAGE_MAX_TOKENS) -> list[Message]:
    """The newest user messages within ``max_tokens`` (in order), then the summary message."""
    selected: list[str] = []
    remaining = max_tokens
    for text in reversed(user_messages):
        if remaining <= 0:
            break
        tokens = approx_tokens(text)
        if tokens <= remaining:
            selected.append(text)
            remaining -= tokens
        else:
            selected.append(_truncate(text, remaining))
            break
    selected.reverse()
    return [*(Message.user(text) for text in selected), Message.user(f"{SUMMARY_PREFIX}\n{summary or NO_SUMMARY}")]


def compact_instructions(configuration: config_pb2.SessionConfiguration, extra: str = "") -> str:
    """The compact prompt: the configuration's, else Codex's; ``/compact`` instructions follow it."""
    prompt = configuration.compact_prompt or COMPACT_PROMPT
    return f"{prompt}\n\n{extra}" if extra else prompt


async def compact(*, provider: ModelProvider, request: ModelRequest, conversation: list[Message],
                  configuration: config_pb2.SessionConfiguration, trigger: str, instructions: str,
                  generation: int, emit: Callable[[Any], None], hook: HookFn,
                  record: Callable[[Message], None]) -> tuple[str, Completed]:
    """Summarize ``conversation`` with the model and replace it (see the module docstring); ``request`` is the
    turn's next request (its model and instructions are used, its tools are not). Returns the summary and the
    model's ``Completed``. ``record`` logs one entry of the new conversation."""
    await hook("PreCompact", {"trigger": trigger, "custom_instructions": instructions})
    prompt = Message.user(compact_instructions(configuration, instructions))
    asked = ModelRequest(model=request.model, instructions=request.instructions,
                         messages=[*conversation, prompt], tools=[], reasoning_effort=request.reasoning_effort,
                         agent_role=request.agent_role, agent_nickname=request.agent_nickname,
                         window_id=request.window_id)
    parts: list[str] = []
    completed: Completed | None = None
    async with aclosing(provider.stream(asked)) as items:
        async for item in items:
            if isinstance(item, TextDelta):
                parts.append(item.text)
            elif isinstance(item, Completed):
                completed = item
                break
    if completed is None:
        raise ProviderError("provider stream ended without a Completed item")
    summary = "".join(parts).strip()
    new = build_compacted_history(collect_user_messages(conversation), summary)
    conversation[:] = new
    emit(events_pb2.ContextCompacted(window_generation=generation, summary=summary))
    for message in new:
        record(message)
    logger.info("compacted the conversation (%s): window generation %d, %d entries", trigger, generation, len(new))
    return summary, completed
