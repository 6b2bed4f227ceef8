#!/usr/bin/env python3
"""session-supervisor: host coding-agent sessions as supervised actors.

Commands:
  run [PROMPT]          run one session in this process and print its events (readable, or --json JSONL)
  serve                 serve the gRPC API (SessionService, health, reflection) on <home>/run/supervisor.sock
  token create|revoke   make or revoke a principal's API token
  sessions list         list sessions (through the running server's API if there is one, else from the log)
  sessions show ID      print a session's logged events (likewise)
  sessions resume ID    resume a logged session in this process and run PROMPT in it
  sessions fork ID      fork a logged session (all of it, or --after-turn N) and run PROMPT in the fork

This file only parses arguments, loads configuration and wires parts together; the logic lives in actors/.
Heavy packages (grpc, mcp, openai, the OpenTelemetry SDK) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from actors import _gencache

_gencache.install()  # before anything that defines dataclasses is imported

DEFAULT_PROMPT = "hello from session-supervisor"
#: Longest a `run` waits for its turn to finish.
RUN_TIMEOUT_S = 600.0
#: Lines of the final agent message shown under the agent tree (the log and --json keep all of it).
FINAL_MESSAGE_LINES = 4
FINAL_LINE_CHARS = 160
#: Bound on one API call of `sessions list|show` against a running server.
CLI_RPC_TIMEOUT_S = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor.py",
        description="Host coding-agent sessions (like Codex's core) as supervised actors, "
        "driven in process or over gRPC.",
        epilog="Configuration layers: /etc/session-supervisor/config.toml < $SESSION_SUPERVISOR_HOME/config.toml "
        "(default ~/.session-supervisor) < ./.session-supervisor/config.toml < --profile < -c key=value.",
    )
    parser.add_argument("--home", type=Path, help="state directory (event log, snapshots); "
                        "default $SESSION_SUPERVISOR_HOME or ~/.session-supervisor")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def session_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cwd", help="working directory of the session (default: here)")
        p.add_argument("-p", "--profile", help="apply [profiles.NAME] from the config")
        p.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (TOML value), e.g. -c approval_policy=never")
        p.add_argument("--json", action="store_true", help="print one JSON object per line (codex exec --json shape)")
        p.add_argument("--all-events", action="store_true", help="with --json: also print events with no JSONL item")
        p.add_argument("--trace", action="store_true",
                       help="record OpenTelemetry spans (in memory) so the session has a trace id to show")

    run = sub.add_parser("run", help="run a session in this process and print its events")
    run.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="the task to run")
    run.add_argument("--attach", action="store_true",
                     help="run it in this home's running `serve` when one is up (config: [run] attach = true)")
    session_options(run)

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--listen", default=None,
                       help="HOST:PORT (port 0 picks one) or unix:PATH; default: the unix socket "
                       "<home>/run/supervisor.sock. A non-loopback address needs TLS")
    serve.add_argument("--token-file", type=Path,
                       help="read the owner token from this file (default: a new one each start)")
    serve.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM) for a TCP --listen")
    serve.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    serve.add_argument("--tls-client-ca", type=Path,
                       help="require client certificates from this CA (mTLS; the subject names the principal)")

    token = sub.add_parser("token", help="API tokens for principals (each owns the sessions it starts)")
    tsub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="print a new token for a principal")
    create.add_argument("--principal", required=True, help="the principal's name")
    create.add_argument("--ttl", type=float, default=0.0, metavar="SECONDS", help="expire after SECONDS (0: never)")
    revoke = tsub.add_parser("revoke", help="revoke a token, or every token of a principal")
    revoke.add_argument("token", nargs="?", default="", help="the token to revoke")
    revoke.add_argument("--principal", default="", help="revoke every token of this principal")
    tsub.add_parser("list", help="list the principals' tokens (names and expiry, never the tokens)")

    sub.add_parser("exec", help="Codex's `codex exec`: same options, config.toml, JSONL (exec --help)", add_help=False)

    sessions = sub.add_parser("sessions", help="inspect and resume logged sessions")
    ssub = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    ssub.add_parser("list", help="list sessions in the log")
    show = ssub.add_parser("show", help="print a session's events")
    show.add_argument("session_id")
    show.add_argument("--json", action="store_true", help="print events as JSON lines")
    resume = ssub.add_parser("resume", help="resume a session and run a prompt in it")
    resume.add_argument("session_id")
    resume.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    session_options(resume)
    fork = ssub.add_parser("fork", help="fork a session (its conversation up to a point) and run a prompt")
    fork.add_argument("session_id")
    fork.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    fork.add_argument("--after-turn", type=int, default=0, metavar="N",
                      help="copy the conversation up to the end of turn N only")
    session_options(fork)
    return parser


def _home(args: argparse.Namespace) -> Path:
    from actors.config import default_home

    return args.home or default_home()


def _guard_processes(home: Path) -> None:
    """Start the process watchdog: what the sessions spawn dies with this process, even on kill -9."""
    from actors.core import install_watchdog, watch_group

    install_watchdog(home)
    if "actors.mcp._spawn" in sys.modules:  # the MCP servers spawned before the watchdog existed
        from actors.mcp import prespawned_pids

        for pid in prespawned_pids():
            watch_group(pid)


def _release_watchdog() -> None:
    """Close the watchdog (it sweeps and exits) and reap it; commands that never started one import nothing."""
    module = sys.modules.get("actors.core._watchdog")
    watchdog = module.active_watchdog() if module is not None else None
    if watchdog is not None:
        watchdog.close()


def _early_config(*, home: Path, cwd: str, profile: str | None, overrides: list[str],
                  codex_home: Path | None = None, defaults: dict[str, Any] | None = None) -> Any:
    """The configuration as the session will load it, read before the runtime is imported (None when it has
    an error: the session's own start then reports it)."""
    from actors.config import load_config

    try:
        return load_config(cwd=cwd, home=home, profile=profile, overrides=overrides, codex_home=codex_home,
                           defaults=defaults)
    except Exception:
        logging.getLogger(__name__).debug("configuration not read early", exc_info=True)
        return None


def _start_early(loaded: Any) -> None:
    """What the session's start will wait for and can begin before the runtime is imported: the configured
    MCP servers and the sandbox's trial run (processes of their own: they overlap our imports)."""
    _prespawn_mcp(loaded)
    if loaded is not None:
        from actors.sandbox import probe_soon

        probe_soon(loaded.session.permission_profile)


def _prespawn_mcp(loaded: Any) -> None:
    """Spawn the configured eager stdio MCP servers now, before the runtime is imported: their own start-up
    (often the slowest part of a session's) then overlaps ours. The session's connections take them over;
    any error here is left for the session's start to report."""
    tables = loaded.table("mcp_servers") if loaded is not None else {}
    if not tables:
        return
    from actors.mcp import parse_mcp_servers, prespawn

    try:
        prespawn(parse_mcp_servers(tables))
    except Exception:  # the same configuration fails the session's start, with the error shown there
        logging.getLogger(__name__).debug("MCP servers not spawned early", exc_info=True)


def _attached_runtime(args: argparse.Namespace, loaded: Any) -> Any:
    """With ``--attach`` or ``[run] attach = true``: a runtime served by this home's running `serve`, or None
    when none is up (the session then runs in this process)."""
    wanted = getattr(args, "attach", False) or (loaded is not None and loaded.table("run").get("attach") is True)
    if not wanted:
        return None
    from actors.cli import AttachedRuntime, serve_channel

    channel = serve_channel(_home(args))
    return AttachedRuntime(channel) if channel is not None else None


def _collect_later() -> None:
    """No cyclic garbage collection while the run path imports (~10% of its CPU: imports allocate much and
    free almost nothing); ``_collect_now`` turns it back on."""
    gc.disable()


def _collect_now() -> None:
    """Collection back on, with what the imports built moved out of its way (``gc.freeze``)."""
    gc.freeze()
    gc.enable()


def _runtime(args: argparse.Namespace) -> Any:
    from actors.runtime import RuntimeOptions, SessionRuntime

    _guard_processes(_home(args))
    return SessionRuntime(RuntimeOptions(home=_home(args)))


def _print_event(event: Any, args: argparse.Namespace, translator: Any, console: Any, view: Any) -> None:
    if args.json:
        for obj in translator.translate(event):
            print(json.dumps(obj), flush=True)
        return
    view.update(event)
    if event.WhichOneof("msg") in ("warning", "error", "deprecation_notice"):
        from actors.cli import render_event

        console.print(render_event(event))


def _install_tracer() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())


