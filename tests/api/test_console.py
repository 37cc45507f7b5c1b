"""The web console at /console, in real headless Chromium (Playwright) against a real Threadline.

The scripted model answers; everything else is real: the static files and their headers, the page's
calls to /v1 with the signed-in key, the streamed run read from fetch(), the timeline drawn from the
run's transitions and steps. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from tests.support import ThreadlineServer
from threadline.console import CONTENT_SECURITY_POLICY, FILES
from threadline.retrieval.engine import RetrievalEngine
from threadline.testing import Reply, ScriptedModel, ToolCall

CHROMIUM = Path("/usr/bin/chromium")  # Debian's: the tests never download a browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(f"no Chromium at {CHROMIUM} (`make system-packages` installs it)", allow_module_level=True)

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser(shared_server: ThreadlineServer) -> Iterator[Browser]:
    # The server starts first: Playwright's sync API keeps an event loop running on this thread, and
    # the server's set-up (migrations, a PostgreSQL database) runs one of its own.
    assert CHROMIUM.exists(), f"the browser tests must run under CI: no Chromium at {CHROMIUM}"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser logs every 4xx answer; the tests provoke those on purpose and check what the page shows.
        if message.type == "error" and not re.search(r"status of 4\d\d", message.text):
            problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    yield tab
    context.close()
    # Script errors and Content-Security-Policy violations both end up here.
    assert problems == []


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def console_url(server: ThreadlineServer) -> str:
    return f"http://127.0.0.1:{server.port}/console"


def sign_in(page: Page, server: ThreadlineServer, key: str = "any-key", *, accepted: bool = True) -> None:
    page.goto(console_url(server))
    page.fill("#key", key)
    page.click("#sign-in button[type=submit]")
    if accepted:  # signed in: the assistants pane is drawn
        expect(page.locator("#assistant-form")).to_be_visible()


# -- the static files --------------------------------------------------------------------------------


def test_files_carry_types_caching_and_a_strict_policy(server: ThreadlineServer) -> None:
    base = console_url(server)
    with httpx.Client() as http:
        index = http.get(base)
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
        assert index.headers["cache-control"] == "no-cache"
        assert index.headers["x-content-type-options"] == "nosniff"
        assert (
            "<script" in index.text and re.search(r"<script[^>]*>\s*[^<\s]", index.text) is None
        )  # no inline code

        again = http.get(base, headers={"If-None-Match": index.headers["etag"]})
        assert again.status_code == 304 and again.content == b""

        script = http.get(f"{base}/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert http.get(f"{base}/console.css").headers["content-type"] == "text/css; charset=utf-8"

        for missing in ("nothing.js", "__init__.py", "..%2F__init__.py"):
            answer = http.get(f"{base}/{missing}")
            assert answer.status_code == 404
            assert answer.json()["error"]["type"] == "invalid_request_error"


def test_no_script_writes_html() -> None:
    # Everything the page shows goes through text nodes; no innerHTML, outerHTML or document.write.
    for name, file in FILES.items():
        if name.endswith(".js"):
            source = file.body.decode()
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", source), (
                name
            )


# -- the panes, in a browser -------------------------------------------------------------------------

ORDER_FUNCTION: dict[str, Any] = {
    "name": "calculate_order_total",
    "description": "计算订单总价",
    "parameters": {"type": "object", "properties": {"items": {"type": "array"}}, "required": ["items"]},
}


def test_sign_in_create_an_assistant_chat_and_see_the_timeline(
    page: Page, server: ThreadlineServer, model: ScriptedModel, client: openai.OpenAI
) -> None:
    sign_in(page, server)
    expect(page.locator("#assistant-form h2")).to_have_text("New assistant")

    page.fill("#assistant-name", "订单助手")
    page.fill("#assistant-model", "gpt-4o")
    page.fill("#assistant-instructions", "你是一个乐于助人的购物助手，请用中文回答。")
    page.check("#tool-code_interpreter")
    page.fill("#assistant-functions", json.dumps([ORDER_FUNCTION], ensure_ascii=False))
    page.click("#assistant-form button[type=submit]")
    expect(page.locator("#assistant-form h2")).to_have_text("Edit 订单助手")
    expect(page.locator("#assistant-list")).to_contain_text("订单助手")
    assistant_id = page.url.rsplit("/", 1)[1]
    saved = client.beta.assistants.retrieve(assistant_id)
    assert saved.instructions == "你是一个乐于助人的购物助手，请用中文回答。"
    assert [t.type for t in saved.tools] == ["code_interpreter", "function"]

    # Edit the instructions, as the Playground did.
    page.fill("#assistant-name", "订单小助手")
    page.fill("#assistant-instructions", "你是购物助手。回答要简短。")
    page.click("#assistant-form button[type=submit]")
    expect(page.locator("#assistant-status")).to_have_text("Saved.")
    expect(page.locator("#assistant-list")).to_contain_text("订单小助手")
    assert client.beta.assistants.retrieve(assistant_id).instructions == "你是购物助手。回答要简短。"
    shot(page, "assistants")

    # Chat: the answer arrives in several deltas, and the pane shows each one as it comes.
    answer = "你好！我是订单助手。<b>不是粗体</b> 今天可以帮你计算订单。"
    model.script(Reply(text=answer, chunks=5, delay=0.15))
    page.click("text=Chat with it")
    expect(page.locator("#chat-assistant")).to_have_value(assistant_id)
    page.evaluate(
        """() => {
            window.seen = [];
            new MutationObserver(() => {
                const last = [...document.querySelectorAll('#chat-log .bubble.assistant .text')].pop();
                if (last) window.seen.push(last.textContent);
            }).observe(document.getElementById('chat-log'), {childList: true, subtree: true, characterData: true});
        }"""
    )
    page.fill("#chat-input", "你好，请介绍一下你自己。")
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-log .bubble.user")).to_have_text(re.compile("你好，请介绍一下你自己。"))
    assistant_text = page.locator("#chat-log .bubble.assistant .text")
    expect(assistant_text).to_have_text(answer)
    expect(page.locator("#chat-runs .badge")).to_have_text("completed")
    seen = [text for text in page.evaluate("window.seen") if text]
    partial = [text for text in seen if text != answer]
    assert len(set(partial)) >= 2 and all(answer.startswith(text) for text in partial), seen
    # Model text is text: the markup in it is shown, never parsed.
    assert page.locator("#chat-log b").count() == 0
    shot(page, "chat")

    thread_id = page.url.rsplit("/", 1)[1]
    run = client.beta.threads.runs.list(thread_id=thread_id).data[0]
    assert run.status == "completed"

    # A second turn asks for a tool: the pane shows the call, takes the output and streams the rest.
    arguments = {"items": [{"item_type": "书籍", "quantity": 2}]}
    model.script(
        Reply(tool_calls=[ToolCall("calculate_order_total", arguments, id="call_console1")]),
        Reply(text="两本书一共 84 元。"),
    )
    page.fill("#chat-input", "两本书多少钱？")
    page.click("#chat-send")
    form = page.locator(".tool-form")
    expect(form).to_contain_text("calculate_order_total")
    expect(form.locator("pre.arguments")).to_contain_text("书籍")
    form.locator("textarea").fill('{"total": 84}')
    form.locator("button").click()
    expect(assistant_text.last).to_have_text("两本书一共 84 元。")
    expect(page.locator("#chat-runs .badge")).to_have_text(["completed", "completed"])  # one line per run

    # The run's timeline: its statuses in order, its steps, the call's arguments and output, tokens.
    page.locator("#chat-runs a").last.click()
    timeline = page.locator("#run-timeline")
    expect(timeline.locator("h1 .badge")).to_have_text("completed")
    segments = page.locator("#run-axis .segment")
    expect(segments).to_have_text(
        ["queued", "in_progress", "requires_action", "queued", "in_progress", "completed"]
    )
    expect(page.locator("#run-transitions tbody tr")).to_have_count(6)
    steps = page.locator("#run-steps > li")
    expect(steps).to_have_count(2)
    expect(steps.nth(0)).to_have_attribute("data-step-type", "tool_calls")
    expect(steps.nth(0).locator("h4")).to_contain_text("function calculate_order_total")
    expect(steps.nth(0).locator("pre.arguments")).to_contain_text('"item_type": "书籍"')
    expect(steps.nth(0).locator("pre.output")).to_contain_text('"total": 84')
    expect(steps.nth(1)).to_have_attribute("data-step-type", "message_creation")
    expect(steps.nth(1)).to_contain_text("两本书一共 84 元。")
    usage = client.beta.threads.runs.list(thread_id=thread_id).data[0].usage
    assert usage is not None
    expect(page.locator("#run-usage")).to_have_text(re.compile(rf"= {usage.total_tokens} tokens"))
    # Chinese is drawn with real glyphs: missing glyphs would all be the same box.
    glyphs = page.evaluate(
        """() => {
            const canvas = document.createElement('canvas');
            canvas.width = canvas.height = 40;
            const ink = canvas.getContext('2d');
            ink.font = '30px ' + getComputedStyle(document.documentElement).fontFamily;
            return ['两', '本', '书'].map((ch) => {
                ink.clearRect(0, 0, 40, 40);
                ink.fillText(ch, 2, 32);
                return Array.from(ink.getImageData(0, 0, 40, 40).data).join(',');
            });
        }"""
    )
    assert len(set(glyphs)) == 3 and all(any(v != "0" for v in g.split(",")) for g in glyphs)
    shot(page, "timeline")

    # The thread pane lists both turns' messages and both runs.
    page.click(f"#run-timeline a[href='#/threads/{thread_id}']")
    expect(page.locator("#thread-messages > li")).to_have_count(4)
    expect(page.locator("#thread-runs tbody tr")).to_have_count(2)


def test_threads_filter_by_metadata_on_the_server_and_by_text_here(
    page: Page, server: ThreadlineServer, client: openai.OpenAI
) -> None:
    beijing = client.beta.threads.create(
        metadata={"team": "北京"}, messages=[{"role": "user", "content": "北京的订单怎么退货？"}]
    )
    shanghai = client.beta.threads.create(
        metadata={"team": "上海"}, messages=[{"role": "user", "content": "上海仓库的发票"}]
    )
    sign_in(page, server)
    page.click("nav >> text=Threads")
    rows = page.locator("#thread-list tbody tr:not([hidden])")
    expect(page.locator(f"tr[data-thread-id='{beijing.id}']")).to_contain_text("北京的订单怎么退货？")
    expect(page.locator(f"tr[data-thread-id='{shanghai.id}']")).to_contain_text("team=上海")

    page.fill("#filter-metadata", "team=北京")
    page.click("#thread-filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-thread-id", beijing.id)

    page.fill("#filter-metadata", "")
    page.click("#thread-filters button[type=submit]")
    expect(page.locator(f"tr[data-thread-id='{shanghai.id}']")).to_be_visible()
    page.fill("#filter-text", "发票")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-thread-id", shanghai.id)
    shot(page, "threads")

    rows.locator("a").click()
    expect(page.locator("#thread-messages")).to_have_text(re.compile("上海仓库的发票"))


def test_a_vector_store_shows_the_progress_of_a_file_being_indexed(
    page: Page, server: ThreadlineServer, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's pane shows chunks embedded of all for a file being indexed (the indexing held,
    with a count past zero reported and the final count kept back, until the page has shown it),
    then redraws by itself once the file is done."""
    shown = threading.Event()
    original = RetrievalEngine.ingest

    async def held(self: RetrievalEngine, *args: Any) -> Any:
        *head, told = args  # the preparer's arguments, the progress report last
        assert callable(told)
        final: list[tuple[int, int]] = []

        def tell(done: int, total: int) -> None:
            if done == total and not shown.is_set():
                final.append((done, total))  # told once the page has shown a count before it
            else:
                told(done, total)

        result = await cast(Any, original)(self, *head, tell)
        await asyncio.to_thread(shown.wait, 120)
        for done, total in final:
            told(done, total)
        return result

    monkeypatch.setattr(RetrievalEngine, "ingest", held)
    text = " ".join(f"第{i}条：灯塔看守人记录了{i % 24}点的雾。" for i in range(80))
    file_id = client.files.create(file=("灯塔日志.txt", text.encode()), purpose="assistants").id
    store = client.vector_stores.create(
        name="日志",
        file_ids=[file_id],
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50},
        },
    )
    try:
        sign_in(page, server)
        page.click("nav >> text=Vector stores")
        page.locator(f"tr[data-store-id='{store.id}'] a").click()
        row = page.locator(f"#store-files tr[data-file-id='{file_id}']")
        expect(row).to_contain_text("灯塔日志.txt")
        expect(row.locator(".file-progress")).to_have_text(
            re.compile(r"^ ?[1-9]\d* of [1-9]\d* chunks embedded$"), timeout=120_000
        )
        shot(page, "vector-store-progress")
    finally:
        shown.set()
    expect(row.locator(".badge")).to_have_text("completed", timeout=120_000)
    expect(row.locator(".file-progress")).to_have_text(re.compile(r"^\d+ bytes$"))


