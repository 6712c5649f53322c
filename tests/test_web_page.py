"""The chat page in a real headless Chromium, against the WebSocket front on 127.0.0.1.

Playwright's sync API drives Debian's Chromium (``/usr/bin/chromium``, or ``LLM_CHROMIUM``)
in a worker thread while the front runs in the test's trio loop. Without Playwright or
Chromium the test skips, saying which is missing; with ``LLM_REQUIRE_BROWSER=1`` it fails
instead (CI sets that up: ``pip install playwright`` and ``apt-get install chromium``, never
``playwright install``).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest
import trio

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import Scenario, Scenarios

CHROMIUM = os.environ.get("LLM_CHROMIUM", "/usr/bin/chromium")
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
TOKEN = "page-token-5b1e-77"
ANSWER = "The quick brown fox jumps over the lazy dog, one token at a time."
LONG = "Once upon a time " * 400


@pytest.fixture
def chromium() -> str:
    """Chromium's path; skips (or fails under LLM_REQUIRE_BROWSER=1) when unavailable."""
    missing: list[str] = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test: " + "; ".join(missing)
        if os.environ.get("LLM_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (LLM_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    return CHROMIUM


def drive(executable: str, url: str) -> dict[str, Any]:
    """Chat through the page: one full answer, then a slow one stopped part-way."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"errors": [], "requests": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.on("pageerror", lambda error: out["errors"].append(str(error)))
            page.on(
                "console",
                lambda message: (
                    out["errors"].append(message.text) if message.type == "error" else None
                ),
            )
            page.on("request", lambda request: out["requests"].append(request.url))
            page.on("websocket", lambda ws: out["requests"].append(ws.url))

            page.goto(url)
            page.wait_for_selector('#status[data-state="open"]')
            out["address_bar"] = page.url
            out["model"] = page.input_value("#model")

            # A whole answer, streamed.
            page.fill("#prompt", "Hello there")
            page.press("#prompt", "Enter")
            done = page.wait_for_selector('article.assistant[data-state="done"]')
            assert done is not None
            out["answer"] = page.text_content('article.assistant[data-state="done"] .body')
            out["answer_meta"] = page.text_content('article.assistant[data-state="done"] .meta')
            out["usage_line"] = page.text_content("#usage")
            out["total_line"] = page.text_content("#total")

            # A slow answer, stopped once some of it has arrived.
            page.fill("#model", "slow")
            page.fill("#prompt", "Tell me a long story")
            page.click("#send")
            page.wait_for_function(
                """() => {
                    const body = document.querySelector(
                        'article.assistant[data-state="streaming"] .body');
                    return body !== null && body.textContent.length >= 20;
                }"""
            )
            out["stop_enabled_while_streaming"] = page.is_enabled("#stop")
            page.click("#stop")
            page.wait_for_selector('article.assistant[data-state="stopped"]')
            out["stopped_text"] = page.text_content('article.assistant[data-state="stopped"] .body')
            out["stopped_meta"] = page.text_content('article.assistant[data-state="stopped"] .meta')
            out["send_enabled_after"] = page.is_enabled("#send")
            out["stop_enabled_after"] = page.is_enabled("#stop")
            screenshot = os.environ.get("LLM_PAGE_SCREENSHOT")  # a .png path, to look at it
            if screenshot:
                page.screenshot(path=screenshot)
        finally:
            browser.close()
    return out


@pytest.mark.slow
@pytest.mark.wall_limit(120)
async def test_the_page_streams_an_answer_shows_usage_and_its_stop_button_stops(
    chromium: str,
) -> None:
    scenarios = Scenarios(Scenario(text=ANSWER, chunk_chars=3, interval=0.01))
    scenarios.add("slow", Scenario(text=LONG, chunk_chars=2, interval=0.02))
    config = llm.Config(provider="mock", model="mock")
    async with llm.open_client(config, scenarios=scenarios) as client:
        async with trio.open_nursery() as nursery:
            front = WebSocketFront(
                client, WebSocketConfig(port=0, tokens=[llm.Secret(TOKEN)]), grace=0.5
            )
            await nursery.start(front.serve)
            origin = front.url.rstrip("/")
            result = await trio.to_thread.run_sync(drive, chromium, front.url + f"?token={TOKEN}")
            stats = front.statistics()
            nursery.cancel_scope.cancel()
        report = await client.usage(group_by=["status"])
    statuses = {row.group["status"]: row.calls for row in report.rows}

    assert result["errors"] == []
    assert result["model"] == "mock"  # the server's default model, from /config.json
    assert TOKEN not in result["address_bar"]  # the page took the token out of the URL
    # The whole answer streamed in, then usage and cost appeared.
    assert result["answer"] == ANSWER
    assert " in · " in result["answer_meta"]
    assert "$" in result["answer_meta"]
    assert result["usage_line"].startswith("last: ")
    assert result["total_line"].startswith("session: $")
    # Stop ended the slow answer part-way, upstream too.
    assert result["stop_enabled_while_streaming"] is True
    stopped = result["stopped_text"]
    assert 20 <= len(stopped) < len(LONG)
    assert LONG.startswith(stopped)
    assert result["stopped_meta"].startswith("stopped")
    assert result["send_enabled_after"] is True
    assert result["stop_enabled_after"] is False
    assert statuses == {"ok": 1, "cancelled": 1}
    assert stats.invocations == 0
    assert stats.auth_failures == 0
    # Nothing but the front itself was contacted: no external resources.
    ws_origin = "ws" + origin.removeprefix("http")
    assert result["requests"]
    assert all(url.startswith((origin + "/", ws_origin + "/")) for url in result["requests"])
    # The token went as a subprotocol, not in the WebSocket URL (which servers log).
    sockets = [url for url in result["requests"] if url.startswith(ws_origin)]
    assert sockets and all(TOKEN not in url for url in sockets)