def _run_session(args: argparse.Namespace, mode: str, session_id: str = "") -> int:
    _collect_later()
    from actors.cli import JsonlTranslator
    from actors.errors import SupervisorError
    from protos.supervisor.v1 import envelope_pb2, session_pb2

    cwd = os.path.abspath(args.cwd or os.getcwd())
    loaded = _early_config(home=_home(args), cwd=cwd, profile=args.profile, overrides=args.config)
    runtime = _attached_runtime(args, loaded)
    if runtime is None:
        _start_early(loaded)
    console = view = None
    if not args.json:
        from rich.console import Console

        from actors.cli import ProgressView

        console = Console(highlight=False)
        view = ProgressView(console)
    if args.trace:
        _install_tracer()
    if runtime is None:
        runtime = _runtime(args)
    _collect_now()
    translator = JsonlTranslator(verbose=args.all_events)
    exit_code = 0
    try:
        modes = {"resume": session_pb2.START_MODE_RESUME, "fork": session_pb2.START_MODE_FORK}
        request = session_pb2.StartSessionRequest(
            mode=modes.get(mode, session_pb2.START_MODE_NEW),
            session_id=session_id, cwd=cwd, profile=args.profile or "",
            config_overrides=args.config, client_name="supervisor.py",
            fork_after_turn=max(0, getattr(args, "after_turn", 0)),
        )
        started = runtime.start_session(request)
        sid = started.session_id
        reply = runtime.request(sid, envelope_pb2.Envelope(
            submit=session_pb2.SubmitRequest(session_id=sid, input=args.prompt)))
        task_id = reply.submit_reply.task_id
        stop = threading.Event()
        timer = threading.Timer(RUN_TIMEOUT_S, stop.set)
        timer.daemon = True
        timer.start()
        if view is not None:
            view.__enter__()
        try:
            for event in runtime.stream(sid, started.configured_seq, stop=stop):
                _print_event(event, args, translator, console, view)
                kind = event.WhichOneof("msg")
                if event.task_id == task_id and kind in ("turn_completed", "turn_aborted"):
                    exit_code = 0 if kind == "turn_completed" else 1
                    break
        finally:
            if view is not None:
                view.__exit__(None, None, None)
        timer.cancel()
        runtime.stop_session(sid)
        if view is not None and console is not None:
            console.print(view.render_tree())
            if view.final_message:
                text = view.final_message.strip()
                lines = [line[:FINAL_LINE_CHARS] for line in text.splitlines()[:FINAL_MESSAGE_LINES]]
                console.print("\n".join(lines), markup=False)
                if "\n".join(lines) != text:
                    console.print("[dim](cut here: `supervisor.py sessions show ID` or --json print all of it)[/]")
    except SupervisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        exit_code = 2
    finally:
        runtime.shutdown()
        _discard_prespawned()
    global _released
    _released = True
    return exit_code


