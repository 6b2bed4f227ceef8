"""``supervisor.py exec``: a drop-in for ``codex exec`` (Codex 0.169): its command line, config and JSONL.

Contract:
- Command line: ``exec [OPTIONS] [PROMPT]`` and ``exec [OPTIONS] resume [SESSION_ID | --last] [PROMPT]`` with
  Codex's options (``--json`` / ``--experimental-json``, ``-c/--config``, ``--enable``/``--disable``,
  ``-m``, ``-s``, ``-C/--cd``, ``--add-dir``, ``--skip-git-repo-check``, ``--output-schema``, ``-i/--image``,
  ``-p/--profile``, ``--full-auto``, ``--dangerously-bypass-approvals-and-sandbox``, ``-o``, ``--color``, ...);
  options may follow ``resume`` (the TypeScript SDK puts ``--image`` there). ``fork`` and ``review`` are
  refused. The prompt is the argument, what follows ``--``, or stdin (``-`` or no argument); with both an
  argument and a piped stdin, stdin is appended as a ``<stdin>`` block, as Codex does.
- Configuration: Codex's ``$CODEX_HOME/config.toml`` (default ``~/.codex``; skipped with
  ``--ignore-user-config``) is a layer above the managed one and below ours (see ``actors.config._load``);
  ``-p NAME`` reads ``$CODEX_HOME/NAME.config.toml`` when it exists, else ``[profiles.NAME]``. Codex's defaults
  for exec sit below every layer: provider ``openai``, sandbox ``read-only``, approval ``never``. The provider
  and its key are checked when the session starts, before anything is printed on stdout.
- Output: with ``--json``, exactly Codex's thread/turn/item JSONL (``JsonlTranslator(codex=True)``);
  otherwise the events as lines on stderr and the last agent message on stdout. ``-o FILE`` gets the last
  agent message either way.
- Exit codes, as Codex's: 0 the turn completed; 1 it failed, or the session could not start (bad config,
  unknown session, no prompt, not in a git repository); 2 a command-line error.
- State (the event log that ``resume`` reads) lives in ``$SESSION_SUPERVISOR_HOME`` (default
  ``~/.session-supervisor``), as for every other command.
- The runtime comes from ``make_runtime(read_codex_config, defaults)`` (``supervisor.py`` wires it), so this
  terminal wing imports nothing above it.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from actors.cli._jsonl import USAGE_FIELDS, JsonlTranslator
from actors.cli._render import render_event
from actors.config import load_config
from actors.errors import SupervisorError
from protos.supervisor.v1 import config_pb2, envelope_pb2, session_pb2

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "exec_main", "exec_parser"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Longest one exec turn may run (Codex sets none; ours is bounded so a stuck run ends).
EXEC_TURN_TIMEOUT_S = 6 * 3600.0
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
#: Builds the runtime: (read $CODEX_HOME/config.toml?, values below every config layer) -> SessionRuntime.
@dataclass(frozen=True)
class EarlyStart:
    """What the runtime factory may start before the runtime exists (``supervisor.py`` spawns the MCP servers)."""

    cwd: str
    profile: str | None
    overrides: list[str]


#: ``make_runtime(read_codex_config, defaults, early)``.
RuntimeFactory = Callable[[bool, dict[str, Any], EarlyStart], Any]
#: Codex's defaults for ``codex exec``, below every config layer.
EXEC_DEFAULTS: dict[str, Any] = {"model_provider": "openai", "sandbox_mode": "read-only", "approval_policy": "never"}
CLIENT_NAME = "codex_exec"
#: Codex prints compact JSON lines.
COMPACT = (",", ":")
UNSUPPORTED_SUBCOMMANDS = ("fork", "review")
NOT_TRUSTED = "Not inside a trusted directory and --skip-git-repo-check was not specified."


class ExecUsageError(Exception):
    """The command line or the prompt cannot be used (exit 1 or 2, message on stderr)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def exec_parser() -> argparse.ArgumentParser:
    """The parser of ``exec``'s options (positionals: [PROMPT] or ``resume`` [SESSION_ID] [PROMPT])."""
    p = argparse.ArgumentParser(prog="supervisor.py exec", description="Run one turn non-interactively, "
                                "as `codex exec` does (same options, config.toml and JSONL).")
    p.add_argument("-c", "--config", action="append", default=[], metavar="key=value",
                   help="override a configuration value (dotted key, TOML value)")
    p.add_argument("--enable", action="append", default=[], metavar="FEATURE", help="-c features.FEATURE=true")
    p.add_argument("--disable", action="append", default=[], metavar="FEATURE", help="-c features.FEATURE=false")
    p.add_argument("--strict-config", action="store_true", help="unknown config keys are an error")
    p.add_argument("-i", "--image", action="append", default=[], metavar="FILE", help="image(s) for the prompt")
    p.add_argument("-m", "--model", help="model the agent should use")
    p.add_argument("--oss", action="store_true", help="use a local open-source model server")
    p.add_argument("--local-provider", choices=("lmstudio", "ollama"), help="with --oss: which server")
    p.add_argument("-p", "--profile", help="$CODEX_HOME/NAME.config.toml, else [profiles.NAME]")
    p.add_argument("-s", "--sandbox", choices=SANDBOX_MODES, help="sandbox policy for model commands")
    p.add_argument("--full-auto", action="store_true", help="--sandbox workspace-write")
    p.add_argument("--dangerously-bypass-approvals-and-sandbox", "--yolo", dest="bypass", action="store_true",
                   help="no sandbox, no approvals")
    p.add_argument("-C", "--cd", help="working root of the agent")
    p.add_argument("--add-dir", action="append", default=[], metavar="DIR", help="another writable directory")
    p.add_argument("--skip-git-repo-check", action="store_true", help="allow running outside a git repository")
    p.add_argument("--output-schema", metavar="FILE", help="JSON Schema of the final response")
    p.add_argument("--color", choices=("always", "never", "auto"), default="auto", help="colour of the output")
    p.add_argument("--json", "--experimental-json", dest="json", action="store_true", help="print JSONL events")
    p.add_argument("-o", "--output-last-message", metavar="FILE", help="write the last agent message here")
    p.add_argument("--ignore-user-config", action="store_true", help="do not read $CODEX_HOME/config.toml")
    p.add_argument("--last", action="store_true", help="resume: the most recent session")
    p.add_argument("--all", action="store_true", help="resume --last: any cwd, not only this one")
    p.add_argument("--ephemeral", action="store_true", help="persist nothing (no event log rows, no snapshot)")
    for flag in ("--ignore-rules", "--trust", "--worktree", "--approve-for-me",
                 "--dangerously-bypass-hook-trust"):
        p.add_argument(flag, action="store_true", help="accepted for Codex compatibility; no effect here")
    for flag in ("--thread-source", "--cyber-access-program"):
        p.add_argument(flag, help="accepted for Codex compatibility; no effect here")
    p.add_argument("positionals", nargs="*", metavar="[PROMPT] | resume [SESSION_ID] [PROMPT]")
    return p


