"""The real slack-bolt app of the bot against a fake Slack (Web API, Socket Mode, response_url) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.app import SlackAdapter
from bot.commands import Commands
from bot.errors import PostError, StartupError
from bot.settings import load_settings
from bot.simulator import Scripted
from tests.fakes.slack import FakeSlack, form, sign
from tests.secrets import ALL_TEST_SECRETS

BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
APP = ALL_TEST_SECRETS["SLACK_APP_TOKEN"]
SECRET = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]


class HttpBot:
    """The adapter in HTTP mode, mounted on its own aiohttp server like `quota-bot run` does."""

    def __init__(self, fake: FakeSlack, adapter: SlackAdapter, url: str) -> None:
        self.fake, self.adapter, self.url = fake, adapter, url
        self.http = aiohttp.ClientSession()

    async def command(self, text: str = "", *, command: str = "/quota", user_id: str | None = None,
                      secret: str = SECRET, timestamp: int | None = None) -> tuple[aiohttp.ClientResponse, dict | str, str, float]:
        payload, rid = self.fake.command_payload(command, text, **({"user_id": user_id} if user_id else {}))
        body = form(payload)
        started = time.monotonic()
        async with self.http.post(self.url, data=body, headers=sign(secret, body, timestamp)) as resp:
            answer = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp, answer, rid, time.monotonic() - started


@pytest.fixture
async def slack_http(slack_fake, make_service):
    bots: list[tuple[HttpBot, web.AppRunner]] = []

    async def start(service=None, schedules=None, admins: str = "", alerts=None, history=None) -> HttpBot:
        settings = load_settings(None, slack_bot_token=BOT, slack_signing_secret=SECRET,
                                 slack_api_url=slack_fake.api_url, slack_admin_user_ids=admins)
        service = service or make_service()
        commands = Commands(service, schedules=schedules, alerts=alerts, history=history,
                            history_days=settings.quota_history_days)
        adapter = SlackAdapter(settings, service, schedules, commands=commands)
        app = web.Application()
        adapter.mount(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await adapter.start()
        bot = HttpBot(slack_fake, adapter, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/slack/events")
        bots.append((bot, runner))
        return bot

    yield start
    for bot, runner in bots:
        await bot.http.close()
        await bot.adapter.stop()
        await runner.cleanup()


@pytest.fixture
async def slack_socket(slack_fake, make_service):
    adapters: list[SlackAdapter] = []

    async def start(service=None) -> SlackAdapter:
        settings = load_settings(None, slack_bot_token=BOT, slack_app_token=APP, slack_api_url=slack_fake.api_url)
        adapter = SlackAdapter(settings, service or make_service(), ping_interval=1.0)
        adapters.append(adapter)
        await adapter.start()
        await asyncio.wait_for(slack_fake.connected.wait(), 10)
        return adapter

    yield start
    for adapter in adapters:
        await adapter.stop()


def _texts(blocks: list[dict]) -> str:
    return str(blocks)


async def test_signed_http_quota_acks_fast_then_answers_with_blocks(slack_http, upstream):
    upstream.complete_after = 1.5  # a slow upstream must not delay the ack
    bot = await slack_http()
    resp, answer, rid, took = await bot.command("")
    assert resp.status == 200 and took < 3
    assert not bot.fake.responses.get(rid)  # the answer comes later, through response_url
    call = await bot.fake.wait_response(rid)
    body = call.body
    assert body["response_type"] == "ephemeral" and body["text"].startswith("Midjourney fast time: 12.06 h of 15 h left")
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Midjourney fast time: 12.06 h of 15 h left"}}
    text = _texts(body["blocks"])
    assert "80.40%" in text and "*Job mode*\\nFast" in text and "<!date^" in text and "Visibility Mode" in text


async def test_public_answers_in_channel(slack_http):
    bot = await slack_http()
    resp, _, rid, _ = await bot.command("public")
    assert resp.status == 200
    assert (await bot.fake.wait_response(rid)).body["response_type"] == "in_channel"


@pytest.mark.parametrize("text, expected", [("help", "*Usage:*"), ("tomorrow please", "I did not understand `tomorrow please`")])
async def test_help_and_unknown_text_answer_usage_without_asking(slack_http, upstream, text, expected):
    bot = await slack_http()
    resp, answer, rid, _ = await bot.command(text)
    assert resp.status == 200 and answer == ""  # acked before bolt runs: the usage follows at the response_url
    body = (await bot.fake.wait_response(rid)).body
    assert body["response_type"] == "ephemeral"
    assert body["text"].startswith(expected) and "`/quota public`" in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]
    await asyncio.sleep(0.2)
    assert len(upstream.asks) == 0 and len(bot.fake.responses[rid]) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_start_with_the_tokens_in_the_environment_logs_no_warning(slack_fake, make_service, monkeypatch, caplog, mode):
    """On a Procfile host the tokens are real environment variables, which bolt also reads by itself."""
    tokens = {"slack_bot_token": BOT, **({"slack_signing_secret": SECRET} if mode == "http" else {"slack_app_token": APP})}
    for name, value in tokens.items():
        monkeypatch.setenv(name.upper(), value)
    adapter = SlackAdapter(load_settings(None, slack_api_url=slack_fake.api_url, **tokens), make_service())
    await adapter.start()
    if mode == "socket":
        await asyncio.wait_for(slack_fake.connected.wait(), 10)
    await adapter.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "Slack connected as U0BOT0001" in caplog.text


async def test_a_command_the_app_lacks_is_left_to_bolt_and_refused(slack_http, upstream):
    """Only the app's own commands are acked before bolt runs; anything else gets bolt's own answer
    (here 404: no listener), so Slack tells the user instead of an empty ack hiding it."""
    bot = await slack_http()
    resp, _, rid, _ = await bot.command("", command="/weather")
    assert resp.status == 404
    await asyncio.sleep(0.2)
    assert len(upstream.asks) == 0 and not bot.fake.responses.get(rid)


async def test_quota_is_acked_before_bolt_runs_it(slack_http, upstream, monkeypatch):
    """HTTP mode acks /quota before handing it to bolt (which then verifies it again and runs the
    listener), so no work of bolt's, on this command or on others of a burst, stands before an ack."""
    bot = await slack_http()
    gate = asyncio.Event()
    dispatch = bot.adapter.app.async_dispatch

    async def held_dispatch(request):  # bolt, held until every ack is in
        await gate.wait()
        return await dispatch(request)

    monkeypatch.setattr(bot.adapter.app, "async_dispatch", held_dispatch)
    results = await asyncio.wait_for(asyncio.gather(*(bot.command("") for _ in range(20))), 3)
    assert all(resp.status == 200 and answer == "" for resp, answer, _, _ in results)
    assert len(upstream.asks) == 0 and not bot.fake.responses  # bolt has not run any of them yet
    gate.set()
    answers = await asyncio.gather(*(bot.fake.wait_response(rid) for _, _, rid, _ in results))
    assert all(a.body["text"].startswith("Midjourney fast time: 12.06 h") for a in answers)
    assert len(upstream.asks) == 1


