"""One readable line per session event, for the terminal (rich markup unless ``plain``)."""

from __future__ import annotations

from protos.supervisor.v1 import events_pb2

__all__ = ["render_event"]


def _strip(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


def render_event(event: events_pb2.Event, *, plain: bool = False) -> str:
    """A one-line description of ``event`` ("" for events not worth a line, like streamed deltas)."""
    kind = event.WhichOneof("msg") or ""
    who = f"[dim]{event.agent_path}[/] " if event.agent_path and event.agent_path != "/root" else ""
    line = ""
    if kind == "session_configured":
        sc = event.session_configured
        line = (f"[bold cyan]session[/] {sc.session_id} configured ({sc.start_kind}, "
                f"model {sc.configuration.collaboration_mode.model}, cwd {sc.configuration.cwd})")
    elif kind == "turn_started":
        line = f"[bold]turn[/] started: {event.turn_started.input}"
    elif kind == "agent_message":
        if event.agent_message.delta:
            return ""
        line = f"[green]agent[/] {event.agent_message.text}"
    elif kind == "turn_completed":
        tc = event.turn_completed
        line = f"[bold green]turn completed[/] in {tc.duration_ms} ms, {tc.usage.total_tokens} tokens"
    elif kind == "turn_aborted":
        line = f"[bold red]turn aborted[/]: {event.turn_aborted.reason}"
    elif kind == "warning":
        line = f"[yellow]warning[/] {event.warning.message}"
    elif kind == "deprecation_notice":
        line = f"[yellow]deprecated[/] {event.deprecation_notice.summary}"
    elif kind == "error":
        line = f"[red]error[/] {event.error.message}"
    elif kind == "session_stopped":
        line = f"[bold cyan]session[/] stopped ({event.session_stopped.reason})"
    elif kind == "child_started":
        line = f"[dim]child {event.child_started.child_id} started in {event.child_started.duration_ms} ms[/]"
    elif kind == "child_restarted":
        line = f"[yellow]child {event.child_restarted.child_id} restarted[/] ({event.child_restarted.reason})"
    elif kind == "child_stopped":
        line = f"[dim]child {event.child_stopped.child_id} stopped ({event.child_stopped.reason})[/]"
    elif kind == "tool_call_begin":
        line = f"[magenta]tool[/] {event.tool_call_begin.name} {event.tool_call_begin.arguments_json[:100]}"
    elif kind == "tool_call_end":
        end = event.tool_call_end
        status = "[red]error[/]" if end.is_error else "ok"
        line = f"[magenta]tool[/] {end.name} {status} in {end.duration_ms} ms"
    elif kind == "exec_end":
        line = f"[blue]exec[/] exit {event.exec_end.exit_code} in {event.exec_end.duration_ms} ms"
    elif kind == "agent_spawned":
        agent = event.agent_spawned.agent
        line = f"[cyan]spawned[/] {agent.agent_path} ({agent.role or 'agent'})"
    elif kind == "network_request_blocked":
        blocked = event.network_request_blocked
        line = f"[red]blocked[/] {blocked.host}:{blocked.port} ({blocked.reason})"
    elif kind == "mcp_startup_complete":
        done = event.mcp_startup_complete
        line = f"[dim]MCP ready: {', '.join(done.ready) or '-'}; failed: {len(done.failed)}[/]"
    elif kind:
        line = f"[dim]{kind}[/]"
    text = who + line if line else ""
    return _strip(text) if plain and text else text
