"""Narrow error classes of the runtime. The gRPC gateway maps them to status codes in one place."""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SupervisorError):
    """A configuration value is invalid; the message names the file, line and key (INVALID_ARGUMENT)."""


class ConstraintError(SupervisorError):
    """An update is valid but an administrator's constraint refuses it (FAILED_PRECONDITION)."""


class UnknownSession(SupervisorError):
    """No session with that id, live or logged (NOT_FOUND)."""


class SessionStateError(SupervisorError):
    """The session is not in a state that allows the call (FAILED_PRECONDITION)."""


class LimitExceeded(SupervisorError):
    """A configured limit (sessions, agents, depth, queue) is reached (RESOURCE_EXHAUSTED)."""


class ProcessStartError(SupervisorError):
    """A command, snapshot capture or hook could not be started (missing program, bad cwd) (INVALID_ARGUMENT)."""


class ChildStartError(SupervisorError):
    """A supervised child failed or timed out in its start-up."""


class StartupFailed(SupervisorError):
    """A session could not start; nothing of it remains (FAILED_PRECONDITION)."""


class SupervisorEscalation(SupervisorError):
    """A child exceeded its restart intensity, so its supervisor fails in turn."""


class StashFull(SupervisorError):
    """A restarting child already has as many held messages as its stash allows (RESOURCE_EXHAUSTED)."""


class SandboxUnavailable(SupervisorError):
    """The OS sandbox a session's permission profile needs cannot be set up on this machine (FAILED_PRECONDITION)."""


class CommandForbidden(SupervisorError):
    """An exec policy rule forbids the command; the message carries the rule's justification (PERMISSION_DENIED)."""


class TurnAbortRequested(SupervisorError):
    """An approval answer (or the guardian's circuit breaker) aborts the running turn; the message is the reason."""
class InvalidRequest(SupervisorError):
    """A request field has a value the API does not accept (an undefined enum value, a bad page token, a
    missing directory); the message names the field (INVALID_ARGUMENT)."""


class RequestTooLarge(LimitExceeded):
    """A request field is longer (or has more entries) than its limit; the message names both (RESOURCE_EXHAUSTED)."""


class OutOfRange(SupervisorError):
    """A number in a request is beyond what the API can represent (e.g. ``from_seq >= 2**63``) (OUT_OF_RANGE)."""


class NotFoundError(SupervisorError):
    """A named thing (a tool, a server) does not exist (NOT_FOUND)."""


class PreconditionFailed(SupervisorError):
    """The call is valid but the state of what it names refuses it now (FAILED_PRECONDITION)."""


class Unavailable(SupervisorError):
    """A dependency (an MCP server, a model provider) is down or restarting; retry after ``retry_after_s``
    (UNAVAILABLE, with a ``retry-after-ms`` trailer)."""

    #: Default retry hint, in seconds, when the raiser knows no better one.
    DEFAULT_RETRY_AFTER_S = 1.0

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = self.DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s
