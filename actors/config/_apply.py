"""Session configuration: pure functions over the protobuf ``SessionConfiguration``.

``apply(config, update, constraints)`` is the seed's ``SessionConfiguration::apply``: it returns a *new*
configuration or raises (``ConfigError`` for an invalid value, ``ConstraintError`` for one an administrator
forbids), naming the field, and never touches its input. Rules kept from the seed:
- a relative cwd resolves to an absolute one (against the process cwd);
- a cwd-only change moves a cwd-bound workspace-write policy (exactly the one derived for the old cwd) to
  the new cwd, so the new cwd becomes writable and the old one does not; a richer explicit policy is kept;
- DENY entries survive every update, including a new permission profile.
"""

from __future__ import annotations

import os
from pathlib import Path

from actors.errors import ConfigError, ConstraintError
from protos.supervisor.v1 import config_pb2 as cfg

__all__ = [
    "PROFILE_NAMES",
    "apply",
    "check_constraints",
    "default_configuration",
    "permission_profile_for",
]

READ_ONLY = "read-only"
WORKSPACE_WRITE = "workspace-write"
FULL_ACCESS = "danger-full-access"
PROFILE_NAMES = (READ_ONLY, WORKSPACE_WRITE, FULL_ACCESS)


def _entry(path: str | None = None, special: int | None = None, access: int = cfg.FILE_ACCESS_READ
           ) -> cfg.FileSystemEntry:
    if special is not None:
        return cfg.FileSystemEntry(special=special, access=access)  # type: ignore[arg-type]
    return cfg.FileSystemEntry(path=path, access=access)  # type: ignore[arg-type]


def file_system_policy_for(name: str, cwd: str) -> cfg.FileSystemPolicy:
    """The file-system rules a named profile means for a given cwd."""
    if name == READ_ONLY:
        return cfg.FileSystemPolicy(entries=[_entry(special=cfg.SPECIAL_PATH_ROOT)])
    if name == WORKSPACE_WRITE:
        return cfg.FileSystemPolicy(entries=[
            _entry(special=cfg.SPECIAL_PATH_ROOT),
            _entry(path=cwd, access=cfg.FILE_ACCESS_WRITE),
            _entry(special=cfg.SPECIAL_PATH_TMPDIR, access=cfg.FILE_ACCESS_WRITE),
            _entry(special=cfg.SPECIAL_PATH_SLASH_TMP, access=cfg.FILE_ACCESS_WRITE),
        ])
    if name == FULL_ACCESS:
        return cfg.FileSystemPolicy(entries=[_entry(special=cfg.SPECIAL_PATH_ROOT, access=cfg.FILE_ACCESS_WRITE)])
    raise ConfigError(f"permission_profile.name: unknown profile {name!r} (expected one of {PROFILE_NAMES})")


def permission_profile_for(name: str, cwd: str, network: cfg.NetworkPolicy | None = None) -> cfg.PermissionProfile:
    """A named permission profile bound to ``cwd``."""
    return cfg.PermissionProfile(
        name=name,
        file_system=file_system_policy_for(name, cwd),
        network=network or cfg.NetworkPolicy(mode=cfg.NETWORK_MODE_FULL),
    )


def default_configuration(cwd: str, home: str) -> cfg.SessionConfiguration:
    """Built-in defaults: the offline playbook provider, workspace-write, ask on request."""
    return cfg.SessionConfiguration(
        provider="playbook",
        collaboration_mode=cfg.CollaborationMode(
            mode="default", model="playbook", reasoning_effort=cfg.REASONING_EFFORT_MEDIUM
        ),
        reasoning_summary=cfg.REASONING_SUMMARY_AUTO,
        base_instructions="You are a coding agent running in a supervised session.",
        approval_policy=cfg.APPROVAL_POLICY_ON_REQUEST,
        approvals_reviewer=cfg.APPROVALS_REVIEWER_USER,
        permission_profile=permission_profile_for(WORKSPACE_WRITE, cwd),
        cwd=cwd,
        home=home,
        session_source=cfg.SessionSource(kind=cfg.SessionSource.KIND_CLI),
    )


def _deny_entries(policy: cfg.FileSystemPolicy) -> list[cfg.FileSystemEntry]:
    return [e for e in policy.entries if e.access == cfg.FILE_ACCESS_DENY]


def _with_deny_entries(policy: cfg.FileSystemPolicy, denies: list[cfg.FileSystemEntry]) -> cfg.FileSystemPolicy:
    out = cfg.FileSystemPolicy()
    out.CopyFrom(policy)
    present = {e.SerializeToString(deterministic=True) for e in out.entries}
    for deny in denies:
        if deny.SerializeToString(deterministic=True) not in present:
            out.entries.append(deny)
    return out


