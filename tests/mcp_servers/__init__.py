"""Small MCP servers run as subprocesses by the MCP tests."""
