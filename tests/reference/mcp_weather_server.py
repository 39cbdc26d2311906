"""A small MCP server (the official Python SDK) for the app's MCP tests: one
tool that reports the weather it was asked for and counts its calls in a file,
so a test can tell whether it ran. Over stdio, or streamable HTTP on
127.0.0.1 with `--http PORT`."""
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

args = sys.argv[1:]
http_port = None
if "--http" in args:
    i = args.index("--http")
    http_port = int(args[i + 1])
    del args[i : i + 2]
calls = Path(args[0]) if args else None
server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Current weather in a city."""
    if calls is not None:
        with calls.open("a") as f:
            f.write(city + "\n")
    return f"The weather in {city}: sunny, 21 degrees Celsius."


if __name__ == "__main__":
    if http_port is None:
        server.run()
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)
