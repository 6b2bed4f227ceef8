"""Shared knobs of the chaos suite (``tests/chaos``): short inside ``make test``, long with ``make chaos``.

``CHAOS_LONG=1`` selects the long figures (``make chaos``); ``CHAOS_SEED=N`` replays a run (each test prints
its seed and figures as one JSON line, ``chaos {...}``).
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

LONG = os.environ.get("CHAOS_LONG", "") not in ("", "0")


def scale(short: int, long: int) -> int:
    """``short`` inside ``make test``, ``long`` under ``make chaos``."""
    return long if LONG else short


def rng(name: str) -> tuple[random.Random, int]:
    """A seeded generator for one test: ``CHAOS_SEED`` if set, else a fresh seed (printed by ``report``)."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    return random.Random(f"{name}:{seed}"), seed


def report(name: str, seed: int, **figures: Any) -> None:
    """Print one test's figures and its seed (to stderr, so pytest shows it with ``-s`` or on failure)."""
    line = json.dumps({"test": name, "seed": seed, "long": LONG, **figures}, sort_keys=False)
    print(f"chaos {line}", file=sys.stderr, flush=True)
