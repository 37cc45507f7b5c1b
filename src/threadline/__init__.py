"""Threadline: a self-hosted server that speaks the OpenAI Assistants API (v2) on any model."""

__version__ = "0.1.0"
