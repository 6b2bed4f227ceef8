"""Configuration apply (property-tested) and layered loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.config import _apply as _config
from actors.config._load import load_config, parse_override
from actors.errors import ConfigError, ConstraintError
from protos.supervisor.v1 import config_pb2 as cfg

BASE_CWD = "/work/project"
POLICIES = [cfg.APPROVAL_POLICY_UNTRUSTED, cfg.APPROVAL_POLICY_ON_FAILURE, cfg.APPROVAL_POLICY_ON_REQUEST,
            cfg.APPROVAL_POLICY_NEVER]
DENY = cfg.FileSystemEntry(path="/work/project/secrets", access=cfg.FILE_ACCESS_DENY)


def base(profile: str = _config.WORKSPACE_WRITE) -> cfg.SessionConfiguration:
    conf = _config.default_configuration(BASE_CWD, "/home/u/.session-supervisor")
    conf.permission_profile.CopyFrom(_config.permission_profile_for(profile, BASE_CWD))
    conf.permission_profile.file_system.entries.append(DENY)
    return conf


def writable(conf: cfg.SessionConfiguration) -> set[str]:
    return {e.path for e in conf.permission_profile.file_system.entries
            if e.access == cfg.FILE_ACCESS_WRITE and e.WhichOneof("target") == "path"}


paths = st.lists(st.sampled_from(["a", "b", "..", "c d", "x"]), min_size=1, max_size=4).map("/".join)
updates = st.builds(
    lambda cwd, absolute, policy, profile, thread: cfg.SessionSettingsUpdate(
        **({"cwd": ("/" + cwd) if absolute else cwd} if cwd is not None else {}),
        **({"approval_policy": policy} if policy is not None else {}),
        **({"permission_profile": cfg.PermissionProfile(name=profile)} if profile is not None else {}),
        **({"thread_name": thread} if thread is not None else {}),
    ),
    st.none() | paths, st.booleans(), st.none() | st.sampled_from(POLICIES),
    st.none() | st.sampled_from(_config.PROFILE_NAMES), st.none() | st.text(max_size=5),
)
constraints = st.builds(
    lambda pols, profs: cfg.Constraints(allowed_approval_policies=pols, allowed_permission_profiles=profs),
    st.lists(st.sampled_from(POLICIES), max_size=2), st.lists(st.sampled_from(_config.PROFILE_NAMES), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(update=updates, limits=constraints)
def test_apply_never_mutates_and_either_returns_valid_or_raises_naming_the_field(
        update: cfg.SessionSettingsUpdate, limits: cfg.Constraints) -> None:
    conf = base()
    before = conf.SerializeToString(deterministic=True)
    try:
        nxt = _config.apply(conf, update, limits, process_cwd="/srv")
    except ConstraintError as exc:
        assert str(exc).split(":")[0] in ("approval_policy", "permission_profile")
        assert conf.SerializeToString(deterministic=True) == before
        return
    assert conf.SerializeToString(deterministic=True) == before
    assert os.path.isabs(nxt.cwd) and os.path.normpath(nxt.cwd) == nxt.cwd
    assert DENY in nxt.permission_profile.file_system.entries  # deny entries survive every update
    _config.check_constraints(nxt, limits)  # what apply returns is always within the constraints
    if update.HasField("approval_policy"):
        assert nxt.approval_policy == update.approval_policy


@settings(max_examples=200, deadline=None)
@given(cwd=paths)
def test_cwd_only_change_moves_a_cwd_bound_workspace_write_policy(cwd: str) -> None:
    conf = base()
    nxt = _config.apply(conf, cfg.SessionSettingsUpdate(cwd=cwd), process_cwd="/srv")
    new_cwd = os.path.normpath(os.path.join("/srv", cwd))
    assert nxt.cwd == new_cwd
    if new_cwd != BASE_CWD:
        assert new_cwd in writable(nxt) and BASE_CWD not in writable(nxt)


def test_cwd_change_keeps_a_richer_explicit_policy() -> None:
    conf = base()
    conf.permission_profile.name = "custom"
    conf.permission_profile.file_system.entries.append(cfg.FileSystemEntry(path="/data", access=cfg.FILE_ACCESS_WRITE))
    nxt = _config.apply(conf, cfg.SessionSettingsUpdate(cwd="/elsewhere"))
    assert nxt.permission_profile == conf.permission_profile
    assert nxt.cwd == "/elsewhere"


def test_relative_cwd_resolves_against_process_cwd() -> None:
    nxt = _config.apply(base(), cfg.SessionSettingsUpdate(cwd="sub/dir"), process_cwd="/srv")
    assert nxt.cwd == "/srv/sub/dir"


def test_invalid_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^cwd"):
        _config.apply(base(), cfg.SessionSettingsUpdate(cwd=""))
    with pytest.raises(ConfigError, match=r"^collaboration_mode\.model"):
        _config.apply(base(), cfg.SessionSettingsUpdate(collaboration_mode=cfg.CollaborationMode(model="")))
    with pytest.raises(ConfigError, match=r"^permission_profile\.file_system\.entries\[0\]\.path"):
        _config.apply(base(), cfg.SessionSettingsUpdate(permission_profile=cfg.PermissionProfile(
            name="custom", file_system=cfg.FileSystemPolicy(entries=[cfg.FileSystemEntry(path="rel")]))))


def test_layers_merge_in_order(tmp_path: Path) -> None:
    etc, home, project = tmp_path / "etc", tmp_path / "home", tmp_path / "proj"
    for d in (etc, home, project / ".session-supervisor"):
        d.mkdir(parents=True)
    (etc / "config.toml").write_text('model = "managed"\napproval_policy = "untrusted"\n[network]\nmode = "limited"\n')
    (home / "config.toml").write_text('model = "user"\n[profiles.fast]\nmodel = "profiled"\n')
    (project / ".session-supervisor" / "config.toml").write_text('model = "project"\n')
    loaded = load_config(cwd=str(project), home=home, managed_dir=etc)
    assert loaded.session.collaboration_mode.model == "project"
    assert loaded.session.approval_policy == cfg.APPROVAL_POLICY_UNTRUSTED
    assert loaded.session.permission_profile.network.mode == cfg.NETWORK_MODE_LIMITED
    profiled = load_config(cwd=str(project), home=home, managed_dir=etc, profile="fast")
    assert profiled.session.collaboration_mode.model == "profiled"
    overridden = load_config(cwd=str(project), home=home, managed_dir=etc, profile="fast",
                             overrides=["model=cli", "network.mode=off"])
    assert overridden.session.collaboration_mode.model == "cli"
    assert overridden.session.permission_profile.network.mode == cfg.NETWORK_MODE_OFF
    assert [layer.source for layer in overridden.layers] == ["managed", "user", "project", "profile", "override",
                                                             "override"]


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('model = "m"\n\napproval_policy = "sometimes"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cwd=str(tmp_path), home=home, managed_dir=tmp_path / "none")
    assert f"{home / 'config.toml'}:3" in str(err.value) and "approval_policy" in str(err.value)
    (home / "config.toml").write_text('model = 3\n')
    with pytest.raises(ConfigError, match=r"config\.toml:1: key .model.: expected str"):
        load_config(cwd=str(tmp_path), home=home, managed_dir=tmp_path / "none")
    (home / "config.toml").write_text('model = "unterminated\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(cwd=str(tmp_path), home=home, managed_dir=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"no \[profiles\.nope\]"):
        (home / "config.toml").write_text("")
        load_config(cwd=str(tmp_path), home=home, managed_dir=tmp_path / "none", profile="nope")


def test_requirements_constrain_the_loaded_config(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "requirements.toml").write_text('allowed_approval_policies = ["on-request"]\n')
    with pytest.raises(ConstraintError, match="approval_policy"):
        load_config(cwd=str(tmp_path), home=tmp_path / "h", managed_dir=etc, overrides=['approval_policy="never"'])


def test_overrides_parse_toml_values() -> None:
    assert parse_override("agents.max_threads=8") == {"agents": {"max_threads": 8}}
    assert parse_override("model=gpt-x") == {"model": "gpt-x"}
    assert parse_override('network.allowed_domains=["a.com"]') == {"network": {"allowed_domains": ["a.com"]}}
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_on_failure_is_a_deprecation(tmp_path: Path) -> None:
    loaded = load_config(cwd=str(tmp_path), home=tmp_path / "h", managed_dir=tmp_path / "e",
                         overrides=['approval_policy="on-failure"'])
    assert loaded.deprecations and "on-failure" in loaded.deprecations[0][0]
