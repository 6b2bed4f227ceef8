#!/usr/bin/env python3
"""A Claude Code PreToolUse hook in the style of Claude Code's documented examples, used unchanged.

Reads the hook input JSON on stdin; for the Bash tool, rejects commands matching a rule by printing the
reasons on stderr and exiting 2 (which blocks the tool call and feeds stderr back to the model).
"""

import json
import re
import sys

_VALIDATION_RULES = [
    (r"\brm\s+-rf\s+/(\s|$)", "Refusing to delete the filesystem root"),
    (r"\bgrep\b(?!.*\|)", "Use 'rg' (ripgrep) instead of 'grep' for better performance and features"),
]


def _validate_command(command: str) -> list[str]:
    issues = []
    for pattern, message in _VALIDATION_RULES:
        if re.search(pattern, command):
            issues.append(message)
    return issues


def main() -> None:
    try:
        input_data = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"Error: Invalid JSON input: {e}", file=sys.stderr)
        sys.exit(1)

    tool_name = input_data.get("tool_name", "")
    if tool_name != "Bash":
        sys.exit(0)

    tool_input = input_data.get("tool_input", {})
    command = tool_input.get("command", "")
    if not command:
        sys.exit(0)

    issues = _validate_command(command)
    if issues:
        for message in issues:
            print(f"• {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
