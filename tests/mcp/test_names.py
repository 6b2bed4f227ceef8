"""Tool names the model sees: mcp__SERVER__TOOL, sanitised, at most 64 characters, unique, stable."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from actors.mcp._names import MAX_TOOL_NAME_LEN, ToolRef, assign_tool_names, qualified_tool_name, sanitize

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_plain_name() -> None:
    assert qualified_tool_name("docs", "search") == "mcp__docs__search"
    assert sanitize("a.b/c d") == "a_b_c_d"


def test_dot_and_underscore_do_not_collide() -> None:
    names = assign_tool_names([("srv", ["foo.bar", "foo_bar"])])
    assert len(names) == 2
    # The tool whose name needed no sanitising keeps the natural name, whatever the listing order.
    assert names["mcp__srv__foo_bar"] == ToolRef("srv", "foo_bar")
    other = next(name for name, ref in names.items() if ref.tool == "foo.bar")
    assert other.startswith("mcp__srv__foo_bar_") and VALID.match(other)
    assert assign_tool_names([("srv", ["foo_bar", "foo.bar"])]) == names


def test_hundred_character_name_is_exactly_64_and_stable() -> None:
    name = qualified_tool_name("srv", "a" * 100)
    assert len(name) == MAX_TOOL_NAME_LEN == 64
    # Stable across runs and processes: a SHA-1 prefix of the raw (server, tool) pair, not Python's hash().
    assert name == "mcp__srv__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_34b4ba0d"
    assert qualified_tool_name("srv", "a" * 100) == name
    assert qualified_tool_name("srv", "a" * 99 + "b") != name  # same 55-character prefix, different tool


def test_second_server_cannot_shadow_the_first() -> None:
    # "mcp__a__b__c" is both server "a" tool "b__c" and server "a__b" tool "c".
    first = assign_tool_names([("a", ["b__c"]), ("a__b", ["c"])])
    assert first["mcp__a__b__c"] == ToolRef("a", "b__c")  # first in configuration order wins
    shadowing = next(name for name, ref in first.items() if ref.server == "a__b")
    assert shadowing != "mcp__a__b__c" and VALID.match(shadowing)
    swapped = assign_tool_names([("a__b", ["c"]), ("a", ["b__c"])])
    assert swapped["mcp__a__b__c"] == ToolRef("a__b", "c")


def test_existing_names_never_move() -> None:
    before = assign_tool_names([("late", ["c"])])
    # A server earlier in configuration order starts later (on first use) with a clashing tool.
    after = assign_tool_names([("late__x", []), ("late", ["c"])], before)
    assert after["mcp__late__c"] == ToolRef("late", "c")
    grown = assign_tool_names([("a", ["x.y"]), ("late", ["c"])], after)
    assert grown["mcp__late__c"] == ToolRef("late", "c")
    assert grown["mcp__a__x_y"] == ToolRef("a", "x.y")


_names = st.text(alphabet="ab._-/ é", min_size=1, max_size=90)


@given(st.lists(st.tuples(st.sampled_from(["s", "s_", "s.", "t" * 40]), st.lists(_names, max_size=6)), max_size=4))
def test_every_name_is_valid_and_unique(servers: list[tuple[str, list[str]]]) -> None:
    names = assign_tool_names(servers)
    assert all(VALID.match(name) for name in names)
    expected = {ToolRef(server, tool) for server, tools in servers for tool in tools}
    assert set(names.values()) == expected  # every tool named, none twice (dict keys are unique)
    assert len(names) == len(expected)
    assert assign_tool_names(servers) == names  # deterministic
