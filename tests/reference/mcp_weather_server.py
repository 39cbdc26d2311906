"""A small MCP server (the official Python SDK, stdio) for the app's MCP tests:
one tool that reports the weather it was asked for and counts its calls in a
file, so a test can tell whether it ran."""
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

calls = Path(sys.argv[1]) if len(sys.argv) > 1 else None
server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Current weather in a city."""
    if calls is not None:
        with calls.open("a") as f:
            f.write(city + "\n")
    return f"The weather in {city}: sunny, 21 degrees Celsius."


if __name__ == "__main__":
    server.run()