@pytest.mark.parametrize("kind", ["bad signature", "stale timestamp"])
async def test_bad_or_stale_signature_is_401_and_never_reaches_the_core(slack_http, upstream, kind, caplog):
    bot = await slack_http()
    if kind == "bad signature":
        resp, _, rid, _ = await bot.command("", secret="not-the-signing-secret")
    else:
        resp, _, rid, _ = await bot.command("", timestamp=int(time.time()) - 400)
    assert resp.status == 401
    await asyncio.sleep(0.3)
    assert len(upstream.asks) == 0 and not bot.fake.responses.get(rid)
    # the operator learns why every command fails (once a minute at most, however many come)
    await bot.command("", secret="not-the-signing-secret")
    warnings = [r.getMessage() for r in caplog.records if "refused with 401" in r.getMessage()]
    assert len(warnings) == 1 and "check SLACK_SIGNING_SECRET" in warnings[0]


async def test_slack_ssl_check_is_answered_without_asking(slack_http, upstream):
    """Slack sends `ssl_check=1` when a Request URL is saved; it must get 200 (and nothing else happens)."""
    bot = await slack_http()
    body = form({"ssl_check": "1", "token": "legacy-verification-token"})
    async with bot.http.post(bot.url, data=body, headers=sign(SECRET, body)) as resp:
        assert resp.status == 200
    await asyncio.sleep(0.2)
    assert len(upstream.asks) == 0 and not bot.fake.responses


