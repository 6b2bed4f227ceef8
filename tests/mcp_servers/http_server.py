"""A streamable-HTTP MCP test server on 127.0.0.1 that demands a bearer token.

Usage: http_server.py TOKEN. It binds 127.0.0.1 port 0, prints the port on one stdout line, then serves
`/mcp` (tools `add` and `echo`). A request without `Authorization: Bearer TOKEN` gets 401.
"""

import socket
import sys

#: Listen backlog of the test server's socket.
BACKLOG = 64


def main() -> None:
    """Bind, print the port, serve until killed."""
    import anyio
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from starlette.responses import JSONResponse

    token = sys.argv[1]
    app = MCPServer("http-toolbox")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @app.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    inner = app.streamable_http_app()

    async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)  # connections queue from now on, before uvicorn runs: the port can be used at once
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(guarded, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    anyio.run(server.serve, [sock])


if __name__ == "__main__":
    main()
