"""The session: ``SessionSupervisor`` (one actor per session) and what it is started with.
"""

from __future__ import annotations

from actors.session._actor import SessionSupervisor
from actors.session._setup import SessionSetup, event_for
from actors.session._specs import Inheritance

__all__ = [
    "Inheritance",
    "SessionSetup",
    "SessionSupervisor",
    "event_for",
]