@pytest.mark.parametrize("script, sentence", [
    ({"ask": Scripted(401)}, "The upstream rejected the API token"),
    ({"content": "NO_FAST_HOURS"}, "This Midjourney account has no fast time left."),
    ({"ask": Scripted(503)}, "The Midjourney API is unavailable right now"),
    ({"never": True}, "Timed out: the Midjourney API gave no answer within 1 s."),
])
async def test_each_core_error_is_an_ephemeral_sentence(slack_http, upstream, make_service, script, sentence):
    if "ask" in script:
        upstream.ask_script.extend([script["ask"]] * 10)
    if "content" in script:
        upstream.content = script["content"]
    if "never" in script:
        upstream.complete_after = float("inf")
    bot = await slack_http(make_service(poll_timeout=1.0))
    _, _, rid, _ = await bot.command("public")
    body = (await bot.fake.wait_response(rid)).body
    assert body["response_type"] == "ephemeral" and body["text"].startswith(sentence)
    assert "Traceback" not in str(body)


async def test_unexpected_exception_still_answers(slack_http, caplog):
    from bot.service import QuotaService

    class BrokenProvider:
        simulated = False

        async def fetch(self):
            raise RuntimeError("provider bug")

        async def close(self):
            pass

    bot = await slack_http(QuotaService(BrokenProvider()))
    _, _, rid, _ = await bot.command("")
    body = (await bot.fake.wait_response(rid)).body
    assert body["text"] == "Something went wrong; it has been logged." and "provider bug" in caplog.text


async def test_fifty_concurrent_commands_one_ask_fifty_answers(slack_http, upstream):
    upstream.complete_after = 0.5
    bot = await slack_http()
    results = await asyncio.gather(*(bot.command("") for _ in range(50)))
    assert all(r[0].status == 200 for r in results)
    bodies = await asyncio.gather(*(bot.fake.wait_response(r[2]) for r in results))
    assert all(b.body["text"].startswith("Midjourney fast time: 12.06 h") for b in bodies)
    assert len(upstream.asks) == 1
    # the answers share the adapter's kept-alive pool (32) instead of a new connection each
    assert len({b.peer for b in bodies}) <= 32
    # bolt's authorization reuses the start-up auth.test instead of 50 concurrent ones
    assert [c.path for c in bot.fake.calls].count("auth.test") == 1


async def test_socket_mode_envelope_acked_fast_and_answered(slack_socket, slack_fake, upstream):
    upstream.complete_after = 1.5
    await slack_socket()
    assert slack_fake.connections == 1
    envelope_id, rid = await slack_fake.envelope(text="public")
    acked = await slack_fake.wait_ack(envelope_id, timeout=3)
    assert acked - slack_fake.sent_at[envelope_id] < 3
    body = (await slack_fake.wait_response(rid)).body
    assert body["response_type"] == "in_channel" and "12.06 h of 15 h left" in body["text"]


@pytest.mark.parametrize("how", ["drop", "disconnect message"])
async def test_socket_reconnects_after_a_drop_and_still_answers(slack_socket, slack_fake, how):
    await slack_socket()
    if how == "drop":
        await slack_fake.drop()
    else:
        await slack_fake.send_disconnect()
    # the client opens a new connection; envelopes then go to that one (the newest)
    await slack_fake.wait(lambda: True if slack_fake.accepted >= 2 else None, timeout=30)
    assert slack_fake.connections >= 2  # it asked apps.connections.open again
    envelope_id, rid = await slack_fake.envelope()
    await slack_fake.wait_ack(envelope_id, timeout=3)
    assert "12.06 h of 15 h left" in (await slack_fake.wait_response(rid)).body["text"]


async def test_scheduled_post_goes_out_with_blocks(slack_http, service):
    bot = await slack_http(service)
    await bot.adapter.post("C0POST001", await service.get_report())
    post = bot.fake.posts[-1]
    assert post.body["channel"] == "C0POST001" and "12.06 h of 15 h left" in post.body["text"]
    assert "header" in str(post.body["blocks"])


async def test_scheduled_post_429_is_retried_after_retry_after(slack_http, service):
    bot = await slack_http(service)
    bot.fake.post_script.append((429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}))
    started = time.monotonic()
    await bot.adapter.post("C0POST001", await service.get_report())
    assert len(bot.fake.posts) == 2 and time.monotonic() - started >= 0.9


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
async def test_scheduled_post_to_a_lost_channel_is_gone(slack_http, service, error):
    bot = await slack_http(service)
    bot.fake.post_script.append((200, {"ok": False, "error": error}, {}))
    with pytest.raises(PostError) as caught:
        await bot.adapter.post("C0POST001", await service.get_report())
    assert caught.value.kind == "gone" and error in caught.value.reason


