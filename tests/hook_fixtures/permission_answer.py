"""A PermissionRequest hook script: records its stdin JSON (one line) in the file named by its first argument
and answers with the behavior its second argument names (allow or deny), in Claude Code's output shape."""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Record the input, print the decision."""
    data = json.load(sys.stdin)
    if data.get("hook_event_name") != "PermissionRequest" or not isinstance(data.get("tool_input"), dict):
        print(f"not a PermissionRequest input: {data}", file=sys.stderr)
        return 1
    with open(sys.argv[1], "a", encoding="utf-8") as out:
        out.write(json.dumps(data) + "\n")
    decision = {"behavior": sys.argv[2], "message": f"the hook said {sys.argv[2]}"}
    print(json.dumps({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
