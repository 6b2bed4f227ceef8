# ruff: noqa: E501  (descriptions are Codex's text, verbatim: the model was trained on them)
"""The model's tools exactly as Codex 0.169 offers them: names, descriptions and JSON-schema parameters.

Captured from the real Codex (``tests/fixtures/codex_0169_tools.json``, see its README); a test holds these
specs equal to the capture. The multi-agent tools ride in Codex's ``multi_agent_v1`` namespace. The
``spawn_agent`` description is Codex's guidance without its catalogue of OpenAI model names (this session's
models are the configuration's).
"""

from __future__ import annotations

from typing import Any

from actors.providers import ToolSpec

__all__ = [
    "AGENT_NAMESPACE",
    "AGENT_NAMESPACE_DESCRIPTION",
    "AGENT_SPECS",
    "APPLY_PATCH_FUNCTION_SPEC",
    "APPLY_PATCH_GRAMMAR",
    "APPLY_PATCH_SPEC",
    "CLOSE_AGENT_SPEC",
    "EXEC_COMMAND_SPEC",
    "RESUME_AGENT_SPEC",
    "SEND_INPUT_SPEC",
    "SPAWN_AGENT_SPEC",
    "UPDATE_PLAN_SPEC",
    "WAIT_AGENT_SPEC",
    "WRITE_STDIN_SPEC",
]

#: The namespace Codex groups its multi-agent tools in; calls come back with ``"namespace": AGENT_NAMESPACE``.
AGENT_NAMESPACE = "multi_agent_v1"
AGENT_NAMESPACE_DESCRIPTION = "Tools for spawning and managing sub-agents."


def _agent_tool(name: str, description: str, parameters: dict[str, Any]) -> ToolSpec:
    return ToolSpec(
        name, description, parameters, namespace=AGENT_NAMESPACE, namespace_description=AGENT_NAMESPACE_DESCRIPTION
    )


EXEC_COMMAND_SPEC = ToolSpec(
    name="exec_command",
    description="Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
    parameters_json_schema={
        "type": "object",
        "properties": {
            "cmd": {"type": "string", "description": "Shell command to execute."},
            "justification": {
                "type": "string",
                "description": "User-facing approval question for `require_escalated`; omit otherwise.",
            },
            "login": {
                "type": "boolean",
                "description": "True runs the shell with -l/-i semantics; false disables them. Defaults to true.",
            },
            "max_output_tokens": {
                "type": "number",
                "description": "Output token budget. Defaults to 10000 tokens; "
                "larger requests may be capped by policy.",
            },
            "prefix_rule": {
                "type": "array",
                "description": "Reusable approval prefix for `cmd`, only with "
                '`sandbox_permissions: "require_escalated"`; for example '
                '["git", "pull"].',
                "items": {"type": "string"},
            },
            "sandbox_permissions": {
                "type": "string",
                "description": "Per-command sandbox override. Defaults to "
                "`use_default`; use `require_escalated` for "
                "unsandboxed execution.",
                "enum": ["use_default", "require_escalated"],
            },
            "shell": {"type": "string", "description": "Shell binary to launch. Defaults to the user's default shell."},
            "tty": {
                "type": "boolean",
                "description": "True allocates a PTY for the command; false or omitted uses plain pipes.",
            },
            "workdir": {
                "type": "string",
                "description": "Working directory for the command. Defaults to the turn cwd.",
            },
            "yield_time_ms": {
                "type": "number",
                "description": "Wait before yielding output. Defaults to 10000 ms; effective range is 250-30000 ms.",
            },
        },
        "required": ["cmd"],
        "additionalProperties": False,
    },
)


WRITE_STDIN_SPEC = ToolSpec(
    name="write_stdin",
    description="Writes characters to an existing unified exec session and returns recent output.",
    parameters_json_schema={
        "type": "object",
        "properties": {
            "chars": {
                "type": "string",
                "description": "Bytes to write to stdin. Defaults to empty, which polls without writing.",
            },
            "max_output_tokens": {
                "type": "number",
                "description": "Output token budget. Defaults to 10000 tokens; "
                "larger requests may be capped by policy.",
            },
            "session_id": {"type": "number", "description": "Identifier of the running unified exec session."},
            "yield_time_ms": {
                "type": "number",
                "description": "Wait before yielding output. Non-empty writes default to "
                "250 ms and cap at 30000 ms; empty polls wait 5000-300000 "
                "ms by default.",
            },
        },
        "required": ["session_id"],
        "additionalProperties": False,
    },
)


