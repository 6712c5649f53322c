"""The chat page in a real headless Chromium, and the JSON it reads, against the WebSocket
front on 127.0.0.1.

Playwright's sync API drives Debian's Chromium (``/usr/bin/chromium``, or ``LLM_CHROMIUM``)
in a worker thread while the front runs in the test's trio loop. Without Playwright or
Chromium the browser tests skip, saying which is missing; with ``LLM_REQUIRE_BROWSER=1``
they fail instead (CI sets that up: ``pip install playwright`` and ``apt-get install
chromium``, never ``playwright install``). The page's screenshots, one per screen width,
are kept in the test's temporary folder.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
import trio.testing

import llm_invocation as llm
from llm_invocation.actors.websocket import WebSocketFront
from llm_invocation.actors.websocket import _page as page_json
from llm_invocation.actors.websocket._http import RequestHead, TokenCheck
from llm_invocation.config import WebSocketConfig
from llm_invocation.testing import Scenario, Scenarios

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

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
WIDTHS = [(390, 844), (1280, 800)]  # a phone and a laptop
HEADER_CONTROLS = ["#model-picker", "#model", "#new-chat", "#status"]
# Every state the status badge goes through, in order, as `window.statusLog` (the page may
# pass through one faster than a test can look at it).
STATUS_LOG = """
window.statusLog = [];
document.addEventListener("DOMContentLoaded", () => {
  const badge = document.getElementById("status");
  const detail = document.getElementById("status-detail");
  const record = () => window.statusLog.push({
    state: badge.dataset.state, reason: badge.dataset.reason,
    text: badge.textContent, detail: detail.textContent,
  });
  record();
  new MutationObserver(record).observe(
    badge, {attributes: true, childList: true, characterData: true, subtree: true});
});
"""


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


def launch(playwright: Playwright, executable: str) -> Browser:
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


def open_page(browser: Browser, errors: list[str], width: int = 1280, height: int = 800) -> Page:
    """A page in a context of its own (its own storage); its script errors go to ``errors``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.add_init_script(STATUS_LOG)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def wait_for_the_model(page: Page) -> None:
    """Wait until the page has filled its model box (from /config.json, on a first run)."""
    page.wait_for_function("() => document.getElementById('model').value !== ''")


def status_when(page: Page, reason: str) -> dict[str, str]:
    """The first status the page showed for ``reason`` (waits for it)."""
    page.wait_for_function(
        "reason => window.statusLog.some(entry => entry.reason === reason)", arg=reason
    )
    return page.evaluate(
        "reason => window.statusLog.find(entry => entry.reason === reason)", reason
    )


def layout(page: Page) -> dict[str, Any]:
    """The page's width against the viewport's, and where each header control is."""
    return page.evaluate(
        """selectors => ({
            innerWidth: window.innerWidth,
            innerHeight: window.innerHeight,
            scrollWidth: document.documentElement.scrollWidth,
            boxes: Object.fromEntries(selectors.map(selector => {
                const box = document.querySelector(selector).getBoundingClientRect();
                return [selector, {left: box.left, right: box.right, top: box.top,
                                   bottom: box.bottom, width: box.width, height: box.height}];
            })),
        })""",
        HEADER_CONTROLS,
    )


