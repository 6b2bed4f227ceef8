"""HooksActor: a session's lifecycle hooks as a supervised child (a thin wrapper over ``_hooks_runner``).

Contract:
- Built from an already discovered ``HookRegistry`` (``actors.hooks._discovery.discover``; the session puts
  the discovery warnings into its start-up warnings) plus the session facts every hook input carries.
- ``run(event_name, fields, traceparent)`` runs the matching hooks in the actor's own trio scope and returns
  a ``concurrent.futures.Future[AggregateResult]``; stopping the actor kills every hook still running (its
  process group) and settles those futures with ``TaskCancelled``.
- ``runner()`` hands out the ``HookRunner`` itself, for trio code (a turn) that prefers to await hooks in its
  own scope, so that aborting the turn kills them.
- The actor holds no state besides its configuration; a restart loses nothing.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from actors.core import ChildSpec, Restart, SupervisedActor
from actors.hooks._model import HookRegistry
from actors.hooks._output import AggregateResult
from actors.hooks._runner import EmitFn, HookRunner
from protos.supervisor.v1 import hooks_pb2

__all__ = ["HOOKS_CHILD_ID", "HooksActor", "hooks_child_spec"]

#: The child id a session gives its hooks actor.
HOOKS_CHILD_ID = "hooks"


class HooksActor(SupervisedActor):
    """Runs a session's lifecycle hooks on the shared trio loop."""

    def __init__(
        self,
        *,
        registry: HookRegistry,
        cwd: str | os.PathLike[str],
        emit: EmitFn,
        session_id: str = "",
        transcript_path: str | None = None,
        shell_program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        warnings: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._warnings = list(warnings)
        self._runner = HookRunner(
            registry,
            cwd=cwd,
            emit=emit,
            session_id=session_id,
            transcript_path=transcript_path,
            shell_program=shell_program,
            env=env,
        )

    def runner(self) -> HookRunner:
        """The hook runner, for trio callers that await hooks in their own scope."""
        return self._runner

    def run(
        self, event_name: str, fields: Mapping[str, Any] | None = None, traceparent: str | None = None
    ) -> concurrent.futures.Future[AggregateResult]:
        """Run the hooks matching ``event_name`` in this actor's scope; the future holds their result."""
        job = functools.partial(self._runner.run, event_name, fields, traceparent=traceparent)
        return self.run_task(job, critical=False, name=f"hooks:{event_name}")

    def list_hooks(self) -> hooks_pb2.ListHooksResponse:
        """Every loaded hook and the discovery warnings, as a ``ListHooksResponse``."""
        registry = self._runner.registry
        return hooks_pb2.ListHooksResponse(
            hooks=registry.to_proto_definitions(), warnings=self._warnings, disabled=registry.disabled
        )


def hooks_child_spec(
    registry: HookRegistry,
    *,
    cwd: str | os.PathLike[str],
    emit: EmitFn,
    session_id: str = "",
    warnings: Sequence[str] = (),
    **options: Any,
) -> ChildSpec:
    """The ``ChildSpec`` for a session's ``HooksActor`` (``options``: transcript_path, shell_program, env)."""
    return ChildSpec(
        child_id=HOOKS_CHILD_ID,
        actor_class=HooksActor,
        kwargs={
            "registry": registry,
            "cwd": cwd,
            "emit": emit,
            "session_id": session_id,
            "warnings": list(warnings),
            **options,
        },
        restart=Restart.PERMANENT,
        kind="hooks",
    )
