"""The main job of `make run`: a session on embedded defaults (no external services), its events printed."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import supervisor


def main() -> int:
    """Run one session in a throwaway home and print its events."""
    with tempfile.TemporaryDirectory(prefix="session-supervisor-") as home:
        return supervisor.main(["--home", home, "run", "say hello to a newcomer"])


if __name__ == "__main__":
    raise SystemExit(main())