def drive(executable: str, url: str) -> dict[str, Any]:
    """Chat through the page: one full answer, then a slow one stopped part-way."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"errors": [], "requests": []}
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
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
            wait_for_the_model(page)
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


# -- a first run: the model to use, and a page that fits the screen ---------------------------


def first_run(
    executable: str, url: str, shots: Path, pick: str, errors: list[str]
) -> list[dict[str, Any]]:
    """Open the page afresh at each width: what it offers, where its controls are, and one
    answer (at phone width from the model ``pick``, picked in the list; at laptop width
    from the model it started with)."""
    from playwright.sync_api import sync_playwright

    seen: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        try:
            for width, height in WIDTHS:
                page = open_page(browser, errors, width, height)
                page.goto(url)
                page.wait_for_selector('#status[data-state="open"]')
                page.wait_for_selector('#model-picker[data-state="ready"]')
                wait_for_the_model(page)
                at: dict[str, Any] = {"width": width}
                at["model"] = page.input_value("#model")
                at["picked"] = page.input_value("#model-picker")
                at["options"] = page.eval_on_selector_all(
                    "#model-picker option", "items => items.map(item => item.value)"
                )
                at["suggestions"] = page.eval_on_selector_all(
                    "#model-list option", "items => items.map(item => item.value)"
                )
                at["hint"] = page.text_content("#hint")
                at["mock_hint_shown"] = page.is_visible("#hint-mock")
                at["layout_first"] = layout(page)
                shot = shots / f"page-{width}x{height}.png"
                page.screenshot(path=str(shot))
                at["screenshot"] = shot
                # Usable: each control takes a click (a trial click fails on a control that
                # is hidden, covered or off-screen).
                for control in ("#model-picker", "#model", "#new-chat"):
                    page.click(control, trial=True)
                at["status_visible"] = page.is_visible("#status")
                if width == WIDTHS[0][0]:
                    page.select_option("#model-picker", pick)
                at["sent_model"] = page.input_value("#model")
                page.fill("#prompt", "Hello there")
                page.press("#prompt", "Enter")
                page.wait_for_selector('article.assistant[data-state="done"]')
                at["layout_answered"] = layout(page)
                page.context.close()
                seen.append(at)
        finally:
            browser.close()
    return seen


def assert_fits(measured: dict[str, Any]) -> None:
    """Nothing wider than the viewport, and every header control inside it."""
    width, height = measured["innerWidth"], measured["innerHeight"]
    assert measured["scrollWidth"] <= width
    for control, box in measured["boxes"].items():
        assert box["width"] > 0 and box["height"] > 0, control
        assert box["left"] >= 0 and box["right"] <= width, (control, box, width)
        assert box["top"] >= 0 and box["bottom"] <= height, (control, box, height)


@pytest.mark.slow
@pytest.mark.wall_limit(120)
async def test_a_first_run_offers_the_default_and_the_listed_models_on_a_phone_and_a_laptop(
    chromium: str, tmp_path: Path
) -> None:
    config = llm.Config()  # nothing configured: the built-in mock answers
    errors: list[str] = []
    async with llm.open_client(config, scenarios=Scenarios(Scenario(text=ANSWER))) as client:
        # The oracles: what a request without a model gets, and what the client lists.
        reply = await client.chat([llm.user("hi")])
        default = f"{reply.provider}:{reply.model}"
        listed = [f"{info.provider}:{info.id}" for info in await client.list_models()]
        pick = next(name for name in listed if name != default)
        async with trio.open_nursery() as nursery:
            front = WebSocketFront(client, WebSocketConfig(port=0), grace=0.5)
            await nursery.start(front.serve)
            seen = await trio.to_thread.run_sync(
                first_run, chromium, front.url, tmp_path, pick, errors
            )
            nursery.cancel_scope.cancel()
        report = await client.usage(group_by=["provider", "model"])
    calls = {f"{row.group['provider']}:{row.group['model']}": row.calls for row in report.rows}

    assert errors == []
    for at in seen:
        assert at["model"] == default, at["width"]
        assert at["picked"] == default  # the picker shows the model in the box
        assert at["options"] == [default, *listed, ""]  # "" is "other (type it)"
        assert at["suggestions"] == [default, *listed]
        assert "provider:model" in at["hint"]
        assert at["mock_hint_shown"] is True
        assert at["status_visible"] is True
        assert_fits(at["layout_first"])
        assert_fits(at["layout_answered"])
        assert at["screenshot"].read_bytes().startswith(b"\x89PNG")
    assert [at["sent_model"] for at in seen] == [pick, default]
    # Both names were taken as they are: the default (twice: the oracle and the page) and
    # the one picked from the list.
    assert calls == {default: 2, pick: 1}


# -- the status line: why the page is not connected --------------------------------------------


def serve_page_files(route: Any) -> None:
    """Answer for the page's own files from the package; anything else goes to the network."""
    path = route.request.url.split("?", 1)[0].rsplit("/", 1)[-1] or "index.html"
    kinds = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
    if path not in kinds:
        route.continue_()
        return
    body = importlib.resources.files("llm_invocation").joinpath("web", path).read_bytes()
    route.fulfill(status=200, body=body, content_type=kinds[path])


