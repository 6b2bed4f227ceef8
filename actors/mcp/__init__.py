"""The mcp wing."""
