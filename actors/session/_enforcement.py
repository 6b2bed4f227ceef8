"""A session's enforcement: the OS sandbox of its commands, the exec policy rules and the approval questions.

One ``Enforcement`` per session; a subagent's (``for_child``) shares its root's rules, approval questions and
remembered answers (``ExecApprovals``) and the proxy namespace, under its own permission profile and approval
policy. What each entry point gets:
- every command spawned through the session's shell runs in ``sandbox`` (``actors.sandbox``), including the
  Exec RPC, the model's shell tool and subagents' commands;
- the Exec RPC (the client's own command): ``refuse_forbidden`` only (a ``forbidden`` rule refuses it with
  ``CommandForbidden``; nobody else is asked, the client is the human);
- the model's shell tool: ``gate`` (``actors.approvals.assess``): refused, asked (``ExecApprovals``: the client
  through ResolveApproval, or the guardian), or run; an approved escalation or an ``allow`` rule runs outside
  the sandbox, ``abort`` ends the turn. Before a question is asked, the PermissionRequest hooks
  (``permission_hooks``) may answer it: allow runs the command, deny refuses it, no answer asks as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from actors.approvals import (
    DEFAULT_EXEC_APPROVAL_TIMEOUT_S,
    DEFAULT_MAX_CONSECUTIVE_DENIALS,
    ExecApprovals,
    ExecDecision,
    ExecPolicy,
    GuardianReviewer,
    Question,
    Review,
    RuleDecision,
    Verdict,
    assess,
    load_rules,
)
from actors.config import LoadedConfig
from actors.errors import CommandForbidden, ConfigError
from actors.providers import create_provider
from actors.sandbox import Network, ProxyNamespace, Sandbox, SandboxPolicy, check_available, proxy_address
from protos.supervisor.v1 import config_pb2

__all__ = ["Enforcement", "GateResult"]

logger = logging.getLogger(__name__)

Emit = Callable[[Message], None]


@dataclass(frozen=True)
class GateResult:
    """What the shell tool does with a command: run it (maybe outside the sandbox), refuse it, or abort."""

    run: bool
    bypass_sandbox: bool = False
    #: For the model when the command does not run.
    message: str = ""
    abort: bool = False


def _number(table: Mapping[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"approvals.{key}: expected a positive number, got {value!r}")
    return float(value)


class Enforcement:
    """See the module docstring."""

    def __init__(self, sandbox: Sandbox, rules: ExecPolicy, approvals: ExecApprovals, approval_policy: int) -> None:
        self.sandbox = sandbox
        self.rules = rules
        self.approvals = approvals
        self.approval_policy = approval_policy

    @classmethod
    def for_root(cls, loaded: LoadedConfig | None, configuration: config_pb2.SessionConfiguration,
                 constraints: config_pb2.Constraints, services: Mapping[str, Any]) -> tuple[Enforcement, str]:
        """A root session's enforcement, and a warning when the administrator's unsandboxed fallback applies.

        Raises ``SandboxUnavailable`` when the profile needs a sandbox this machine cannot build.
        """
        warning = check_available(configuration.permission_profile,
                                  allow_fallback=constraints.allow_unsandboxed_fallback)
        rules = load_rules(directory for _source, directory in loaded.layer_dirs) if loaded else ExecPolicy()
        table = loaded.table("approvals") if loaded is not None else {}
        reviewer = None
        if configuration.approvals_reviewer == config_pb2.APPROVALS_REVIEWER_AGENT:
            reviewer = _guardian(configuration, services, str(table.get("guardian_model", "")))
        approvals = ExecApprovals(
            timeout_s=_number(table, "timeout_sec", DEFAULT_EXEC_APPROVAL_TIMEOUT_S),
            reviewer=reviewer,
            max_consecutive_denials=int(_number(table, "guardian_max_denials", DEFAULT_MAX_CONSECUTIVE_DENIALS)),
        )
        sandbox = Sandbox(configuration.permission_profile, unsandboxed=bool(warning))
        return cls(sandbox, rules, approvals, configuration.approval_policy), warning

    def for_child(self, configuration: config_pb2.SessionConfiguration) -> Enforcement:
        """A subagent's: its own profile and approval policy; rules, questions and the namespace shared."""
        check_available(configuration.permission_profile, allow_fallback=self.sandbox.unsandboxed)
        return Enforcement(self.sandbox.with_profile(configuration.permission_profile), self.rules, self.approvals,
                           configuration.approval_policy)

    def update(self, configuration: config_pb2.SessionConfiguration) -> None:
        """Follow a settings update (a new permission profile or approval policy applies to the next command)."""
        self.sandbox.profile = configuration.permission_profile
        self.approval_policy = configuration.approval_policy

    def attach_proxy(self, proxy_env: Mapping[str, str]) -> ProxyNamespace | None:
        """Create the proxy namespace once the proxy listens, when network mode limited needs it."""
        policy = SandboxPolicy.from_profile(self.sandbox.profile, "/", {})
        if policy.network is not Network.LIMITED or self.sandbox.netns is not None or self.sandbox.unsandboxed:
            return None
        address = proxy_address(proxy_env)
        if address is None:
            return None  # no proxy: wrap refuses limited commands rather than running them with network
        self.sandbox.netns = ProxyNamespace.create(*address)
        return self.sandbox.netns

    def refuse_forbidden(self, command: str) -> None:
        """Raise ``CommandForbidden`` (with the rule's justification) when a ``forbidden`` rule matches."""
        found = self.rules.evaluate(command)
        if found is not None and found.decision is RuleDecision.FORBIDDEN:
            raise CommandForbidden(f"forbidden by the exec policy ({found.source}): "
                                   f"{found.justification or 'no justification given'}")

    async def gate(self, command: str, cwd: Path | str, *, emit: Emit, call_id: str = "", agent_path: str = "/root",
                   turn_id: str = "", escalate: bool = False, justification: str = "", hook_asks: str | None = None,
                   context: str = "",
                   permission_hooks: Callable[[], Awaitable[tuple[bool, str] | None]] | None = None) -> GateResult:
        """Decide whether the model's ``command`` runs (see the module docstring)."""
        verdict = assess(command, approval_policy=self.approval_policy, rules=self.rules, escalate=escalate,
                         justification=justification, hook_asks=hook_asks)
        if verdict.verdict is Verdict.FORBID:
            return GateResult(False, message=f"command refused: {verdict.reason}")
        if verdict.verdict is Verdict.RUN:
            return GateResult(True, bypass_sandbox=verdict.bypass_sandbox)
        answered = await permission_hooks() if permission_hooks is not None else None
        if answered is not None:  # a PermissionRequest hook answered in the client's place
            allowed, why = answered
            if allowed:
                return GateResult(True, bypass_sandbox=verdict.bypass_sandbox)
            return GateResult(False, message=f"command not approved: {command!r} was denied by a PermissionRequest "
                                             f"hook ({why or verdict.reason}); do not retry it unchanged")
        question = Question(command=command, cwd=str(cwd), reason=verdict.reason, agent_path=agent_path,
                            call_id=call_id, escalation=verdict.escalation, turn_id=turn_id, context=context)
        decision = await self.approvals.decide(question, emit)
        if decision.approved:
            return GateResult(True, bypass_sandbox=verdict.bypass_sandbox)
        if decision is ExecDecision.ABORT:
            return GateResult(False, message=f"command not approved ({verdict.reason}); the turn is aborted",
                              abort=True)
        return GateResult(False, message=f"command not approved: {command!r} was denied ({verdict.reason}); "
                                         "do not retry it unchanged")


def _guardian(configuration: config_pb2.SessionConfiguration, services: Mapping[str, Any], model: str
              ) -> Callable[[Question], Any]:
    """The guardian reviewer: one model conversation per question with the session's provider (role guardian)."""
    kind = configuration.provider or "playbook"
    model = model or configuration.collaboration_mode.model

    async def review(question: Question) -> Review:
        given = services.get("provider")
        provider = given if given is not None else create_provider(kind, services.get("provider_options", {}))
        try:
            return await GuardianReviewer(provider, model)(question)
        finally:
            if given is None:
                await provider.aclose()

    return review
