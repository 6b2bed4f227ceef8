"""Model providers behind one small interface (``ModelProvider``); see ``base`` for the contract.

Importing this package is cheap: it imports neither ``openai`` nor the playbook; ``create_provider``
imports the concrete provider module when one is built.
"""

from __future__ import annotations

from actors.providers.base import (
    PROVIDER_KINDS,
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    ProviderError,
    ProviderStatusError,
    ProviderUnavailable,
    Reasoning,
    Role,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    ToolKind,
    ToolSpec,
    collect_response,
    create_provider,
    estimate_tokens,
)

__all__ = [
    "PROVIDER_KINDS",
    "Completed",
    "Message",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ProviderError",
    "ProviderStatusError",
    "ProviderUnavailable",
    "Reasoning",
    "Role",
    "StreamItem",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallItem",
    "ToolKind",
    "ToolSpec",
    "collect_response",
    "create_provider",
    "estimate_tokens",
]
