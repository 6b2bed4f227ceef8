"""The guardian: a reviewer model that answers command approval questions instead of the client.

With ``approvals_reviewer = "guardian_subagent"`` every question goes to ``GuardianReviewer`` (an
``ExecApprovals`` reviewer), as Codex's ``codex-rs/core/src/guardian``: the reviewer gets a fixed policy prompt,
the planned command with its cwd, the reason it needs approval and the recent conversation, and must answer
with strict JSON ``{"outcome": "allow" | "deny", "risk_level": ..., "rationale": "..."}``. It fails closed:
an error, a timeout (the broker's) or output that is not that JSON is a denial. Its rejections are remembered
and its denials feed the circuit breaker (``ExecApprovals``).

The review is one model conversation with the session's provider under the agent role ``guardian`` (the
playbook provider selects its plan by that role), without tools: a reviewer that could run commands would
need reviewing itself.
"""

from __future__ import annotations

import json
import logging
import re

from actors.approvals._broker import ExecDecision, Question, Review
from actors.providers import Message, ModelProvider, ModelRequest, collect_response

__all__ = ["GUARDIAN_ROLE", "GuardianReviewer", "guardian_prompt", "parse_assessment"]

logger = logging.getLogger(__name__)

GUARDIAN_ROLE = "guardian"
#: Most characters of recent conversation handed to the reviewer (Codex bounds its transcript the same way).
MAX_CONTEXT_CHARS = 16_000
GUARDIAN_INSTRUCTIONS = """You review one command a coding agent wants to run, before it runs.
Decide whether running it is consistent with what the user asked for and safe: refuse data exfiltration,
credential probing, persistent weakening of security settings, and destructive actions (deleting data the user
did not ask to delete, force pushes, wiping directories). Allow ordinary development work.
Answer with one JSON object and nothing else:
{"outcome": "allow" or "deny", "risk_level": "low" | "medium" | "high", "rationale": "one sentence"}"""
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def guardian_prompt(question: Question) -> str:
    """The user message the reviewer gets for ``question``."""
    context = question.context[-MAX_CONTEXT_CHARS:]
    parts = [
        f"Command: {question.command}",
        f"Working directory: {question.cwd}",
        f"Agent: {question.agent_path}",
        f"Why approval is needed: {question.reason}",
        f"Runs outside the sandbox if approved: {'yes' if question.escalation else 'no'}",
    ]
    if context:
        parts.append(f"Recent conversation:\n{context}")
    return "\n".join(parts)


def parse_assessment(text: str) -> Review:
    """The reviewer's answer as a ``Review``; anything but the JSON contract is a denial."""
    found = _JSON_OBJECT.search(text)
    try:
        data = json.loads(found.group(0)) if found else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("outcome") not in ("allow", "deny"):
        return Review(ExecDecision.DENY, f"the guardian's answer is not the expected JSON: {text[:200]!r}")
    rationale = str(data.get("rationale", ""))
    if data["outcome"] == "allow":
        return Review(ExecDecision.APPROVE_ONCE, rationale)
    return Review(ExecDecision.DENY, rationale or "the guardian denied it")


class GuardianReviewer:
    """Reviews questions with ``provider`` (model ``model``); an ``ExecApprovals`` reviewer."""

    def __init__(self, provider: ModelProvider, model: str) -> None:
        self._provider = provider
        self._model = model
        #: Reviews done (for tests and diagnostics).
        self.reviews = 0

    async def __call__(self, question: Question) -> Review:
        """Ask the reviewer about ``question``."""
        self.reviews += 1
        request = ModelRequest(
            model=self._model,
            instructions=GUARDIAN_INSTRUCTIONS,
            messages=[Message.user(guardian_prompt(question))],
            agent_role=GUARDIAN_ROLE,
        )
        response = await collect_response(self._provider, request)
        review = parse_assessment(response.text)
        logger.info("guardian: %s %r (%s)", review.decision, question.command, review.rationale)
        return review
