"""Importing the provider package (and the playbook) stays cheap: no openai, mcp or grpc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Modules whose import the session core must not pay for on every start.
HEAVY = ("openai", "mcp", "grpc", "httpx", "httpx2", "pydantic")
#: Bound on the child interpreter.
SUBPROCESS_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import actors.providers
import actors.providers.playbook
import actors.providers.openai_provider
from actors.providers import create_provider
create_provider("playbook", {})
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def test_provider_imports_pull_in_no_heavy_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)],
        cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_probe_would_see_an_sdk_import() -> None:
    """The check above can fail: importing openai is visible to the same probe."""
    done = subprocess.run(
        [sys.executable, "-c", "import openai\n" + PROBE % (HEAVY,)],
        cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "openai" in json.loads(done.stdout.strip().splitlines()[-1])
