"""Server-side tools (code_interpreter, file_search): the interface they implement and the registry
the runtime builds. The run loop offers registered tools to the model as functions and runs their
calls itself; the interface is ``threadline.domain.ports.tools``, ``registry.py`` holds what is configured."""
