"""The model server's proxy comes from the environment, read as httpx reads it: by scheme, then
``ALL_PROXY``, never for a host ``NO_PROXY`` names."""

from __future__ import annotations

import pytest

from threadline.providers.openai_compat import proxy_for

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_no_proxy_set_means_none() -> None:
    assert proxy_for("https://api.example.com/v1/chat/completions") is None


def test_the_proxy_of_the_urls_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_for("https://api.example.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") is None
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:3128")
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") == "http://all.internal:3128"


def test_no_proxy_hosts_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal")
    assert proxy_for("http://127.0.0.1:8080/v1/chat/completions") is None
    assert proxy_for("http://vllm.internal:8000/v1/chat/completions") is None
    assert proxy_for("http://models.example.com/v1/chat/completions") == "http://proxy.internal:3128"