def parse_exec_args(argv: Sequence[str]) -> tuple[argparse.Namespace, str, str | None]:
    """Parse ``argv``: (options, session id to resume or "", prompt argument or None)."""
    argv = list(argv)
    literal: list[str] = []
    if "--" in argv:  # everything after `--` is the prompt, never an option or a subcommand
        cut = argv.index("--")
        argv, literal = argv[:cut], argv[cut + 1:]
    ns = exec_parser().parse_intermixed_args(argv)
    words = list(ns.positionals)
    resume = bool(words) and words[0] == "resume"
    if words and words[0] in UNSUPPORTED_SUBCOMMANDS:
        raise ExecUsageError(f"exec {words[0]}: not supported by this runtime", EXIT_USAGE)
    if resume:
        words = words[1:]
        session_id = "" if ns.last else (words.pop(0) if words else "")
        if not session_id and not ns.last:
            raise ExecUsageError("exec resume: give a SESSION_ID or --last", EXIT_USAGE)
    else:
        session_id = ""
    words += literal
    if len(words) > 1:
        raise ExecUsageError(f"unexpected argument {words[1]!r} (quote the prompt as one argument)", EXIT_USAGE)
    ns.resume = resume
    return ns, session_id, words[0] if words else None


def read_prompt(prompt: str | None, stdin: IO[str], stderr: IO[str]) -> str:
    """The prompt: the argument (plus a piped stdin as a ``<stdin>`` block), or all of stdin."""
    if prompt is None or prompt == "-":
        if stdin.isatty():
            print("Reading prompt from stdin...", file=stderr)
        text = stdin.read()
        if not text.strip():
            raise ExecUsageError("No prompt provided via stdin.")
        return text
    if not stdin.isatty():
        print("Reading additional input from stdin...", file=stderr)
        extra = stdin.read()
        if extra.strip():
            return f"{prompt}\n\n<stdin>\n{extra.rstrip()}\n</stdin>"
    return prompt


