"""Web search: the search backends (SearxNG's JSON API, the Brave Search API), the reading of result
pages, and the ``web_search`` tool in ``/v1/responses`` with the official SDK and the Agents SDK's
``WebSearchTool``, against the fake web (``threadline.testing.web.FakeWeb``) and the scripted model."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.api.test_projects import ADMIN, new_project, sdk
from tests.conftest import server_settings
from tests.support import ThreadlineServer, agents_sdk_on
from threadline.config import Settings
from threadline.errors import RemoteFetchError
from threadline.testing import Reply, ScriptedModel, ToolCall
from threadline.testing.web import FakeWeb, WebPage
from threadline.tools.remote.addresses import RemotePolicy
from threadline.tools.remote.guard import RemoteGuard
from threadline.tools.remote.pages import read_pages
from threadline.tools.remote.search import (
    BraveSearch,
    SearchHit,
    SearchQuery,
    SearxngSearch,
    build_search,
    domain_of,
)

GUARD = RemoteGuard(RemotePolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),), timeout_seconds=3))


def run(coro: Any) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def web() -> Iterator[FakeWeb]:
    with FakeWeb() as fake:
        yield fake


def test_searxng_results_come_from_its_json_api(web: FakeWeb) -> None:
    hits = run(SearxngSearch(GUARD, web.base_url + "/").search(SearchQuery("bell rock", limit=2)))
    assert hits == [
        SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", DEFAULT_SNIPPET),
        SearchHit(
            web.page_url("tides"), "Tide tables explained", "Spring and neap tides, and when they come."
        ),
    ]
    assert web.queries == ["bell rock"]


DEFAULT_SNIPPET = "The oldest surviving sea-washed lighthouse, first lit in 1811."


def test_brave_results_need_the_key_and_lose_their_markup(web: FakeWeb) -> None:
    hits = run(BraveSearch(GUARD, web.brave_key, web.base_url).search(SearchQuery("lighthouse", limit=1)))
    assert hits == [SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", DEFAULT_SNIPPET)]
    with pytest.raises(RemoteFetchError, match="401"):
        run(BraveSearch(GUARD, "wrong", web.base_url).search(SearchQuery("lighthouse")))


def test_allowed_domains_narrow_the_query_and_filter_the_results(web: FakeWeb) -> None:
    web.pages["elsewhere"] = WebPage("Elsewhere", "Not on the allowed domain.")
    query = SearchQuery("tides", allowed_domains=(domain_of("https://127.0.0.1/anything"),))
    hits = run(SearxngSearch(GUARD, web.base_url).search(query))
    assert len(hits) == 4 and web.queries == ["tides site:127.0.0.1"]
    assert (
        run(SearxngSearch(GUARD, web.base_url).search(SearchQuery("tides", allowed_domains=("example.com",))))
        == []
    )
    assert domain_of("Docs.Example.com") == "docs.example.com"


@pytest.mark.parametrize("failure", ["status", "hang"])
def test_a_failing_backend_is_a_remote_fetch_error(web: FakeWeb, failure: str) -> None:
    if failure == "status":
        web.search_status = 503
    else:
        web.search_hang = True
    guard = RemoteGuard(RemotePolicy(GUARD.policy.allow_networks, timeout_seconds=0.5))
    with pytest.raises(RemoteFetchError, match="503" if failure == "status" else "took longer"):
        run(SearxngSearch(guard, web.base_url).search(SearchQuery("tides")))


def test_only_a_configured_backend_is_built() -> None:
    assert build_search(Settings(), GUARD) is None
    assert isinstance(build_search(Settings(web_search_url="http://searx:8080"), GUARD), SearxngSearch)
    brave = Settings(web_search_backend="brave")
    assert build_search(brave, GUARD) is None
    assert isinstance(build_search(brave.replace(web_search_api_key="k"), GUARD), BraveSearch)
    with pytest.raises(ValueError, match="THREADLINE_WEB_SEARCH_BACKEND"):
        build_search(Settings(web_search_backend="google"), GUARD)


def test_pages_are_read_as_text_and_bounded(web: FakeWeb) -> None:
    web.pages["long"] = WebPage("Long", " ".join(["lighthouse"] * 5000))
    hits = [
        SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", "snippet"),
        SearchHit(web.page_url("long"), "Long", "snippet"),
        SearchHit(web.page_url("missing"), "Missing", "The engine's own snippet."),
        SearchHit(web.url("/gzip?n=10"), "Not text", "Binary."),
    ]
    pages = run(read_pages(GUARD, hits, page_characters=1000, total_characters=1200))
    assert [p.url for p in pages] == [h.url for h in hits]
    bell, long, missing, binary = pages
    assert "first lit in 1811" in bell.text and "tracking" not in bell.text and "<p>" not in bell.text
    assert bell.error == ""
    assert len(long.text) <= 300 + 2 and long.text.endswith(" …")  # 1200 shared by four pages
    assert missing.text == "The engine's own snippet." and "404" in missing.error
    assert binary.text == "Binary." and binary.error


def test_a_page_on_a_refused_address_keeps_its_snippet(web: FakeWeb) -> None:
    hit = SearchHit("http://169.254.169.254/latest/meta-data/", "Metadata", "snippet")
    (page,) = run(read_pages(GUARD, [hit], page_characters=100, total_characters=100))
    assert page.text == "snippet" and "cloud metadata" in page.error


# -- web_search in /v1/responses ------------------------------------------------------------------

QUESTION = "When was the Bell Rock Lighthouse first lit?"


@pytest.fixture(scope="module")
def fake_web() -> Iterator[FakeWeb]:
    with FakeWeb() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _calm_web(request: pytest.FixtureRequest) -> None:
    if "fake_web" in request.fixturenames:
        fake: FakeWeb = request.getfixturevalue("fake_web")
        fake.search_status, fake.search_hang = 200, False


@pytest.fixture(scope="module")
def web_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory, fake_web: FakeWeb
) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(
        web_search_url=fake_web.base_url, remote_allow="127.0.0.1/32", remote_timeout_seconds=3
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture
def web_client(web_server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=web_server.url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


def answer_citing(fake: FakeWeb, name: str = "bell-rock") -> str:
    page = fake.pages[name]
    return f"It was first lit in 1811 ([{page.title}]({fake.page_url(name)}))."


def search_then_answer(model: ScriptedModel, fake: FakeWeb, query: str = "bell rock lighthouse") -> str:
    text = answer_citing(fake)
    model.script(Reply(tool_calls=[ToolCall("web_search", {"query": query})]), Reply(text=text))
    return text


def tool_message(model: ScriptedModel) -> str:
    """What the model was given back for its web search (the last request's tool message)."""
    messages = model.requests[-1]["messages"]
    return str(next(m for m in reversed(messages) if m["role"] == "tool")["content"])


def check_answer(response: Any, fake: FakeWeb, text: str, *, sources: bool) -> None:
    assert response.status == "completed", response.error
    search, message = response.output
    assert (search.type, search.status, search.id[:3]) == ("web_search_call", "completed", "ws_")
    assert search.action.type == "search" and search.action.query == "bell rock lighthouse"
    if sources:
        assert [s.url for s in search.action.sources] == [fake.page_url(n) for n in fake.pages][:5]
    else:
        assert search.action.sources is None
    (part,) = message.content
    assert part.text == text
    (citation,) = part.annotations
    assert (citation.type, citation.url, citation.title) == (
        "url_citation",
        fake.page_url("bell-rock"),
        "Bell Rock Lighthouse",
    )
    assert (
        text[citation.start_index : citation.end_index]
        == f"[Bell Rock Lighthouse]({fake.page_url('bell-rock')})"
    )


def test_web_search_runs_as_a_built_in_call_and_the_answer_cites_the_page(
    web_client: openai.OpenAI, model: ScriptedModel, fake_web: FakeWeb
) -> None:
    text = search_then_answer(model, fake_web)
    response = web_client.responses.create(
        model="gpt-4o",
        input=QUESTION,
        tools=[{"type": "web_search"}],
        include=["web_search_call.action.sources"],
    )
    check_answer(response, fake_web, text, sources=True)
    assert fake_web.queries[-1] == "bell rock lighthouse"
    # The model got the pages' text (not their markup, scripts or styles), each under its URL.
    given = tool_message(model)
    assert "first lit in 1811" in given and f"URL: {fake_web.page_url('tides')}" in given
    assert "<p>" not in given and "tracking" not in given and "color:" not in given
    # As retrieved later (with what the request included).
    check_answer(web_client.responses.retrieve(response.id), fake_web, text, sources=True)


def test_web_search_streams_its_events(
    web_client: openai.OpenAI, model: ScriptedModel, fake_web: FakeWeb
) -> None:
    text = search_then_answer(model, fake_web)
    with web_client.responses.stream(
        model="gpt-4o",
        input=QUESTION,
        tools=[{"type": "web_search_preview"}],
        include=["web_search_call.action.sources"],
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    search = [k for k in kinds if k.startswith("response.web_search_call.")]
    assert search == [
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
    ]
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "web_search_call" and added.item.status == "in_progress"
    done = next(
        e for e in events if e.type == "response.output_item.done" and e.item.type == "web_search_call"
    )
    assert done.item.status == "completed" and done.item.action.sources
    annotations = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
    assert [a["type"] if isinstance(a, dict) else a.type for a in annotations] == ["url_citation"]
    check_answer(final, fake_web, text, sources=True)


def test_the_spec_fields_reach_the_search(
    web_client: openai.OpenAI, model: ScriptedModel, fake_web: FakeWeb
) -> None:
    search_then_answer(model, fake_web)
    tool = {
        "type": "web_search",
        "search_context_size": "low",
        "user_location": {"type": "approximate", "country": "GB", "city": "Arbroath"},
        "filters": {"allowed_domains": ["127.0.0.1"]},
    }
    response = web_client.responses.create(
        model="gpt-4o", input=QUESTION, tools=[tool], include=["web_search_call.action.sources"]
    )
    assert response.status == "completed", response.error
    # One allowed domain narrows the engine's query; "low" keeps three results.
    assert fake_web.queries[-1] == "bell rock lighthouse site:127.0.0.1"
    assert len(response.output[0].action.sources) == 3
    assert response.tools[0].type == "web_search" and response.tools[0].search_context_size == "low"


@pytest.mark.parametrize("failure", ["status", "hang"])
def test_a_failing_backend_fails_the_call_and_the_model_goes_on(
    web_client: openai.OpenAI, model: ScriptedModel, fake_web: FakeWeb, failure: str
) -> None:
    if failure == "status":
        fake_web.search_status = 503
    else:
        fake_web.search_hang = True  # the guard's timeout (3 s here) ends it
    model.script(
        Reply(tool_calls=[ToolCall("web_search", {"query": "bell rock"})]), Reply(text="I could not search.")
    )
    response = web_client.responses.create(model="gpt-4o", input=QUESTION, tools=[{"type": "web_search"}])
    assert response.status == "completed", response.error
    search, message = response.output
    assert search.status == "failed"
    reason = search.model_dump()["error"]
    assert ("503" if failure == "status" else "took longer") in reason
    assert "The web search failed" in tool_message(model)
    assert message.content[0].text == "I could not search."


def test_a_search_given_back_as_input_round_trips(
    web_client: openai.OpenAI, model: ScriptedModel, fake_web: FakeWeb
) -> None:
    search_then_answer(model, fake_web)
    first = web_client.responses.create(model="gpt-4o", input=QUESTION, tools=[{"type": "web_search"}])
    check_answer(first, fake_web, answer_citing(fake_web), sources=False)  # not asked for
    given = [item.model_dump(exclude_none=True) for item in first.output]
    model.script(Reply(text="In 1811."))
    second = web_client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": QUESTION}, *given, {"role": "user", "content": "When, again?"}],
        tools=[{"type": "web_search"}],
    )
    assert second.status == "completed", second.error
    items = web_client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in items][:2] == ["message", "web_search_call"]
    seen = model.requests[-1]["messages"]
    assert any("bell rock lighthouse" in json.dumps(m) for m in seen if m["role"] != "user")