async def test_rejected_bot_token_is_one_clear_line(slack_fake, make_service):
    settings = load_settings(None, slack_bot_token="xoxb-wrong-token-999", slack_signing_secret=SECRET,
                             slack_api_url=slack_fake.api_url)
    adapter = SlackAdapter(settings, make_service())
    with pytest.raises(StartupError) as caught:
        await adapter.start()
    assert str(caught.value) == "SLACK_BOT_TOKEN: Slack rejected the token (invalid_auth)"
    assert adapter._session.closed  # nothing left open: the runtime never calls stop() on it


async def test_refused_app_token_is_one_clear_line(slack_fake, make_service):
    settings = load_settings(None, slack_bot_token=BOT, slack_app_token="xapp-wrong-token-999",
                             slack_api_url=slack_fake.api_url)
    adapter = SlackAdapter(settings, make_service())
    with pytest.raises(StartupError) as caught:
        await adapter.start()
    assert str(caught.value) == "SLACK_APP_TOKEN: Slack refused the Socket Mode connection (invalid_auth)"
    assert adapter._session.closed and slack_fake.accepted == 0


async def test_scheduled_post_long_retry_after_goes_back_to_the_scheduler(slack_http, service):
    bot = await slack_http(service)
    bot.fake.post_script.append((429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(PostError) as caught:
        await bot.adapter.post("C0POST001", await service.get_report())
    # not slept through inside the call: the scheduler waits and retries
    assert caught.value.kind == "rate_limited" and caught.value.retry_after == 120
    assert len(bot.fake.posts) == 1 and time.monotonic() - started < 5


async def test_scheduled_post_server_errors_retry_then_are_transient(slack_http, service):
    bot = await slack_http(service)
    bot.fake.post_script.append((503, {"ok": False, "error": "service_unavailable"}, {}))
    await bot.adapter.post("C0POST001", await service.get_report())  # the SDK's server-error retry
    assert len(bot.fake.posts) == 2
    bot.fake.post_script.append((502, {"ok": False, "error": "bad_gateway"}, {}))
    with pytest.raises(PostError) as caught:
        await bot.adapter.post("C0POST001", await service.get_report())
    assert caught.value.kind == "transient" and caught.value.reason == "Slack bad_gateway"
    assert len(bot.fake.posts) == 3  # a 502 is not the SDK's to retry: the scheduler backs off


async def test_scheduled_post_of_an_error_is_its_sentence(slack_http, service):
    from bot.errors import UpstreamUnavailable

    bot = await slack_http(service)
    await bot.adapter.post("C0POST001", UpstreamUnavailable("HTTP 503"))
    body = bot.fake.posts[-1].body
    assert body["text"] == "The Midjourney API is unavailable right now; try again in a few minutes."
    assert ":x: The Midjourney API is unavailable" in str(body["blocks"])


async def test_socket_mode_help_and_unknown_text_are_answered_at_the_response_url(slack_socket, slack_fake, upstream):
    await slack_socket()
    for text, expected in (("help", "*Usage:*"), ("everything", "I did not understand `everything`")):
        envelope_id, rid = await slack_fake.envelope(text=text)
        await slack_fake.wait_ack(envelope_id, timeout=3)
        assert not slack_fake.ack_payloads[envelope_id]  # the same empty ack as in HTTP mode
        body = (await slack_fake.wait_response(rid)).body
        assert body["response_type"] == "ephemeral" and body["text"].startswith(expected)
    await asyncio.sleep(0.2)
    assert len(upstream.asks) == 0


async def test_refused_response_url_is_logged_and_the_bot_goes_on(slack_http, caplog):
    bot = await slack_http()
    bot.fake.response_refusal = (404, "expired_url")
    _, _, rid, _ = await bot.command("")
    await bot.fake.wait_response(rid)
    refused = "/quota: Slack refused the answer at the response_url (HTTP 404: expired_url)"
    deadline = time.monotonic() + 5
    while refused not in caplog.text and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert refused in caplog.text
    bot.fake.response_refusal = None
    resp, _, rid, _ = await bot.command("public")
    assert resp.status == 200 and (await bot.fake.wait_response(rid)).body["response_type"] == "in_channel"


async def test_stop_with_an_answer_pending_is_quick(slack_http, upstream):
    upstream.complete_after = float("inf")
    bot = await slack_http()
    resp, _, rid, _ = await bot.command("")
    assert resp.status == 200
    while not upstream.asks:
        await asyncio.sleep(0.01)
    answering = list(bot.adapter._tasks)
    assert len(answering) == 1 and not answering[0].done()  # waiting for the upstream
    started = time.monotonic()
    await bot.adapter.stop()
    assert time.monotonic() - started < 3 and answering[0].cancelled() and not bot.adapter._tasks
