"""Remote tools: what reaches beyond the server (MCP servers, web search, ``input_file`` URLs).

Everything here fetches through :mod:`threadline.tools.remote.guard`, the one guarded HTTP client.
"""

from threadline.tools.remote.guard import Fetched, RemoteGuard, RemotePolicy, address_class, check_url

__all__ = ["Fetched", "RemoteGuard", "RemotePolicy", "address_class", "check_url"]