def test_a_search_given_back_gives_the_model_its_pages_to_cite(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel, fake_web: FakeWeb
) -> None:
    server = make_server(
        admin_key=ADMIN,
        web_search_url=fake_web.base_url,
        remote_allow="127.0.0.1/32",
        remote_timeout_seconds=3,
    )
    ours, theirs = (sdk(server, new_project(server, name)[1]) for name in ("ours", "theirs"))
    with ours, theirs:
        text = search_then_answer(model, fake_web)
        first = ours.responses.create(model="gpt-4o", input=QUESTION, tools=[{"type": "web_search"}])
        search, answer = first.output
        # Given back as the Agents SDK does (the item, without the pages' text), and as a reference.
        item = search.model_dump(exclude_none=True)
        # Only what the server's call read is shown and cited, not what the client says it found.
        item["action"]["sources"] = [{"type": "url", "url": "https://elsewhere.example/"}]
        reference = {"type": "item_reference", "id": search.id}
        for given in (item, reference):
            model.script(Reply(text=text + " See https://elsewhere.example/."))
            again = ours.responses.create(
                model="gpt-4o",
                input=[
                    {"role": "user", "content": QUESTION},
                    given,  # type: ignore[list-item]
                    {"type": "item_reference", "id": answer.id},
                    {"role": "user", "content": "When, again?"},
                ],
                tools=[{"type": "web_search"}],
            )
            assert again.status == "completed", again.error
            told = tool_message(model)
            assert "first lit in 1811" in told and "elsewhere" not in told, given
            (citation,) = again.output[-1].content[0].annotations
            assert (citation.type, citation.url, citation.title) == (
                "url_citation",
                fake_web.page_url("bell-rock"),
                "Bell Rock Lighthouse",
            )
        # Another project's search is not found: its item is shown as it came, uncited; its id refused.
        model.script(Reply(text=text))
        other = theirs.responses.create(model="gpt-4o", input=[{"role": "user", "content": QUESTION}, item])  # type: ignore[list-item]
        assert "first lit in 1811" not in tool_message(model)
        assert other.output[-1].content[0].annotations == []
        with pytest.raises(openai.BadRequestError) as caught:
            theirs.responses.create(model="gpt-4o", input=[{"role": "user", "content": "hi"}, reference])  # type: ignore[list-item]
        assert caught.value.body["param"] == "input[1].id"  # type: ignore[index]


