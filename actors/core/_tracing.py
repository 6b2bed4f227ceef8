"""W3C trace context across actor threads and trio tasks.

contextvars do not follow a message into another pykka thread, so trace context travels only in explicit
carriers: gRPC metadata and ``Envelope.trace`` / ``Event.traceparent`` strings. This module turns those
strings into spans and back. It uses only the OpenTelemetry *API*; which SDK (if any) records spans is the
composition root's choice (``supervisor.py`` or a test installs a ``TracerProvider``).

OpenTelemetry is imported on first use (~30-100 ms): a root span with no parent while ``opentelemetry.trace`` was
never imported is skipped, since no tracer provider can have been installed, so every span would be a no-op.

Rule for subagents (as in Codex): a child session's spans are children of the span that spawned it; when the
parent has no trace, the child gets none (no orphan traces that look like independent roots).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry import context as otel_context

__all__ = ["TRACER_NAME", "carrier", "current_traceparent", "span", "trace_id_of"]

TRACER_NAME = "session_supervisor"


def carrier(traceparent: str, tracestate: str = "") -> dict[str, str]:
    """A propagation carrier dict for the given header values (empty values left out)."""
    out = {}
    if traceparent:
        out["traceparent"] = traceparent
    if tracestate:
        out["tracestate"] = tracestate
    return out


def current_traceparent() -> tuple[str, str]:
    """(traceparent, tracestate) of the current span, or empty strings when untraced."""
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers.get("traceparent", ""), headers.get("tracestate", "")


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id inside a traceparent, or "" when there is none."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


def extract_context(traceparent: str, tracestate: str = "") -> otel_context.Context:
    """An OpenTelemetry context whose parent span is the given traceparent."""
    from opentelemetry import propagate

    return propagate.extract(carrier(traceparent, tracestate))


@contextmanager
def span(
    name: str,
    parent_traceparent: str = "",
    parent_tracestate: str = "",
    *,
    new_root_if_untraced: bool = True,
    attributes: dict[str, str | int | bool] | None = None,
) -> Iterator[str]:
    """A span named ``name`` under the given parent; yields the span's own traceparent ("" if untraced).

    With no parent: a new root trace when ``new_root_if_untraced`` (a root session), otherwise no span at all
    (a subagent of an untraced parent).
    """
    if not parent_traceparent and (not new_root_if_untraced or "opentelemetry.trace" not in sys.modules):
        yield ""
        return
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

    ctx = propagate.extract(carrier(parent_traceparent, parent_tracestate)) if parent_traceparent else None
    if ctx is None:
        ctx = otel_context.Context()  # a fresh root, whatever the calling thread had
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=ctx, attributes=attributes) as current:
        if not current.get_span_context().is_valid:
            yield parent_traceparent
            return
        yield current_traceparent()[0]
