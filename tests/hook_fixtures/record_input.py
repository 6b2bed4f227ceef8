"""A hook script: appends the JSON it got on stdin, as one line, to the file named by its first argument.

It checks the input's shape first (an object naming its event, with the session facts every hook gets) and
exits 1 with a message on stderr otherwise, so a test sees a malformed input as a failed hook.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Record one hook input."""
    data = json.load(sys.stdin)
    missing = [key for key in ("hook_event_name", "session_id", "cwd") if not isinstance(data.get(key), str)]
    if missing:
        print(f"hook input without {missing}", file=sys.stderr)
        return 1
    with open(sys.argv[1], "a", encoding="utf-8") as out:
        out.write(json.dumps(data) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
