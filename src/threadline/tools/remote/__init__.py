"""Remote tools: what reaches beyond the server (MCP servers, web search, ``input_file`` URLs).

Everything here fetches through :mod:`threadline.tools.remote.guard`, the one guarded HTTP client, under the
address rules of :mod:`threadline.tools.remote.addresses`.
"""

from threadline.tools.remote.addresses import RemotePolicy, address_class
from threadline.tools.remote.guard import Fetched, RemoteGuard, check_url

__all__ = ["Fetched", "RemoteGuard", "RemotePolicy", "address_class", "check_url"]