def _discard_prespawned() -> None:
    """Kill the MCP servers spawned early that no session took (``os._exit`` skips the atexit hook)."""
    if "actors.mcp._spawn" in sys.modules:
        from actors.mcp import discard_prespawned

        discard_prespawned()


def _exec_runtime(read_codex_config: bool, defaults: dict[str, Any], early: Any = None) -> Any:
    _collect_later()
    from actors.config import codex_home

    codex = codex_home() if read_codex_config else None
    home = _home(argparse.Namespace(home=None))
    if early is not None:
        _start_early(_early_config(home=home, cwd=early.cwd, profile=early.profile, overrides=early.overrides,
                                   codex_home=codex, defaults=defaults))
    from actors.runtime import RuntimeOptions, SessionRuntime

    _guard_processes(home)
    runtime = SessionRuntime(RuntimeOptions(home=home, codex_home=codex, config_defaults=defaults))
    _collect_now()
    return runtime


#: Set once a `run` (or `sessions resume`) has stopped its sessions and closed the event log: nothing of the
#: process is left to release, so it may end without interpreter teardown (see ``_exit_without_teardown``).
_released = False


def _exit_without_teardown(code: int) -> None:
    """End the process now: flush what was printed, then ``os._exit``.

    Teardown (joining threads, running finalizers, freeing every module) takes ~0.2-0.5 s after a session
    and does nothing a finished `run` needs: its sessions are stopped and the log is closed (every event was
    committed when it was appended), so only buffered output could be lost, and that is flushed here.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left: like the BrokenPipeError below, a quiet end
        code = code or 0
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _serve(args: argparse.Namespace) -> int:
    from actors.auth import TlsConfig
    from actors.errors import ConfigError
    from actors.gateway import check_listen, serve

    try:
        if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
            raise ConfigError("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)")
        tls = TlsConfig.load(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
        check_listen(args.listen, tls=tls is not None)
        if _running_server(_home(args)):  # before the runtime: a second one must not touch the first's state
            raise ConfigError(f"a server already runs on {_home(args)} (run/serve.json names its pid): stop it first")
        token = args.token_file.read_text().strip() if args.token_file else None
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runtime = _runtime(args)
    try:
        server = serve(runtime, args.listen, token=token, tls=tls)
    except ConfigError as exc:
        runtime.shutdown()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the line a client waits for: a stop right after it counts
        signal.signal(sig, lambda *_: done.set())
    print(f"serving supervisor.v1.SessionService on {server.address}", flush=True)
    _gencache.save()  # the classes of its start-up are defined by now; a server may run for days
    done.wait()
    server.stop()
    runtime.shutdown()
    _release_watchdog()
    return 0


def _token(args: argparse.Namespace) -> int:
    from actors.auth import TokenStore
    from actors.errors import ConfigError

    store = TokenStore(_home(args))
    try:
        if args.action == "create":
            print(store.create(args.principal, args.ttl))
            return 0
        if args.action == "revoke":
            if not args.token and not args.principal:
                print("error: token revoke needs a TOKEN or --principal NAME", file=sys.stderr)
                return 2
            count = store.revoke(args.token, args.principal)
            print(f"revoked {count} token(s)", file=sys.stderr)
            return 0 if count else 1
        for entry in store.entries():
            expires = f"expires {entry.expires:.0f}" if entry.expires else "no expiry"
            print(f"{entry.principal}  {entry.digest[:12]}  {expires}")
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _print_session(session_id: str, status: str, events: int, cwd: str, forked_from: str) -> None:
    forked = f" forked from {forked_from}" if forked_from else ""
    print(f"{session_id}  {status:8}  events={events:<6} cwd={cwd}{forked}")


def _print_events(events: Any, as_json: bool) -> None:
    from google.protobuf.json_format import MessageToDict

    from actors.cli import render_event

    for event in events:
        if as_json:
            print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)))
        elif line := render_event(event, plain=True):  # streamed deltas have no line of their own
            print(f"{event.seq:>5} {line}")


def _running_server(home: Path) -> bool:
    """A server runs on this home (its ``serve.json`` names a live process)."""
    from actors.auth import read_serve_info
    from actors.errors import ConfigError

    try:
        info = read_serve_info(home)
    except ConfigError:
        return False
    if info.pid <= 0:
        return False
    try:
        os.kill(info.pid, 0)
    except OSError:  # gone (a kill -9 leaves its serve.json behind)
        return False
    return True


def _sessions_from_server(args: argparse.Namespace, home: Path) -> int:
    """`sessions list|show` through the running server's API, with the owner token from serve.json."""
    import grpc

    from actors.auth import connect
    from protos.supervisor.v1 import session_pb2, session_pb2_grpc

    with connect(home) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        try:
            if args.action == "list":
                token = ""
                while True:
                    page = stub.ListSessions(session_pb2.ListSessionsRequest(include_stopped=True, page_token=token),
                                             timeout=CLI_RPC_TIMEOUT_S)
                    for info in page.sessions:
                        status = session_pb2.SessionStatus.Name(info.status).removeprefix("SESSION_STATUS_").lower()
                        _print_session(info.session_id, status, info.last_seq + 1, info.configuration.cwd,
                                       info.forked_from_id)
                    token = page.next_page_token
                    if not token:
                        return 0
            _print_events(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=args.session_id,
                                                                            no_follow=True),
                                            timeout=CLI_RPC_TIMEOUT_S), args.json)
            return 0
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.NOT_FOUND:
                print(f"error: no session {args.session_id}", file=sys.stderr)
            else:
                print(f"error: the server at {home} answered {code.name}: {exc.details()}",  # type: ignore[attr-defined]
                      file=sys.stderr)
            return 1