def exec_overrides(ns: argparse.Namespace) -> list[str]:
    """``-c`` overrides from the command line: the given ones, then those the flags stand for (they win)."""
    out = list(ns.config)
    out += [f"features.{name}=true" for name in ns.enable] + [f"features.{name}=false" for name in ns.disable]
    if ns.oss:
        out.append(f"model_provider={json.dumps(ns.local_provider or 'oss')}")
    if ns.model:
        out.append(f"model={json.dumps(ns.model)}")
    sandbox = ns.sandbox or ("workspace-write" if ns.full_auto else None)
    if ns.bypass:
        sandbox = "danger-full-access"
        out.append('approval_policy="never"')
    if sandbox:
        out.append(f"sandbox_mode={json.dumps(sandbox)}")
    if ns.ephemeral:
        out.append("ephemeral=true")
    return out


def add_dir_overrides(runtime: Any, ns: argparse.Namespace, cwd: str, overrides: list[str],
                      stderr: IO[str]) -> list[str]:
    """``overrides`` plus ``--add-dir``: the directories appended to the configured
    ``sandbox_workspace_write.writable_roots`` (Codex adds them; it does not replace the list)."""
    if not ns.add_dir:
        return overrides
    options = runtime.options
    loaded = load_config(cwd=cwd, home=options.home, managed_dir=options.managed_dir, profile=ns.profile or None,
                         overrides=overrides, codex_home=options.codex_home, defaults=options.config_defaults)
    table = loaded.values.get("sandbox_workspace_write")
    configured = table.get("writable_roots", []) if isinstance(table, dict) else []
    if not isinstance(configured, list):
        configured = []  # the session's own check names the bad value
    if loaded.values.get("sandbox_mode") != "workspace-write":
        print(f"warning: --add-dir has no effect with sandbox_mode {loaded.values.get('sandbox_mode')!r} "
              "(only workspace-write has writable roots)", file=stderr)
    roots = [*configured, *(os.path.abspath(d) for d in ns.add_dir)]
    return [*overrides, f"sandbox_workspace_write.writable_roots={json.dumps(roots)}"]


def in_git_repo(cwd: Path) -> bool:
    """True when ``cwd`` or a parent holds ``.git`` (Codex's condition for running without the check flag)."""
    return any((d / ".git").exists() for d in (cwd, *cwd.parents))


def image_urls(paths: Sequence[str]) -> list[str]:
    """``--image`` files as the ``data:`` URLs Codex sends (``input_image`` parts before the prompt's text)."""
    urls = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ExecUsageError(f"--image {path}: {exc.strerror or exc}") from exc
        mime = mimetypes.guess_type(path)[0] or ""
        if not mime.startswith("image/"):
            raise ExecUsageError(f"--image {path}: not an image file (type {mime or 'unknown'})")
        urls.append(f"data:{mime};base64,{base64.b64encode(data).decode()}")
    return urls


def _check_inputs(ns: argparse.Namespace, stderr: IO[str]) -> dict[str, Any] | None:
    """Check ``--image`` and ``--output-schema``; the schema (sent to the model with each request), if any."""
    for image in ns.image:
        if not os.path.isfile(image):
            raise ExecUsageError(f"--image {image}: no such file")
    if not ns.output_schema:
        return None
    try:
        schema = json.loads(Path(ns.output_schema).read_text())
    except (OSError, ValueError) as exc:
        raise ExecUsageError(f"--output-schema {ns.output_schema}: {exc}") from exc
    if not isinstance(schema, dict):
        raise ExecUsageError(f"--output-schema {ns.output_schema}: the schema must be a JSON object")
    return schema


def _last_session(runtime: Any, cwd: str, any_cwd: bool) -> str:
    for record in runtime.log.list_sessions():
        if record.parent_id:
            continue  # a subagent's own session is not a thread one resumes from the command line
        if any_cwd or config_pb2.SessionConfiguration.FromString(record.config).cwd == cwd:
            return str(record.session_id)
    return ""


class _Output:
    """Where events go: JSONL on stdout, or readable lines on stderr; remembers the last agent message."""

    def __init__(self, json_mode: bool, stdout: IO[str], stderr: IO[str]) -> None:
        self.json_mode = json_mode
        self.stdout = stdout
        self.stderr = stderr
        self.translator = JsonlTranslator(codex=True)
        self.last_message = ""

    def resumed(self, earlier: Iterable[Any]) -> None:
        """Count the usage of a resumed thread's earlier turns (``earlier``: its logged events) in ours."""
        total: dict[str, int] = {}
        for event in earlier:
            if event.WhichOneof("msg") == "turn_completed" and (not event.agent_path or event.agent_path == "/root"):
                for name in USAGE_FIELDS:
                    total[name] = total.get(name, 0) + int(getattr(event.turn_completed.usage, name, 0))
        self.translator = JsonlTranslator(codex=True, usage_before=total)

    def event(self, event: Any) -> None:
        for obj in self.translator.translate(event):
            item = obj.get("item", {})
            if obj["type"] == "item.completed" and item.get("type") == "agent_message":
                self.last_message = item["text"]
            if self.json_mode:
                print(json.dumps(obj, ensure_ascii=False, separators=COMPACT), file=self.stdout, flush=True)
        if not self.json_mode and (not event.agent_path or event.agent_path == "/root"):
            line = render_event(event, plain=True)
            if line:
                print(line, file=self.stderr, flush=True)


