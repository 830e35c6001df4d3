"""The web console in Debian's headless Chromium (Playwright), against the real API and product
(tests/e2e/web/stack.py): sign in with a token, start the debate, watch turns arrive, kill the active
agent and see the takeover, make a target fail and see its circuit open. Screenshots are saved under
build/test-artifacts/console/ (docs/images/console.png is one of them)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from stoa_devenv.browser import FLAGS, chromium_binary
from tests.e2e.web.conftest import Users
from tests.e2e.web.harness import ApiServer
from tests.e2e.web.stack import POLICY, TURN_LATENCY, Stack, await_for

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = Path(os.environ.get("STOA_TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "console"
TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)
TURNS = 25  # 8 rounds of team-a, team-b, moderator after the opening


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = await asyncio.to_thread(chromium_binary)
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(executable), args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(browser: Browser, api: ApiServer, token: str, namespace: str) -> Page:
    page = await browser.new_page(viewport={"width": 1560, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{api.url}/")
    await page.get_by_test_id("login-token").fill(token)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("whoami")).to_be_visible()
    await page.goto(f"{api.url}/#/{namespace}/conversations")
    return page


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot {path}")
    return path


async def active_pod(dsn: str, ns: str, agent: str) -> str | None:
    db = await asyncpg.connect(dsn)
    try:
        pod = await db.fetchval("SELECT pod FROM stoa.agent_activity WHERE agent = $1", f"{ns}/{agent}")
    finally:
        await db.close()
    return str(pod) if pod else None


async def test_console_shows_a_live_debate_its_takeover_and_an_open_circuit(
    browser: Browser, *, api_server: ApiServer, stack: Stack, team: str, users: Users
) -> None:
    stack.pace(0.7)  # a little slower than the API tests: a person watching, and stable screenshots
    page = await sign_in(browser, api_server, users.editor, team)
    name = f"console-{uuid.uuid4().hex[:5]}"
    await page.get_by_test_id("new-name").fill(name)
    await page.get_by_test_id("new-topic").fill("AI's impact on the job market")
    for agent in ("moderator", "team-a", "team-b"):
        await page.get_by_test_id(f"participant-{agent}").check()
    await page.get_by_test_id("new-max-turns").fill(str(TURNS))
    await page.get_by_test_id("new-max-rounds").fill("8")
    await page.get_by_test_id("start").click()
    await expect(page).to_have_url(f"{api_server.url}/#/{team}/conversations/{name}")

    # Turns appear one by one while the debate runs.
    turns = page.get_by_test_id("turn")
    await expect(turns.nth(1)).to_be_visible()
    await expect(page.get_by_test_id("phase")).to_have_text("Running")
    await expect(page.get_by_test_id("live")).to_have_text("live")
    await shot(page, "01-turns-live.png")

    # Kill -9 team-a's active replica: the standby takes over, the event appears beside the transcript.
    victim = await await_for(lambda: active_pod(stack.conn.postgres_dsn, team, "team-a"), 30, "team-a active")
    assert stack.kill(victim)
    takeover = page.locator('[data-testid="event"][data-type="takeover"]')
    await expect(takeover.first).to_contain_text(f"was {victim}")
    await expect(page.get_by_test_id("agent-team-a").get_by_test_id("takeovers")).not_to_have_text("0")
    await expect(page.get_by_test_id("agent-team-a").get_by_test_id("active-pod")).not_to_have_text(victim)
    await shot(page, "02-takeover.png")

    # Suspend from the console, make the primary target fail, resume: the calls fail over to the backup
    # and the primary's circuit opens.
    await page.get_by_test_id("btn-suspend").click()
    await expect(page.get_by_test_id("phase")).to_have_text("Suspended")
    suspended = await turns.count()
    stack.fail_primary()
    try:
        await asyncio.sleep(1.5)
        assert await turns.count() <= suspended + 1  # at most the turn that was in flight
        await page.get_by_test_id("btn-resume").click()
        opened = page.locator(
            '[data-testid="event"][data-type="circuit"]', has_text=f"Circuit open: {POLICY}/primary"
        )
        await expect(opened.first).to_be_visible()
        failover = page.locator('[data-testid="event"][data-type="failover"]', has_text="primary: status 503")
        await expect(failover.first).to_be_visible()
        target = page.get_by_test_id(f"target-{POLICY}-primary").get_by_test_id("circuit")
        await expect(target).to_have_attribute("data-circuit", "open")
        await shot(page, "03-circuit-open.png")
        await page.screenshot(path=str(ARTIFACTS / "console.png"))  # the viewport: docs/images/console.png
    finally:
        stack.heal_primary()
        stack.pace(TURN_LATENCY)

    await expect(page.get_by_test_id("phase")).to_have_text("Succeeded", timeout=120_000)
    await expect(page.get_by_test_id("live")).to_have_text("stream closed")
    await expect(turns).to_have_count(TURNS)
    seqs = [int(await t.get_attribute("data-seq") or 0) for t in await turns.all()]
    assert seqs == list(range(1, TURNS + 1))
    verdict = page.get_by_test_id("verdict")
    await expect(verdict.last).to_contain_text("END")
    await expect(page.get_by_test_id("btn-stop")).to_be_disabled()
    path = await shot(page, "04-finished.png")
    assert path.stat().st_size > 20_000


async def test_console_shows_what_a_viewer_may_not_do(
    browser: Browser, *, api_server: ApiServer, stack: Stack, team: str, users: Users
) -> None:
    page = await sign_in(browser, api_server, users.viewer, team)
    await page.get_by_test_id("new-name").fill("not-allowed")
    await page.get_by_test_id("new-topic").fill("viewers cannot start debates")
    await page.get_by_test_id("participant-team-a").check()
    await page.get_by_test_id("start").click()
    problem = page.get_by_test_id("problem")
    await expect(problem).to_contain_text("may not create conversations.stoa.dev")
    await expect(problem).to_contain_text("Kubernetes RBAC does not let you")
    assert stack.get("conversations", "not-allowed") is None
    # A token the API server rejects never gets past the sign-in.
    login = await browser.new_page()
    await login.goto(f"{api_server.url}/")
    await login.get_by_test_id("login-token").fill("forged.token.value")
    await login.get_by_test_id("login-submit").click()
    await expect(login.get_by_test_id("login-error")).to_contain_text("does not accept this token")
