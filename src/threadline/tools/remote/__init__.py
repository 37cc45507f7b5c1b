"""Tools that reach beyond the server: remote MCP servers (``mcp.py``). Every outbound connection
goes through one guarded HTTP client."""