def exec_main(argv: Sequence[str], make_runtime: RuntimeFactory, *, stdin: IO[str] | None = None,
              stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run ``exec`` with ``argv`` (the words after ``exec``); return the exit code."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        ns, session_id, prompt_arg = parse_exec_args(argv)
        cwd = Path(os.path.abspath(ns.cd or os.getcwd()))
        if not cwd.is_dir():
            raise ExecUsageError(f"--cd {ns.cd}: not a directory")
        if not ns.skip_git_repo_check and not in_git_repo(cwd):
            raise ExecUsageError(NOT_TRUSTED)
        schema = _check_inputs(ns, stderr)
        images = image_urls(ns.image)
        prompt = read_prompt(prompt_arg, stdin, stderr)
    except ExecUsageError as exc:
        print(f"Error: {exc}", file=stderr)
        return exc.code
    runtime = make_runtime(not ns.ignore_user_config, dict(EXEC_DEFAULTS),
                           EarlyStart(str(cwd), ns.profile or None, exec_overrides(ns)))
    # the runtime is this process's: the turn loop reads these from the session's services
    if schema is not None:
        runtime.options.services["output_schema"] = schema
    if images:
        runtime.options.services["input_images"] = images
    try:
        out = _Output(ns.json, stdout, stderr)
        return _run(runtime, ns, session_id=session_id, prompt=prompt, cwd=str(cwd), out=out)
    except SupervisorError as exc:
        print(f"Error: {exc}", file=stderr)
        return EXIT_FAILED
    finally:
        runtime.shutdown()


def _run(runtime: Any, ns: argparse.Namespace, *, session_id: str, prompt: str, cwd: str, out: _Output) -> int:
    mode = session_pb2.START_MODE_NEW
    if ns.resume:
        session_id = session_id or _last_session(runtime, cwd, ns.all)
        if session_id:  # `resume --last` with nothing to resume starts afresh, as Codex does
            if runtime.log.session(session_id) is None:
                print(f"Error: no session {session_id} to resume", file=out.stderr)
                return EXIT_FAILED
            mode = session_pb2.START_MODE_RESUME
    overrides = add_dir_overrides(runtime, ns, cwd, exec_overrides(ns), out.stderr)
    started = runtime.start_session(session_pb2.StartSessionRequest(
        mode=mode, session_id=session_id, cwd=cwd, profile=ns.profile or "", config_overrides=overrides,
        client_name=CLIENT_NAME))
    sid = started.session_id
    exit_code = EXIT_FAILED
    try:
        if mode == session_pb2.START_MODE_RESUME:
            out.resumed(e for e in runtime.log_of(sid).follow(sid, 0, live=False) if e.seq < started.configured_seq)
        if ns.strict_config and any(e.WhichOneof("msg") == "warning" for e in
                                    runtime.log_of(sid).follow(sid, started.configured_seq, live=False)):
            print("Error: --strict-config: the configuration has keys this runtime does not know "
                  "(see the warnings)", file=out.stderr)
            return EXIT_FAILED
        reply = runtime.request(sid, envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(session_id=sid,
                                                                                           input=prompt)))
        task_id = reply.submit_reply.task_id
        stop = threading.Event()
        timer = threading.Timer(EXEC_TURN_TIMEOUT_S, stop.set)
        timer.daemon = True
        timer.start()
        try:
            for event in runtime.stream(sid, started.configured_seq, stop=stop):
                out.event(event)
                kind = event.WhichOneof("msg")
                if event.task_id == task_id and kind in ("turn_completed", "turn_aborted"):
                    exit_code = EXIT_OK if kind == "turn_completed" else EXIT_FAILED
                    break
        finally:
            timer.cancel()
    finally:
        runtime.stop_session(sid)
    if not out.json_mode and out.last_message:
        print(out.last_message, file=out.stdout, flush=True)
    if ns.output_last_message:
        Path(ns.output_last_message).write_text(out.last_message)
    return exit_code