UPDATE_PLAN_SPEC = ToolSpec(
    name="update_plan",
    description="Updates the task plan.\nProvide an optional explanation and a list of plan items, each with a step and status.\nAt most one step can be in_progress at a time.\n",
    parameters_json_schema={
        "type": "object",
        "properties": {
            "explanation": {"type": "string", "description": "Optional explanation for this plan update."},
            "plan": {
                "type": "array",
                "description": "The list of steps",
                "items": {
                    "type": "object",
                    "properties": {
                        "status": {
                            "type": "string",
                            "description": "Step status.",
                            "enum": ["pending", "in_progress", "completed"],
                        },
                        "step": {"type": "string", "description": "Task step text."},
                    },
                    "required": ["step", "status"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["plan"],
        "additionalProperties": False,
    },
)


APPLY_PATCH_GRAMMAR = """\
start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""


CLOSE_AGENT_SPEC = _agent_tool(
    "close_agent",
    "Close an agent and any open descendants when they are no longer needed, and return the target agent's previous status before shutdown was requested. Completed agents remain open and count toward the concurrency limit until closed. Don't keep agents open for too long if they are not needed anymore.",
    {
        "type": "object",
        "properties": {"target": {"type": "string", "description": "Agent id to close (from spawn_agent)."}},
        "required": ["target"],
        "additionalProperties": False,
    },
)


RESUME_AGENT_SPEC = _agent_tool(
    "resume_agent",
    "Resume a previously closed agent by id so it can receive send_input and wait_agent calls.",
    {
        "type": "object",
        "properties": {"id": {"type": "string", "description": "Agent id to resume."}},
        "required": ["id"],
        "additionalProperties": False,
    },
)


SEND_INPUT_SPEC = _agent_tool(
    "send_input",
    "Send a message to an existing agent. Use interrupt=true to redirect work immediately. You should reuse the agent by send_input if you believe your assigned task is highly dependent on the context of a previous task.",
    {
        "type": "object",
        "properties": {
            "interrupt": {
                "type": "boolean",
                "description": "True interrupts the current task and handles this message "
                "immediately; false or omitted queues it.",
            },
            "items": {
                "type": "array",
                "description": "Structured input items. Use this to pass explicit mentions (for "
                "example app:// connector paths).",
                "items": {
                    "type": "object",
                    "properties": {
                        "audio_url": {"type": "string", "description": "Audio data URL when type is audio."},
                        "image_url": {"type": "string", "description": "Image URL when type is image."},
                        "name": {"type": "string", "description": "Display name when type is skill or mention."},
                        "path": {
                            "type": "string",
                            "description": "Path when type is "
                            "local_image/local_audio/skill, "
                            "or structured mention target "
                            "such as app://<connector-id> "
                            "or "
                            "plugin://<plugin-name>@<marketplace-name> "
                            "when type is mention.",
                        },
                        "text": {"type": "string", "description": "Text content when type is text."},
                        "type": {
                            "type": "string",
                            "description": "Input item type: text, image, "
                            "local_image, audio, "
                            "local_audio, skill, or "
                            "mention.",
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "message": {
                "type": "string",
                "description": "Legacy plain-text message to send to the agent. Use either message or items.",
            },
            "target": {"type": "string", "description": "Agent id to message (from spawn_agent)."},
        },
        "required": ["target"],
        "additionalProperties": False,
    },
)


SPAWN_AGENT_SPEC = _agent_tool(
    "spawn_agent",
    "Spawn a sub-agent for a well-scoped task. Returns the spawned agent id plus the user-facing nickname when available. Spawned agents inherit your current model by default. Omit `model` to use that preferred default; set `model` only when an explicit override is needed.\nThis spawn_agent tool provides you access to sub-agents that inherit your current model by default. Do not set the `model` field unless the user explicitly asks for a different model. You should follow the rules and guidelines below to use this tool.\n\nDo not spawn sub-agents unless the user or applicable AGENTS.md/skill instructions explicitly ask for sub-agents, delegation, or parallel agent work.\nRequests for depth, thoroughness, research, investigation, or detailed codebase analysis do not count as permission to spawn.\nAgent-role guidance below only helps choose which agent to use after spawning is already authorized; it never authorizes spawning by itself.\n\n### When to delegate vs. do the subtask yourself\n- First, quickly analyze the overall user task and form a succinct high-level plan. Identify which tasks are immediate blockers on the critical path, and which tasks are sidecar tasks that are needed but can run in parallel without blocking the next local step. As part of that plan, explicitly decide what immediate task you should do locally right now. Do this planning step before delegating to agents so you do not hand off the immediate blocking task to a submodel and then waste time waiting on it.\n- Use a subagent when a subtask is easy enough for it to handle and can run in parallel with your local work. Prefer delegating concrete, bounded sidecar tasks that materially advance the main task without blocking your immediate next local step.\n- Do not delegate urgent blocking work when your immediate next step depends on that result. If the very next action is blocked on that task, the main rollout should usually do it locally to keep the critical path moving.\n- Keep work local when the subtask is too difficult to delegate well and when it is tightly coupled, urgent, or likely to block your immediate next step.\n\n### Designing delegated subtasks\n- Subtasks must be concrete, well-defined, and self-contained.\n- Delegated subtasks must materially advance the main task.\n- Do not duplicate work between the main rollout and delegated subtasks.\n- Avoid issuing multiple delegate calls on the same unresolved thread unless the new delegated task is genuinely different and necessary.\n- Narrow the delegated ask to the concrete output you need next.\n- For coding tasks, prefer delegating concrete code-change worker subtasks over read-only explorer analysis when the subagent can make a bounded patch in a clear write scope.\n- When delegating coding work, instruct the submodel to edit files directly in its forked workspace and list the file paths it changed in the final answer.\n- For code-edit subtasks, decompose work so each delegated task has a disjoint write set.\n\n### After you delegate\n- Call wait_agent very sparingly. Only call wait_agent when you need the result immediately for the next critical-path step and you are blocked until it returns.\n- Do not redo delegated subagent tasks yourself; focus on integrating results or tackling non-overlapping work.\n- While the subagent is running in the background, do meaningful non-overlapping work immediately.\n- Do not repeatedly wait by reflex.\n- When a delegated coding task returns, quickly review the uploaded changes, then integrate or refine them.\n\n### Parallel delegation patterns\n- Run multiple independent information-seeking subtasks in parallel when you have distinct questions that can be answered independently.\n- Split implementation into disjoint codebase slices and spawn multiple agents for them in parallel when the write scopes do not overlap.\n- Delegate verification only when it can run in parallel with ongoing implementation and is likely to catch a concrete risk before final integration.\n- The key is to find opportunities to spawn multiple independent subtasks in parallel within the same round, while ensuring each subtask is well-defined, self-contained, and materially advances the main task.",
    {
        "type": "object",
        "properties": {
            "fork_context": {
                "type": "boolean",
                "description": "True forks the current thread history into the new agent; "
                "false or omitted starts with only the initial prompt.",
            },
            "items": {
                "type": "array",
                "description": "Structured input items. Use this to pass explicit mentions (for "
                "example app:// connector paths).",
                "items": {
                    "type": "object",
                    "properties": {
                        "audio_url": {"type": "string", "description": "Audio data URL when type is audio."},
                        "image_url": {"type": "string", "description": "Image URL when type is image."},
                        "name": {"type": "string", "description": "Display name when type is skill or mention."},
                        "path": {
                            "type": "string",
                            "description": "Path when type is "
                            "local_image/local_audio/skill, "
                            "or structured mention target "
                            "such as app://<connector-id> "
                            "or "
                            "plugin://<plugin-name>@<marketplace-name> "
                            "when type is mention.",
                        },
                        "text": {"type": "string", "description": "Text content when type is text."},
                        "type": {
                            "type": "string",
                            "description": "Input item type: text, image, "
                            "local_image, audio, "
                            "local_audio, skill, or "
                            "mention.",
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "message": {
                "type": "string",
                "description": "Initial plain-text task for the new agent. Use either message or items.",
            },
            "model": {
                "type": "string",
                "description": "Model override for the new agent. Omit unless an explicit override is needed.",
            },
            "reasoning_effort": {
                "type": "string",
                "description": "Reasoning effort override for the new agent. Omit to inherit the parent effort.",
            },
        },
        "additionalProperties": False,
    },
)


WAIT_AGENT_SPEC = _agent_tool(
    "wait_agent",
    "Wait for agents to reach a final status. Completed statuses may include the agent's final message. Returns empty status when timed out. Once the agent reaches a final status, a notification message will be received containing the same completed status.",
    {
        "type": "object",
        "properties": {
            "targets": {
                "type": "array",
                "description": "Agent ids to wait on. Pass multiple ids to wait for whichever finishes first.",
                "items": {"type": "string"},
            },
            "timeout_ms": {
                "type": "number",
                "description": "Timeout in milliseconds. Defaults to 30000, min 10000, max "
                "3600000. Prefer longer waits (minutes) to avoid busy "
                "polling.",
            },
        },
        "required": ["targets"],
        "additionalProperties": False,
    },
)


APPLY_PATCH_SPEC = ToolSpec(
    name="apply_patch",
    description=(
        "The `apply_patch` tool can be used to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON."
    ),
    parameters_json_schema={},
    kind="custom",
    format={"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
)

#: The JSON form (``{"input": PATCH}``) for wire APIs without custom tools (Chat Completions); Codex 0.169
#: offers only the freeform form, and answers a JSON-form call with "aborted".
APPLY_PATCH_FUNCTION_SPEC = ToolSpec(
    name="apply_patch",
    description=(
        "Use the `apply_patch` tool to edit files. `input` is the whole patch: `*** Begin Patch`, then "
        "`*** Add File: PATH` / `*** Update File: PATH` (optional `*** Move to: PATH`, `@@` context hunks) / "
        "`*** Delete File: PATH` sections, then `*** End Patch`."
    ),
    parameters_json_schema={
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The entire contents of the apply_patch command"}},
        "required": ["input"],
        "additionalProperties": False,
    },
)

#: The multi-agent tools in Codex's order inside its namespace.
AGENT_SPECS = (CLOSE_AGENT_SPEC, RESUME_AGENT_SPEC, SEND_INPUT_SPEC, SPAWN_AGENT_SPEC, WAIT_AGENT_SPEC)
