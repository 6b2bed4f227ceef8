"""The part of a session that deals with subagents: their status in the tree's registry, the parent's
wake-up notification, and what happens to running children when a turn ends (``on_parent_end``).

A mixin of ``SessionSupervisor`` (split out to keep modules small).
"""

from __future__ import annotations

import logging

from actors.agents import close_all
from actors.session._children import SessionChildrenMixin
from protos.supervisor.v1 import agents_pb2, config_pb2, envelope_pb2, events_pb2, session_pb2

__all__ = ["SessionAgentsMixin"]

logger = logging.getLogger(__name__)


class SessionAgentsMixin(SessionChildrenMixin):
    """Subagent bookkeeping of a ``SessionSupervisor`` (which provides the attributes declared here)."""

    def _on_submit(self, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        raise NotImplementedError

    def _subagent_ended(self, child_id: str, status: int, message: str) -> None:
        """A subagent child crashed, stopped by itself, or came back: its tree's registry and waiters learn it."""
        registry = self.setup.services.get("agent_registry")
        if registry is None or child_id not in registry.records:
            return
        changed = registry.set_status(child_id, status, message)
        if changed is not None:
            self.emit(agents_pb2.AgentStatusChanged(agent=changed[0], previous=changed[1]))  # type: ignore[arg-type]

    def _report_agent_status(self, status: int, message: str) -> None:
        """A subagent tells its tree's registry and its parent (the parent's wake-up notification)."""
        if self.configuration.session_source.kind != config_pb2.SessionSource.KIND_SUBAGENT:
            return
        registry = self.setup.services.get("agent_registry")
        changed = registry.set_status(self.session_id, status, message) if registry is not None else None
        if changed is None or self.supervisor_ref is None:
            return
        note = events_pb2.Event()
        note.agent_status_changed.agent.CopyFrom(changed[0])
        note.agent_status_changed.previous = changed[1]  # type: ignore[assignment]
        try:
            self.supervisor_ref.tell(envelope_pb2.Envelope(sender=self.setup.agent_path, event=note))
        except Exception:  # the parent is gone: nobody to notify
            logger.debug("parent of %s is gone", self.session_id)

    def _on_agent_event(self, env: envelope_pb2.Envelope) -> None:
        """A subagent's status changed: log it (the notification); wake an idle parent if configured."""
        if env.event.WhichOneof("msg") != "agent_status_changed":
            return
        change = env.event.agent_status_changed
        self.emit(change)
        final = change.agent.status in (agents_pb2.AGENT_STATUS_COMPLETED, agents_pb2.AGENT_STATUS_ERRORED)
        if final and self._running is None and self.agents_config.wake_parent_turn:
            self._on_submit(envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(
                session_id=self.session_id,
                input=f"[subagent {change.agent.nickname} finished] {change.agent.last_message}")))

    def _end_of_turn_for_agents(self, note: envelope_pb2.TaskDone) -> None:
        completed = note.outcome == "completed"
        if not completed or self.agents_config.on_parent_end == "cancel":
            close_all(self)  # an aborted turn takes its subagents with it
        status = agents_pb2.AGENT_STATUS_COMPLETED if completed else agents_pb2.AGENT_STATUS_ERRORED
        self._report_agent_status(status, note.last_agent_message or note.error or note.outcome)