def _is_cwd_bound_workspace_write(profile: cfg.PermissionProfile, cwd: str) -> bool:
    """True when the profile's file-system rules are exactly workspace-write for ``cwd`` (plus denies)."""
    non_deny = [e for e in profile.file_system.entries if e.access != cfg.FILE_ACCESS_DENY]
    derived = list(file_system_policy_for(WORKSPACE_WRITE, cwd).entries)
    return profile.name == WORKSPACE_WRITE and non_deny == derived


def check_constraints(config: cfg.SessionConfiguration, constraints: cfg.Constraints) -> None:
    """Raise ``ConstraintError`` naming the field when ``config`` is outside the administrator's limits."""
    allowed_policies = list(constraints.allowed_approval_policies)
    if allowed_policies and config.approval_policy not in allowed_policies:
        names = ", ".join(cfg.ApprovalPolicy.Name(p) for p in allowed_policies)
        raise ConstraintError(
            f"approval_policy: {cfg.ApprovalPolicy.Name(config.approval_policy)} is not allowed "
            f"by the requirements (allowed: {names})"
        )
    allowed_profiles = list(constraints.allowed_permission_profiles)
    if allowed_profiles and config.permission_profile.name not in allowed_profiles:
        raise ConstraintError(
            f"permission_profile: {config.permission_profile.name!r} is not allowed by the requirements "
            f"(allowed: {', '.join(allowed_profiles)})"
        )


def _resolve_cwd(raw: str, base: str) -> str:
    if not raw:
        raise ConfigError("cwd: must not be empty")
    if "\x00" in raw:
        raise ConfigError("cwd: must not contain NUL")
    path = Path(raw)
    if not path.is_absolute():
        path = Path(base) / path
    return os.path.normpath(str(path))


def apply(
    config: cfg.SessionConfiguration,
    update: cfg.SessionSettingsUpdate,
    constraints: cfg.Constraints | None = None,
    *,
    process_cwd: str | None = None,
) -> cfg.SessionConfiguration:
    """Return ``config`` with ``update`` applied, or raise naming the field; ``config`` is never changed."""
    nxt = cfg.SessionConfiguration()
    nxt.CopyFrom(config)
    old_denies = _deny_entries(config.permission_profile.file_system)

    if update.HasField("collaboration_mode"):
        if not update.collaboration_mode.model:
            raise ConfigError("collaboration_mode.model: must not be empty")
        nxt.collaboration_mode.CopyFrom(update.collaboration_mode)
    if update.HasField("reasoning_summary"):
        nxt.reasoning_summary = update.reasoning_summary
    if update.HasField("service_tier"):
        nxt.service_tier = update.service_tier
    if update.HasField("personality"):
        nxt.personality = update.personality
    if update.HasField("approval_policy"):
        if update.approval_policy == cfg.APPROVAL_POLICY_UNSPECIFIED:
            raise ConfigError("approval_policy: must be set to a policy")
        nxt.approval_policy = update.approval_policy
    if update.HasField("approvals_reviewer"):
        nxt.approvals_reviewer = update.approvals_reviewer
    if update.HasField("thread_name"):
        nxt.thread_name = update.thread_name

    cwd_changed = False
    if update.HasField("cwd"):
        new_cwd = _resolve_cwd(update.cwd, process_cwd or os.getcwd())
        cwd_changed = new_cwd != config.cwd
        nxt.cwd = new_cwd

    if update.HasField("permission_profile"):
        profile = update.permission_profile
        if not profile.name:
            raise ConfigError("permission_profile.name: must not be empty")
        if profile.name in PROFILE_NAMES and not profile.file_system.entries:
            fresh = permission_profile_for(profile.name, nxt.cwd, profile.network)
        else:
            fresh = cfg.PermissionProfile()
            fresh.CopyFrom(profile)
        for i, entry in enumerate(fresh.file_system.entries):
            if entry.WhichOneof("target") == "path" and not os.path.isabs(entry.path):
                raise ConfigError(f"permission_profile.file_system.entries[{i}].path: must be absolute")
        fresh.file_system.CopyFrom(_with_deny_entries(fresh.file_system, old_denies))
        nxt.permission_profile.CopyFrom(fresh)
    elif cwd_changed and _is_cwd_bound_workspace_write(config.permission_profile, config.cwd):
        moved = file_system_policy_for(WORKSPACE_WRITE, nxt.cwd)
        nxt.permission_profile.file_system.CopyFrom(_with_deny_entries(moved, old_denies))

    if update.HasField("app_server_client_name"):
        nxt.app_server_client_name = update.app_server_client_name
    if update.HasField("app_server_client_version"):
        nxt.app_server_client_version = update.app_server_client_version

    if constraints is not None:
        check_constraints(nxt, constraints)
    return nxt