def test_a_refused_key_sends_the_user_back_to_sign_in(page: Page, make_server: Any) -> None:
    # Started on another thread, for the reason given in the browser fixture.
    with ThreadPoolExecutor(1) as pool:
        locked = pool.submit(make_server, api_key="right-key").result()
    sign_in(page, locked, key="wrong-key", accepted=False)
    expect(page.locator("#sign-in-error")).to_have_text(re.compile(r"401.*Incorrect API key provided"))
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#key", "right-key")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#assistant-form h2")).to_have_text("New assistant")

    # A key that stops working mid-session (rotated on the server, say) brings the sign-in back.
    page.evaluate("sessionStorage.setItem('threadline.console.key', 'rotated-away')")
    page.click("nav >> text=Threads")
    expect(page.locator("#sign-in-error")).to_have_text(re.compile("refused your key"))
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, "sign-in-refused")


def test_mistakes_and_failures_are_shown_not_swallowed(
    page: Page, server: ThreadlineServer, model: ScriptedModel, client: openai.OpenAI
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", name="失败测试")
    sign_in(page, server)
    page.goto(f"{console_url(server)}#/assistants/{assistant.id}")
    expect(page.locator("#assistant-form h2")).to_have_text("Edit 失败测试")
    page.fill("#assistant-functions", "{not json")
    page.click("#assistant-form button[type=submit]")
    expect(page.locator("#assistant-status .error")).to_contain_text("Functions: not a JSON list")

    # The server's own refusal comes back in its words.
    page.fill("#assistant-functions", "")
    page.fill("#assistant-model", "")
    page.evaluate("document.getElementById('assistant-model').required = false")
    page.click("#assistant-form button[type=submit]")
    expect(page.locator("#assistant-status .error")).to_have_text(re.compile(r"^Invalid value for 'model'"))

    # A run the model fails ends 'failed' in the chat pane, with the run's error.
    model.script(Reply(status=400, error_message="上下文太长了"))
    page.goto(f"{console_url(server)}#/chat/{assistant.id}")
    page.fill("#chat-input", "你好")
    page.click("#chat-send")
    expect(page.locator("#chat-runs .badge")).to_have_text("failed")
    expect(page.locator("#chat-runs .error")).to_contain_text("上下文太长了")
    shot(page, "chat-failed")
