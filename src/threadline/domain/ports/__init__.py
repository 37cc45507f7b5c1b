"""Every interface the domain needs from outside it, as protocols and the values they carry.

- ``models``: a chat model (providers implement it);
- ``tools``: a server-side tool and the set of them (``threadline.tools`` implements them);
- ``tool_services``: what those tools need back from the server (files, vector store search);
- ``retrieval``: the retrieval engine, and what it needs (embedder, chunk index, preparer);
- ``mcp``: remote MCP servers (``threadline.tools.remote.mcp``);
- ``citations``: the file search citation marker, shared by the tool, the run loop and the API;
- ``storage``: stores, blob store, job queue and event bus (``threadline.store``, ``threadline.events``).

The domain imports only these; the runtime wires the implementations in.
"""