def statuses(
    executable: str,
    url: str,
    down_url: str,
    stop: Callable[[], Awaitable[None]],
    errors: list[str],
) -> dict[str, dict[str, str]]:
    """The status the page shows for each reason it is not connected."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, dict[str, str]] = {}
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        try:
            # A token the front refuses, then no token at all.
            page = open_page(browser, errors)
            page.goto(url + "?token=not-the-token")
            seen["token"] = status_when(page, "token")
            page = open_page(browser, errors)
            page.goto(url)
            seen["no-token"] = status_when(page, "no-token")

            # Down at load: the page's files come from an address where nothing listens.
            page = open_page(browser, errors)
            page.route(down_url + "**", serve_page_files)
            page.goto(down_url)
            seen["down"] = status_when(page, "down")

            # A server error: the socket closes with 1011 after it opened.
            page = open_page(browser, errors)
            sockets: list[Any] = []

            def mock_socket(route: Any) -> None:  # the page's socket opens, to nobody
                sockets.append(route)

            page.route_web_socket(lambda _: True, mock_socket)
            page.goto(url + f"?token={TOKEN}")
            page.wait_for_selector('#status[data-state="open"]')
            sockets[0].close(code=1011, reason="internal error")
            seen["error"] = status_when(page, "error")

            # The front stops (terminate_child) while the page is connected.
            page = open_page(browser, errors)
            page.goto(url + f"?token={TOKEN}")
            page.wait_for_selector('#status[data-state="open"]')
            trio.from_thread.run(stop)
            seen["shutdown"] = status_when(page, "shutdown")
        finally:
            browser.close()
    return seen


@pytest.mark.slow
@pytest.mark.wall_limit(120)
async def test_the_status_tells_a_refused_token_a_server_down_an_error_and_a_shutdown(
    chromium: str,
) -> None:
    config = llm.Config(provider="mock", model="mock")
    # A port where nothing listens: bound, never listening, so connections are refused.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
        async with llm.open_client(config) as client:
            front = WebSocketFront(
                client, WebSocketConfig(port=0, tokens=[llm.Secret(TOKEN)]), grace=0.5
            )
            await client.runtime.start_child(front.child_spec())
            url = front.url

            async def stop() -> None:
                await client.runtime.terminate_child("websocket_front")

            errors: list[str] = []
            seen = await trio.to_thread.run_sync(statuses, chromium, url, down_url, stop, errors)
            stats = front.statistics()

    assert errors == []
    assert seen["token"]["text"] == "token refused"
    assert "refused this page's token" in seen["token"]["detail"]
    assert "?token=" in seen["token"]["detail"]
    assert seen["no-token"]["text"] == "token needed"
    assert "wants a token" in seen["no-token"]["detail"]
    assert seen["down"]["text"] == "server unreachable"
    assert "retrying" in seen["down"]["detail"]
    assert seen["error"]["text"] == "server error"
    assert "1011" in seen["error"]["detail"]
    assert seen["shutdown"]["text"] == "server shutting down"
    assert "1001" in seen["shutdown"]["detail"]
    assert all(status["state"] == "closed" for status in seen.values())
    # Neither token page tried again: one refused handshake each.
    assert stats.auth_failures == 2


# -- the JSON the page reads ------------------------------------------------------------------


@asynccontextmanager
async def front_of(service: Any, tokens: Sequence[str] = ()) -> AsyncGenerator[httpx.AsyncClient]:
    """An HTTP client for a front serving ``service`` on 127.0.0.1."""
    secrets = [llm.Secret(token) for token in tokens]
    async with trio.open_nursery() as nursery:
        front = WebSocketFront(service, WebSocketConfig(port=0, tokens=secrets), grace=0.5)
        await nursery.start(front.serve)
        async with httpx.AsyncClient(base_url=front.url) as http:
            yield http
        nursery.cancel_scope.cancel()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_config_json_names_the_model_a_request_without_one_gets() -> None:
    async with llm.open_client(llm.Config()) as client, front_of(client) as http:
        config = (await http.get("/config.json")).json()
        reply = await client.chat([llm.user("hi")])
    assert config["model"] == f"{reply.provider}:{reply.model}"
    assert config["mock_fallback"] is True
    assert config["token_required"] is False
    assert config["models"] == "/models.json"


async def test_config_json_gives_a_configured_model_as_configured() -> None:
    config = llm.Config(provider="mock", model="mock-large")
    async with llm.open_client(config) as client, front_of(client) as http:
        answer = (await http.get("/config.json")).json()
    assert answer["model"] == "mock-large"
    assert answer["mock_fallback"] is False


async def test_models_json_lists_the_client_models_by_names_a_request_takes() -> None:
    scenarios = Scenarios(Scenario(text="ok"))
    scenarios.add("mock-large", Scenario(text="large"))
    config = llm.Config(provider="mock", model="mock")
    async with (
        llm.open_client(config, scenarios=scenarios) as client,
        front_of(client, [TOKEN]) as http,
    ):
        response = await http.get("/models.json", headers=bearer(TOKEN))
        listed = await client.list_models()
        answer = response.json()
        served = {
            entry["model"]: (
                await client.invoke_sync(
                    llm.Request(model=entry["model"], messages=[llm.user("hi")])
                )
            ).model
            for entry in answer["models"]
        }
    assert response.status_code == 200
    assert answer["default"] == "mock"
    assert [entry["model"] for entry in answer["models"]] == [
        f"{info.provider}:{info.id}" for info in listed
    ]
    # Each name, sent as a request's model, reaches that very model.
    assert served == {f"{info.provider}:{info.id}": info.id for info in listed}


async def test_models_json_wants_a_token_the_front_accepts_and_config_json_does_not() -> None:
    config = llm.Config(provider="mock", model="mock")
    async with llm.open_client(config) as client, front_of(client, [TOKEN]) as http:
        missing = await http.get("/models.json")
        wrong = await http.get("/models.json", headers=bearer("not-the-token"))
        in_query = await http.get("/models.json", params={"token": TOKEN})
        public = await http.get("/config.json")
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "unauthorized"
    assert in_query.status_code == 200
    assert public.status_code == 200
    assert public.json()["model"] == "mock"
    assert public.json()["token_required"] is True


class Listing:
    """A client whose model listing the test scripts: each call takes the next step."""

    def __init__(self, client: llm.Client, *steps: Callable[[], Awaitable[list[llm.ModelInfo]]]):
        self._client = client
        self._steps = list(steps)
        self.calls = 0

    @property
    def config(self) -> llm.Config:
        return self._client.config

    def invoke(self, request: llm.Request, /, **options: Any) -> Any:
        return self._client.invoke(request, **options)

    async def list_models(self) -> list[llm.ModelInfo]:
        self.calls += 1
        return await self._steps.pop(0)()


async def one_model() -> list[llm.ModelInfo]:
    return [llm.ModelInfo(id="mock-large", provider="mock")]


async def provider_fails() -> list[llm.ModelInfo]:
    raise llm.ProviderError("the model list is down", provider="mock", status=503)


async def never() -> list[llm.ModelInfo]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def test_a_model_list_is_kept_for_a_while_not_asked_again() -> None:
    config = llm.Config(provider="mock", model="mock")
    async with llm.open_client(config) as client:
        listing = Listing(client, one_model, one_model)
        async with front_of(listing) as http:
            first = await http.get("/models.json")
            second = await http.get("/models.json")
    assert first.json() == second.json()
    assert [entry["model"] for entry in first.json()["models"]] == ["mock:mock-large"]
    assert listing.calls == 1


async def test_a_model_list_that_fails_gets_503_with_the_error_and_is_not_kept() -> None:
    config = llm.Config(provider="mock", model="mock")
    async with llm.open_client(config) as client:
        listing = Listing(client, provider_fails, one_model)
        async with front_of(listing) as http:
            failed = await http.get("/models.json")
            then = await http.get("/models.json")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "provider_error"
    assert "the model list is down" in failed.json()["error"]["message"]
    assert then.status_code == 200
    assert listing.calls == 2


async def test_a_model_list_that_takes_too_long_gets_503_naming_our_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(page_json, "MODELS_TIMEOUT", 0.05)
    config = llm.Config(provider="mock", model="mock")
    async with llm.open_client(config) as client:
        listing = Listing(client, never)
        async with front_of(listing) as http:
            slow = await http.get("/models.json")
    assert slow.status_code == 503
    assert slow.json()["error"]["code"] == "timeout"
    assert "0.05 s" in slow.json()["error"]["message"]


async def test_requests_that_come_while_the_models_are_listed_share_that_listing() -> None:
    gate = trio.Event()

    async def gated() -> list[llm.ModelInfo]:
        await gate.wait()
        return await one_model()

    config = llm.Config(provider="mock", model="mock")
    head = RequestHead("GET", "/models.json", "/models.json", {}, {}, b"")
    async with llm.open_client(config) as client:
        listing = Listing(client, gated, one_model)
        page = page_json.PageInfo(listing, TokenCheck([]))
        replies: list[page_json.PageReply] = []

        async def ask() -> None:
            replies.append(await page.answer(head, "peer"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert listing.calls == 1
    assert [reply.status for reply in replies] == [200, 200]
    assert replies[0].file.body == replies[1].file.body
