"""Codex's file and process tools for the turn: ``exec_command``, ``write_stdin``, ``apply_patch``,
``update_plan``, with Codex 0.169's arguments, result text and errors.

Contract:
- ``exec_command`` / ``write_stdin`` run through the turn's ``UnifiedExec`` (the session's shell, snapshot,
  proxy environment and sandbox); the output is Codex's chunk text ("Chunk ID", "Wall time", "Process exited
  with code N" or "Process running with session ID N", "Original token count", "Output:"). A non-zero exit
  is an error output. ``sandbox_permissions = "require_escalated"`` is refused: this runtime has no
  approval flow for unsandboxed commands yet.
- ``apply_patch`` takes the patch as the freeform tool's raw input or as ``{"input": PATCH}`` (the JSON form).
  It parses and plans the whole patch first ("apply_patch verification failed: ..." otherwise), refuses it
  when any path is outside what the session's permission profile lets it write ("patch rejected: writing
  outside of the project; rejected by user approval settings": nothing is written), then emits
  ``PatchApplyBegin``, writes, and emits ``PatchApplyEnd``. The output is Codex's ("Exit code: 0", "Wall time",
  "Output:", "Success. Updated the following files:", ``A``/``M``/``D`` lines).
- ``update_plan`` validates ``{"explanation"?, "plan": [{"step", "status"}]}``, emits ``PlanUpdated`` and answers
  "Plan updated".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.patch import (
    FileChange,
    PatchApplyError,
    PatchParseError,
    parse_patch,
    plan_patch,
    refused,
    write_changes,
)
from actors.providers import ToolCall
from actors.shell import UnifiedExec, UnifiedExecError
from actors.turn._router import ToolError, ToolOutput
from protos.supervisor.v1 import config_pb2, tools_pb2

if TYPE_CHECKING:
    from actors.turn._task import TaskContext

__all__ = [
    "PATCH_REJECTED_TEXT",
    "PLAN_UPDATED_TEXT",
    "apply_patch",
    "exec_command",
    "update_plan",
    "writable_check",
    "write_stdin",
]

WORKSPACE_WRITE = "workspace-write"
#: Kept read-only inside every writable root (as the sandbox does; Codex protects ``.git`` and ``.codex``).
PROTECTED_NAMES = (".git", ".session-supervisor")
#: Codex's answer for a patch that would write outside the writable roots (approval policy "never").
PATCH_REJECTED_TEXT = "patch rejected: writing outside of the project; rejected by user approval settings"
PLAN_UPDATED_TEXT = "Plan updated"
ESCALATION_REFUSED_TEXT = (
    "sandbox_permissions=require_escalated is not available in this session (no approval flow for unsandboxed "
    "commands); run the command inside the sandbox"
)
_STATUS = {
    "pending": tools_pb2.PLAN_STEP_STATUS_PENDING,
    "in_progress": tools_pb2.PLAN_STEP_STATUS_IN_PROGRESS,
    "completed": tools_pb2.PLAN_STEP_STATUS_COMPLETED,
}
_KIND = {
    "add": tools_pb2.FILE_CHANGE_KIND_ADD,
    "delete": tools_pb2.FILE_CHANGE_KIND_DELETE,
    "update": tools_pb2.FILE_CHANGE_KIND_UPDATE,
}
MS_PER_S = 1000.0


def _arg(args: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = args.get(name, default)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,)))):
        raise ToolError(f"failed to parse function arguments: `{name}` has the wrong type")
    return value


# --- unified exec ----------------------------------------------------------------------------------
async def exec_command(unified: UnifiedExec, call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """``exec_command``: start a command; its first chunk of output."""
    args = call.arguments
    cmd = _arg(args, "cmd", str)
    if cmd is None:
        raise ToolError("failed to parse function arguments: missing field `cmd`")
    if _arg(args, "sandbox_permissions", str) == "require_escalated":
        return ToolOutput(ESCALATION_REFUSED_TEXT, is_error=True)
    try:
        chunk = await unified.exec_command(
            cmd,
            call_id=call.call_id,
            workdir=_arg(args, "workdir", str),
            tty=bool(_arg(args, "tty", bool, False)),
            yield_time_ms=args.get("yield_time_ms"),
            max_output_tokens=args.get("max_output_tokens"),
            shell=_arg(args, "shell", str),
            login=bool(_arg(args, "login", bool, True)),
        )
    except UnifiedExecError as exc:
        return ToolOutput(str(exc), is_error=True)
    return ToolOutput(chunk.text(), is_error=chunk.exit_code not in (None, 0))


async def write_stdin(unified: UnifiedExec, call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """``write_stdin``: write to (or poll) a running command; the output since the previous chunk."""
    args = call.arguments
    if "session_id" not in args:
        raise ToolError("failed to parse function arguments: missing field `session_id`")
    try:
        chunk = await unified.write_stdin(
            args["session_id"],
            call_id=call.call_id,
            chars=_arg(args, "chars", str, "") or "",
            yield_time_ms=args.get("yield_time_ms"),
            max_output_tokens=args.get("max_output_tokens"),
        )
    except UnifiedExecError as exc:
        return ToolOutput(str(exc), is_error=True)
    return ToolOutput(chunk.text(), is_error=chunk.exit_code not in (None, 0))


# --- apply_patch -----------------------------------------------------------------------------------
def writable_check(ctx: TaskContext, cwd: Path) -> Callable[[Path], bool]:
    """Whether the session's permission profile lets it write a path, with the sandbox's semantics: write
    entries (``SPECIAL_PATH_ROOT`` = everything, ``SPECIAL_PATH_TMPDIR`` = ``$TMPDIR``, paths), the cwd under
    workspace-write, ``.git`` and ``.session-supervisor`` read-only inside them, DENY entries hidden; every
    path through its symlinks (a link grants what it points to, nothing more)."""
    profile = ctx.configuration.permission_profile
    roots: list[Path] = [cwd] if profile.name == WORKSPACE_WRITE else []
    denied: list[Path] = []
    everything = False
    for entry in profile.file_system.entries:
        target = entry.WhichOneof("target")
        if entry.access == config_pb2.FILE_ACCESS_DENY and target == "path":
            denied.append(Path(entry.path))
        elif entry.access != config_pb2.FILE_ACCESS_WRITE:
            continue
        elif target == "special" and entry.special == config_pb2.SPECIAL_PATH_ROOT:
            everything = True
        elif target == "special" and entry.special == config_pb2.SPECIAL_PATH_TMPDIR and os.environ.get("TMPDIR"):
            roots.append(Path(os.environ["TMPDIR"]))
        elif target == "path":
            roots.append(Path(entry.path))
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    protected = [root / name for root in real_roots for name in PROTECTED_NAMES]
    real_denied = [Path(os.path.realpath(path)) for path in denied]

    def may_write(path: Path) -> bool:
        real = Path(os.path.realpath(path))

        def under(bases: list[Path]) -> bool:
            return any(real == base or base in real.parents for base in bases)

        if under(real_denied):
            return False
        return everything or (under(real_roots) and not under(protected))

    return may_write


def _change(change: FileChange) -> tools_pb2.FileChange:
    return tools_pb2.FileChange(path=str(change.path), kind=_KIND[change.kind],
                                move_path=str(change.move_path or ""), unified_diff=change.unified_diff())


def _exec_style(exit_code: int, started: float, output: str) -> str:
    return f"Exit code: {exit_code}\nWall time: {time.monotonic() - started:.1f} seconds\nOutput:\n{output}"


async def apply_patch(cwd: Path, call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """``apply_patch``: verify, check against the sandbox, write; Codex's output."""
    started = time.monotonic()
    text = call.arguments.get("input")
    if not isinstance(text, str):
        raise ToolError("failed to parse function arguments: missing field `input`")
    try:
        changes = plan_patch(parse_patch(text), cwd)
    except (PatchParseError, PatchApplyError) as exc:
        return ToolOutput(f"apply_patch verification failed: {exc}", is_error=True)
    if refused(changes, writable_check(ctx, cwd)):
        return ToolOutput(PATCH_REJECTED_TEXT, is_error=True)
    events = [_change(change) for change in changes]
    ctx.emit(tools_pb2.PatchApplyBegin(call_id=call.call_id, changes=events, auto_approved=True))
    try:
        summary = write_changes(changes)
    except PatchApplyError as exc:
        ctx.emit(tools_pb2.PatchApplyEnd(call_id=call.call_id, success=False, stderr=str(exc), changes=events))
        return ToolOutput(_exec_style(1, started, f"{exc}\n"), is_error=True)
    ctx.emit(tools_pb2.PatchApplyEnd(call_id=call.call_id, success=True, stdout=summary, changes=events))
    return ToolOutput(_exec_style(0, started, summary))


# --- update_plan -----------------------------------------------------------------------------------
async def update_plan(call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """``update_plan``: record the model's plan; answers "Plan updated"."""
    args = call.arguments
    explanation = _arg(args, "explanation", str, "") or ""
    plan = args.get("plan")
    if not isinstance(plan, list):
        raise ToolError("failed to parse function arguments: missing field `plan`")
    steps: list[tools_pb2.PlanStep] = []
    for n, item in enumerate(plan):
        if not isinstance(item, dict) or not isinstance(item.get("step"), str):
            raise ToolError(f"failed to parse function arguments: plan[{n}] needs a string `step`")
        status = _STATUS.get(item.get("status"))  # type: ignore[arg-type]
        if status is None:
            raise ToolError(
                f"failed to parse function arguments: plan[{n}].status must be pending, in_progress or completed")
        steps.append(tools_pb2.PlanStep(step=item["step"], status=status))  # type: ignore[arg-type]
    ctx.emit(tools_pb2.PlanUpdated(call_id=call.call_id, explanation=explanation, plan=steps))
    return ToolOutput(PLAN_UPDATED_TEXT)