def test_web_search_without_a_backend_is_a_400_naming_the_setting(client: openai.OpenAI) -> None:
    for kind in ("web_search", "web_search_preview"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gpt-4o", input="hi", tools=[{"type": kind}])
        body = caught.value.body
        assert isinstance(body, dict)
        assert body["param"] == "tools[0].type" and "THREADLINE_WEB_SEARCH_URL" in body["message"]


# -- the Agents SDK's WebSearchTool -------------------------------------------------------------------


@pytest.fixture
def agents_loop(web_server: ThreadlineServer) -> Iterator[asyncio.AbstractEventLoop]:
    pytest.importorskip("agents")
    with agents_sdk_on(web_server.url) as loop:
        yield loop


@pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_web_search_tool(
    agents_loop: asyncio.AbstractEventLoop, model: ScriptedModel, fake_web: FakeWeb, streamed: bool
) -> None:
    import agents

    text = search_then_answer(model, fake_web)
    agent = agents.Agent(
        name="researcher",
        instructions="Search first.",
        model="gpt-4o",
        tools=[agents.WebSearchTool(search_context_size="low")],
    )
    if streamed:

        async def run() -> Any:
            result = agents.Runner.run_streamed(agent, QUESTION)
            kinds = [event.type async for event in result.stream_events()]
            assert "raw_response_event" in kinds
            return result

        result = agents_loop.run_until_complete(run())
    else:
        result = agents_loop.run_until_complete(agents.Runner.run(agent, QUESTION))
    assert result.final_output == text
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    assert len(calls) == 1 and calls[0].raw_item.type == "web_search_call"
    assert calls[0].raw_item.status == "completed"
    message = next(i for i in result.new_items if i.type == "message_output_item").raw_item
    assert message.content[0].annotations[0].url == fake_web.page_url("bell-rock")
    # The next turn sends the whole history back, the search included, and it is accepted.
    model.script(Reply(text="1811."))
    again = agents_loop.run_until_complete(
        agents.Runner.run(agent, [*result.to_input_list(), {"role": "user", "content": "Say the year."}])
    )
    assert again.final_output == "1811."
