"""The status page at /ui: served from the package with strict headers, and driven in Debian's chromium
against a real proxy with a rollout in progress (phase, weights, steps, charts, SLIs, gates, shadow,
timeline, live updates, token handling, nothing leaving the admin origin, no CSP violation)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.admin.status_page import CSP, MEDIA_TYPES
from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.proxy_runner import RunningProxy, start_proxy
from tests.helpers.tokens import VIEWER_TOKEN
from tests.helpers.traffic import drive_traffic, wait_for_phase

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 1000}
# The phase badge's background per phase, as app.css draws it.
PHASE_RGB = {"canary": (0x03, 0x69, 0xA1), "paused": (0xB4, 0x53, 0x09)}
HOSTILE_REASON = "drill <img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>"
# The series colours charts.js draws with, as canvas pixels.
CANDIDATE_RGB = (0x38, 0xBD, 0xF8)
BASELINE_RGB = (0x94, 0xA3, 0xB8)
OPERATOR_RGB = (0x60, 0xA5, 0xFA)
ADVANCE_RGB = (0x22, 0xC5, 0x5E)
# Collects every CSP violation the page reports, from before its first script runs.
CSP_WATCH = (
    "window.__csp = [];"
    "document.addEventListener('securitypolicyviolation',"
    " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)
# Canvas pixels of one colour (within a small tolerance for anti-aliasing) in the first canvas under a node.
COLOUR_PIXELS = """([selector, rgb]) => {
  const canvas = document.querySelector(selector + " canvas");
  if (!canvas) return -1;
  const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const near = (k) => Math.abs(d[i + k] - rgb[k]) <= 6;
    if (near(0) && near(1) && near(2)) n++;
  }
  return n;
}"""


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is absent (apt-get install chromium)"
    return None


def _require_browser() -> None:
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the status page tests: {missing}")
    pytest.skip(missing)


# -- a proxy whose rollout is in canary, with traffic flowing ------------------------------------------


@dataclass
class Live:
    proxy: RunningProxy
    stop_proxy: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def live(tmp_path: Path, models: Models) -> AsyncIterator[Live]:
    doc = config_doc(
        tmp_path,
        models.baseline.url,
        models.candidate.url,
        canary={
            "weight": 0,
            "steps": [5, 50, 100],
            "interval": "1s",
            "min_samples": 30,
            "shadow_samples": 60,
        },
        shadow={"sample": 1.0},
    )
    proxy, stop_proxy, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    stop_traffic = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop_traffic, rps=150))
    try:
        async with proxy.admin_client() as admin:
            r = await admin.post("/rollout/start", json={"reason": "ship v2"})
            assert r.status_code == 200, r.text
            await wait_for_phase(admin, {"canary"}, within=30)
        yield Live(proxy=proxy, stop_proxy=stop_proxy, task=task)
    finally:
        stop_traffic.set()
        await traffic
        stop_proxy.set()
        await asyncio.wait_for(task, 20)


# -- served from the package, with strict headers (no browser needed) ---------------------------------


async def test_shell_and_assets_come_from_the_package_with_strict_headers(proxy: RunningProxy) -> None:
    folder = resources.files("proxy.admin") / "ui"
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        pages = {"index.html": await c.get("/ui"), "index.html/": await c.get("/ui/")}
        for name in MEDIA_TYPES:
            if name != "index.html":
                pages[name] = await c.get(f"/ui/assets/{name}")
        for name, r in pages.items():
            file = name.rstrip("/")
            assert r.status_code == 200, (name, r.text)  # no token: the shell holds no data
            assert r.content == (folder / file).read_bytes()
            assert r.headers["content-type"] == MEDIA_TYPES[file]
            assert r.headers["content-security-policy"] == CSP
            assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"] == "no-cache"
            again = await c.get(r.url.path, headers={"if-none-match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        missing = await c.get("/ui/assets/../admin.py")
        unknown = await c.get("/ui/assets/index.htm")
        boot = await c.get("/ui/bootstrap.json")
    assert missing.status_code == unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert boot.json() == {"auth": "bearer", "poll_interval_ms": 2000}
    assert boot.headers["cache-control"] == "no-store"
    index = pages["index.html"].text
    assert (
        "<script>" not in index
        and " style=" not in index
        and "http" not in index.lower().replace("http-equiv", "")
    )


async def test_bootstrap_says_when_no_tokens_are_configured(proxy_factory: Any) -> None:
    proxy = await proxy_factory(admin={"listen": "127.0.0.1:0"})
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        assert (await c.get("/ui/bootstrap.json")).json()["auth"] == "unconfigured"
        assert (await c.get("/status")).status_code == 401  # why the page explains instead of prompting


async def test_openapi_lists_the_status_page(proxy: RunningProxy) -> None:
    async with httpx.AsyncClient(base_url=proxy.admin_url) as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    assert {"/ui", "/ui/bootstrap.json", "/ui/assets/{name}"} <= set(paths)
    assert "security" not in paths["/ui"]["get"]


# -- in the browser ------------------------------------------------------------------------------------


def _png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what chromium writes) to (w, h, rgb pixels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    pixels = [(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, stride, channels)]
    return width, height, pixels


def _dominant(pixels: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    counts: dict[tuple[int, int, int], int] = {}
    for p in pixels:
        counts[p] = counts.get(p, 0) + 1
    return max(counts, key=lambda k: counts[k])


@dataclass
class Watch:
    requests: list[str]
    console_errors: list[str]
    navigations: list[str]


async def _open(browser: Any, admin_url: str) -> tuple[Any, Watch]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    watch = Watch([], [], [])
    page.on("request", lambda r: watch.requests.append(r.url))
    page.on("console", lambda m: watch.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.console_errors.append(f"pageerror: {e}"))
    page.on("framenavigated", lambda f: watch.navigations.append(f.url) if f == page.main_frame else None)
    await page.add_init_script(CSP_WATCH)
    response = await page.goto(admin_url + "/ui")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CSP
    return page, watch


async def _sign_in(page: Any, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#connect")


async def test_page_renders_the_live_rollout_and_updates_in_place(live: Live, tmp_path: Path) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    admin_url = live.proxy.admin_url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watch = await _open(browser, admin_url)
            await expect(page.locator("#auth")).to_be_visible()
            await _sign_in(page, VIEWER_TOKEN)
            await expect(page.locator("#dash")).to_be_visible()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            await expect(page.locator("#phase")).to_have_text("canary")
            await expect(page.locator("#w-candidate")).to_have_text("5%")
            await expect(page.locator("#w-baseline")).to_have_text("95%")
            await expect(page.locator("#v-candidate")).to_have_text("v2")
            await expect(page.locator("#manifest")).to_have_text("allowed")
            # The token stays in this tab's session storage, never in a URL.
            assert await page.evaluate("sessionStorage.getItem('rollguard.admin-token')") == VIEWER_TOKEN
            assert await page.evaluate("localStorage.length") == 0

            async with live.proxy.admin_client(VIEWER_TOKEN) as viewer:
                await _wait(lambda: viewer.get("/status"), lambda s: len(s["controller"]["gates"]) >= 3)
                status = (await viewer.get("/status")).json()
            # SLIs of both versions, from the current step's window.
            await expect(page.locator("#slis-body tr")).to_have_count(9)
            requests_row = page.locator("#slis-body tr").first.locator("td")
            for cell in (requests_row.nth(0), requests_row.nth(1)):
                assert int((await cell.inner_text()).replace(",", "")) > 0
            # Every gate beside its threshold, with a coloured verdict.
            gates = page.locator("#gates-body tr")
            await expect(gates).to_have_count(len(status["controller"]["gates"]))
            for gate in status["controller"]["gates"]:
                row = page.locator(f'#gates-body tr[data-gate="{gate["gate"]}"]')
                verdict = row.locator(".verdict")
                assert await verdict.inner_text() in {"PASS", "HIGH", "LOW", "INCONCLUSIVE", "NODATA"}
                colour = await verdict.evaluate("e => getComputedStyle(e).color")
                assert colour not in ("rgb(229, 236, 247)", "rgb(0, 0, 0)")  # a verdict colour, not text
            await expect(page.locator('#gates-body tr[data-gate="latency_p95"] td').nth(2)).to_have_text(
                "≤ 120 ms"
            )
            # Shadow: divergence with its interval and the samples behind it.
            shadow = page.locator('.shadow-route[data-route="infer"]')
            await expect(shadow).to_contain_text("Decision divergence")
            assert "[" in await shadow.inner_text() and "pp" in await shadow.inner_text()
            # Timeline: newest first; the first entries were the operator's start.
            await expect(page.locator("#timeline li").last).to_contain_text("ship v2")
            await expect(page.locator("#timeline li").last).to_contain_text("ops")

            shot = await page.screenshot(path=str(tmp_path / "status-canary.png"))
            badge = await page.locator("#phase").screenshot()
            assert _dominant(_png_pixels(badge)[2]) == PHASE_RGB["canary"]

            # An operator pauses with a hostile reason: the page follows without a reload and shows
            # the reason as text.
            navigations = len(watch.navigations)
            await page.evaluate("window.__sameDocument = true")
            async with live.proxy.admin_client() as ops:
                r = await ops.post("/rollout/pause", json={"reason": HOSTILE_REASON})
                assert r.status_code == 200, r.text
            await expect(page.locator("#phase")).to_have_text("paused", timeout=8000)
            first = page.locator("#timeline li").first
            await expect(first.locator(".t-reason")).to_contain_text(HOSTILE_REASON)
            await expect(first.locator(".action")).to_have_text("pause")
            await expect(first.locator(".t-actor")).to_have_text("ops")
            assert await page.locator("#timeline img, #timeline b").count() == 0
            assert await page.evaluate("window.__sameDocument") is True
            assert len(watch.navigations) == navigations
            assert await page.title() == "rollguard status"
            badge = await page.locator("#phase").screenshot()
            assert _dominant(_png_pixels(badge)[2]) == PHASE_RGB["paused"]
            await _check_screenshot(page, shot)
            assert await page.evaluate("window.__csp") == []
        finally:
            await browser.close()

    origin = admin_url.rstrip("/")
    assert watch.requests and all(u.startswith(origin + "/") for u in watch.requests), watch.requests
    assert not any(VIEWER_TOKEN in u for u in watch.requests)
    assert any(u.endswith("/status") for u in watch.requests)
    assert any(u.endswith("/history") for u in watch.requests)
    assert watch.console_errors == []


async def _check_screenshot(page: Any, data: bytes) -> None:
    """The screenshot is the viewport, is not blank, and each key element is drawn inside it."""
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(data) > 30_000
    _, _, pixels = _png_pixels(data)
    assert len(set(pixels[::7])) > 50  # text, badges, bars and charts, not one flat colour
    # The rollout, its steps and the weight chart are in the first screenful; every card fits the width.
    first_screen = ("#phase", "#card-rollout", "#card-shadow", "#card-steps", "#chart-weight canvas")
    rest = ("#card-latency", "#card-errors", "#card-gates", "#card-slis", "#timeline")
    for selector in first_screen + rest:
        box = await page.locator(selector).bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], selector
        if selector in first_screen:
            assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], selector


async def _wait(fetch: Any, ok: Any, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if ok((await fetch()).json()):
                return
            await asyncio.sleep(0.1)


async def test_wrong_token_is_refused_and_an_unreachable_api_shows_stale(live: Live, tmp_path: Path) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watch = await _open(browser, live.proxy.admin_url)
            await _sign_in(page, "not-a-configured-token")
            await expect(page.locator("#auth-error")).to_be_visible()
            await expect(page.locator("#auth-error")).to_contain_text("401")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "auth")
            await expect(page.locator("#dash")).to_be_hidden()
            assert await page.evaluate("sessionStorage.length") == 0  # a refused token is not kept
            await page.screenshot(path=str(tmp_path / "status-refused.png"))

            await _sign_in(page, VIEWER_TOKEN)
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            await expect(page.locator("#phase")).to_have_text("canary")
            # A reload keeps the tab's token: no prompt.
            await page.reload()
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            await expect(page.locator("#auth")).to_be_hidden()

            live.stop_proxy.set()
            await asyncio.wait_for(live.task, 20)
            await expect(page.locator("#conn")).to_have_attribute("data-state", "stale", timeout=8000)
            await expect(page.locator("#conn")).to_contain_text("unreachable")
            await expect(page.locator("#conn")).to_contain_text("last update")
            await expect(page.locator("#phase")).to_have_text("canary")  # the last data stays, dimmed
            await page.screenshot(path=str(tmp_path / "status-stale.png"))
        finally:
            await browser.close()
    # The only console errors are the refused token and the refused connections once it stopped.
    unexpected = [e for e in watch.console_errors if "401" not in e and "ERR_CONNECTION_REFUSED" not in e]
    assert unexpected == []


async def test_without_tokens_the_page_explains_instead_of_prompting(proxy_factory: Any) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    proxy = await proxy_factory(admin={"listen": "127.0.0.1:0"})
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watch = await _open(browser, proxy.admin_url)
            await expect(page.locator("#unconfigured")).to_be_visible()
            await expect(page.locator("#unconfigured")).to_contain_text("admin.tokens")
            await expect(page.locator("#auth")).to_be_hidden()
        finally:
            await browser.close()
    assert not any(u.endswith("/status") for u in watch.requests)
    assert watch.console_errors == []


# -- charts, steps and the timeline of a rollout that holds --------------------------------------------

# A step that never gathers enough samples holds every window; a shadow phase that never has enough pairs
# holds on its mirrors. Short windows, so a few of them close while the test looks.
HOLDING_CANARY = {
    "weight": 0,
    "steps": [10, 50, 100],
    "interval": "400ms",
    "min_samples": 1_000_000,
    "shadow_samples": 0,
}
HOLDING_SHADOW = {**HOLDING_CANARY, "shadow_samples": 1_000_000}
AT_LEAST_THREE = re.compile(r"^([3-9]|[1-9][0-9]+)$")


@asynccontextmanager
async def _rolling(proxy: RunningProxy) -> AsyncIterator[None]:
    """Traffic on, the rollout started by ``ops``; traffic off at the end."""
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=150))
    try:
        async with proxy.admin_client() as ops:
            r = await ops.post("/rollout/start", json={"reason": "ship v2"})
            assert r.status_code == 200, r.text
        yield
    finally:
        stop.set()
        await traffic


async def _pixels(page: Any, selector: str, rgb: tuple[int, int, int]) -> int:
    return int(await page.evaluate(COLOUR_PIXELS, [selector, list(rgb)]))


async def _signed_in(browser: Any, proxy: RunningProxy) -> tuple[Any, Watch]:
    from playwright.async_api import expect

    page, watch = await _open(browser, proxy.admin_url)
    await _sign_in(page, VIEWER_TOKEN)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return page, watch


def _clean(watch: Watch, proxy: RunningProxy) -> None:
    origin = proxy.admin_url.rstrip("/")
    assert watch.requests and all(u.startswith(origin + "/") for u in watch.requests), watch.requests
    assert watch.console_errors == []


async def test_charts_steps_and_folded_holds_of_a_canary_then_its_promotion(
    proxy_factory: Any, tmp_path: Path
) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    proxy = await proxy_factory(canary=HOLDING_CANARY)
    async with _rolling(proxy), async_playwright() as p:
        async with proxy.admin_client(VIEWER_TOKEN) as viewer:
            await _wait(lambda: viewer.get("/history"), lambda h: len(h["windows"]) >= 3)
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watch = await _signed_in(browser, proxy)
            # The steps as a list, the current one (10%, the first: no shadow phase configured) highlighted.
            steps = page.locator("#steps li")
            await expect(steps).to_have_count(3)
            current = page.locator('#steps li[aria-current="step"]')
            await expect(current).to_have_count(1)
            await expect(current.locator(".stage-label")).to_have_text("10%")
            await expect(current).to_have_attribute("data-state", "current")
            await expect(steps.nth(1)).to_have_attribute("data-state", "pending")
            assert await current.evaluate("e => getComputedStyle(e).backgroundColor") != await steps.nth(
                1
            ).evaluate("e => getComputedStyle(e).backgroundColor")
            # Each window's HOLD is one timeline row, counted: "HOLD ×N", newest first, above the start.
            held = page.locator("#timeline li").first
            await expect(held.locator(".action")).to_have_text(re.compile(r"^HOLD ×([3-9]|[1-9][0-9]+)$"))
            await expect(held.locator(".t-state")).to_contain_text("windows since")
            await expect(page.locator("#timeline li")).to_have_count(2)
            await expect(page.locator("#timeline li").last.locator(".action")).to_have_text("start")
            # The charts: a point per window, both versions' lines drawn on the canvas.
            for chart in ("#chart-latency", "#chart-errors"):
                await expect(page.locator(chart)).to_have_attribute("data-points", AT_LEAST_THREE)
                await expect(page.locator(chart + " canvas")).to_have_count(1)
            await expect(page.locator("#chart-latency")).to_have_attribute("data-series", "7")
            assert await _pixels(page, "#chart-latency", CANDIDATE_RGB) > 30
            assert await _pixels(page, "#chart-latency", BASELINE_RGB) > 30
            assert await _pixels(page, "#chart-errors", CANDIDATE_RGB) > 30
            # The weight at 10% since the operator's start, marked in the operators' colour.
            assert await _pixels(page, "#chart-weight", OPERATOR_RGB) > 10
            assert await _pixels(page, "#chart-weight", ADVANCE_RGB) == 0  # no PROCEED/PROMOTE yet
            await page.screenshot(path=str(tmp_path / "status-holding.png"), full_page=True)

            async with proxy.admin_client() as ops:
                r = await ops.post("/rollout/promote", json={"reason": "looks right"})
                assert r.status_code == 200, r.text
                windows = (await ops.get("/history")).json()["rollout"]["windows"]
            await expect(page.locator("#phase")).to_have_text("promoted", timeout=8000)
            last = page.locator("#last-decision")
            await expect(last).to_contain_text("promoted by ops at 20")
            await expect(last).to_contain_text(f"after {windows} windows")
            assert windows >= 3 and "passed" not in await last.inner_text()
            await expect(current.locator(".stage-label")).to_have_text("100%")
            await expect(current.locator(".stage-state")).to_have_text("promoted")
            await expect(steps.nth(0)).to_have_attribute("data-state", "done")
            await expect(page.locator("#timeline li").first.locator(".action")).to_have_text("PROMOTE")
            await _wait_for(lambda: _pixels(page, "#chart-weight", ADVANCE_RGB), lambda n: n > 10)
            await page.screenshot(path=str(tmp_path / "status-promoted.png"), full_page=True)
            assert await page.evaluate("window.__csp") == []
        finally:
            await browser.close()
    _clean(watch, proxy)


async def test_in_the_shadow_phase_the_candidate_column_shows_its_mirrors(
    proxy_factory: Any, tmp_path: Path
) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    proxy = await proxy_factory(canary=HOLDING_SHADOW, shadow={"sample": 1.0})
    async with _rolling(proxy), async_playwright() as p:
        async with proxy.admin_client(VIEWER_TOKEN) as viewer:
            await _wait(lambda: viewer.get("/history"), lambda h: len(h["windows"]) >= 2)
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, watch = await _signed_in(browser, proxy)
            await expect(page.locator("#phase")).to_have_text("shadow")
            await expect(page.locator('#steps li[aria-current="step"] .stage-label')).to_have_text("shadow")
            await expect(page.locator("#slis-candidate")).to_have_text("Candidate (mirrored)")
            requests_row = page.locator("#slis-body tr").first.locator("td")
            for cell in (requests_row.nth(0), requests_row.nth(1)):  # baseline live, candidate mirrored
                assert int((await cell.inner_text()).replace(",", "")) > 0
            p95 = page.locator("#slis-body tr").nth(4).locator("td").nth(1)
            assert (await p95.inner_text()).endswith(" ms")
            await expect(page.locator("#chart-latency")).to_have_attribute(
                "data-points", re.compile(r"^[1-9]")
            )
            assert await _pixels(page, "#chart-latency", CANDIDATE_RGB) > 30  # the mirrors' latency

            # The longest action name the log holds stays inside its column.
            async with proxy.admin_client() as ops:
                r = await ops.put("/shadow", json={"sample": 0.5, "reason": "halve the mirrors"})
                assert r.status_code == 200, r.text
            row = page.locator("#timeline li").filter(has=page.get_by_text("set_shadow_sample", exact=True))
            await expect(row).to_have_count(1, timeout=8000)
            action = row.locator(".action")
            pill, actor = await action.bounding_box(), await row.locator(".t-actor").bounding_box()
            cell = await action.evaluate_handle("e => e.parentElement")
            column = await cell.as_element().bounding_box()  # type: ignore[union-attr]
            assert pill is not None and actor is not None and column is not None
            assert pill["x"] + pill["width"] <= column["x"] + column["width"] + 0.5
            assert pill["x"] + pill["width"] < actor["x"]
            assert await action.evaluate("e => e.scrollWidth <= e.clientWidth")
            await page.screenshot(path=str(tmp_path / "status-shadow.png"), full_page=True)
            assert await page.evaluate("window.__csp") == []
        finally:
            await browser.close()
    _clean(watch, proxy)


async def _wait_for(probe: Any, ok: Any) -> None:
    """Poll an in-page reading until ``ok`` holds (a chart redraws on the page's next poll)."""
    async with asyncio.timeout(20):
        while True:
            if ok(await probe()):
                return
            await asyncio.sleep(0.1)