def _sessions(args: argparse.Namespace) -> int:
    from actors.core import EventLog
    from actors.runtime import EVENT_LOG_FILE

    if args.action in ("resume", "fork"):
        return _run_session(args, args.action, args.session_id)
    home = _home(args)
    if _running_server(home):
        return _sessions_from_server(args, home)
    log_path = home / EVENT_LOG_FILE
    if not log_path.exists():
        print("no sessions yet", file=sys.stderr)
        return 0 if args.action == "list" else 1
    log = EventLog(log_path)
    try:
        if args.action == "list":
            from protos.supervisor.v1 import config_pb2

            for record in log.list_sessions():
                conf = config_pb2.SessionConfiguration.FromString(record.config)
                _print_session(record.session_id, record.status, record.last_seq + 1, conf.cwd, record.forked_from)
            return 0
        if log.session(args.session_id) is None:
            print(f"error: no session {args.session_id}", file=sys.stderr)
            return 1
        _print_events(log.follow(args.session_id, 0, live=False), args.json)
        return 0
    finally:
        log.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["exec"]:  # Codex's own grammar, parsed by actors/cli/_exec.py
        from actors.cli import exec_main

        return exec_main(argv[1:], _exec_runtime)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        return _run_session(args, "new")
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    return _sessions(args)


if __name__ == "__main__":
    try:
        code = main()
        _gencache.save()
        if _released:  # the watchdog sees its pipe close when this process ends; it sweeps and exits by itself
            _exit_without_teardown(code)
        _release_watchdog()
        sys.exit(code)
    except BrokenPipeError:  # `supervisor.py sessions show ID | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
