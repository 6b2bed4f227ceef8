"""A small MCP server bundled for the demo: `word_count{text}` and `add{a,b}` over stdio.

Run it as a configured MCP server, e.g. in config.toml:

    [mcp_servers.example]
    command = "python"
    args = ["examples/mcp_example_server.py"]
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("example")


@app.tool()
def word_count(text: str) -> int:
    """Count the words (whitespace-separated) of a text."""
    return len(text.split())


@app.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    app.run()
