"""Slack HTTP mode against what a scanner or a broken proxy sends: every malformed request to
`/slack/events` is a 4xx with no traceback, counted like a bad signature where it is one, and nothing
reaches bolt or the upstream."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import pytest

from tests.e2e.test_slack_e2e import SECRET, slack_http  # noqa: F401  (fixtures)


def _signed(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}", "Content-Type": content_type}


UNSIGNED = {
    "no signature headers": ({"Content-Type": "application/x-www-form-urlencoded"}, b"command=%2Fquota&text="),
    "timestamp not a number": ({"X-Slack-Request-Timestamp": "yesterday", "X-Slack-Signature": "v0=abc"},
                               b"command=%2Fquota"),
    "empty timestamp": ({"X-Slack-Request-Timestamp": "", "X-Slack-Signature": ""}, b"command=%2Fquota"),
    "huge timestamp": ({"X-Slack-Request-Timestamp": "9" * 400, "X-Slack-Signature": "v0=00"}, b"command=%2Fquota"),
    "signature without v0": ({"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "abc"},
                             b"command=%2Fquota"),
    "empty body": ({}, b""),
    "json body": ({"Content-Type": "application/json"}, b'{"command": "/quota"}'),
    "binary body": ({"Content-Type": "application/octet-stream"}, bytes(range(256))),
}


@pytest.mark.parametrize("case", list(UNSIGNED))
async def test_unsigned_or_malformed_requests_are_401_and_counted(slack_http, upstream, caplog, case):  # noqa: F811
    bot = await slack_http()
    headers, body = UNSIGNED[case]
    async with bot.http.post(bot.url, data=body, headers=headers) as resp:
        assert resp.status == 401, await resp.text()
    assert "refused with 401" in caplog.text  # the same warning as a bad signature
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert upstream.asks == [] and bot.fake.responses == {}


SIGNED = {
    "empty body": (b"", "application/x-www-form-urlencoded"),
    "not form-encoded": (b"\x00\x01 not a form %%% ==", "application/x-www-form-urlencoded"),
    "invalid utf-8": (b"command=%2Fquota&text=\xff\xfe", "application/x-www-form-urlencoded"),
    "json": (b'{"command": "/quota", "text": ""}', "application/json"),
    "broken json": (b'{"command": ', "application/json"),
    "wrong content type": (b"command=%2Fquota&text=", "text/plain"),
    "no command": (b"token=x&team_id=T1", "application/x-www-form-urlencoded"),
}


@pytest.mark.parametrize("case", list(SIGNED))
async def test_signed_but_malformed_requests_are_4xx_without_a_traceback(slack_http, upstream, caplog, case):  # noqa: F811
    bot = await slack_http()
    body, content_type = SIGNED[case]
    async with bot.http.post(bot.url, data=body, headers=_signed(body, content_type)) as resp:
        assert 400 <= resp.status < 500, (resp.status, await resp.text())
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert upstream.asks == []


async def test_a_huge_body_is_413_without_being_read(slack_http, upstream, caplog):  # noqa: F811
    bot = await slack_http()
    body = b"command=%2Fquota&text=" + b"a" * (2 * 1024 * 1024)
    async with bot.http.post(bot.url, data=body, headers=_signed(body)) as resp:
        assert resp.status == 413
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert upstream.asks == []


async def test_a_good_command_still_works_after_the_garbage(slack_http, upstream):  # noqa: F811
    bot = await slack_http()
    for headers, body in UNSIGNED.values():
        async with bot.http.post(bot.url, data=body, headers=headers) as resp:
            assert resp.status == 401
    resp, _, rid, _ = await bot.command("")
    assert resp.status == 200
    answer = await bot.fake.wait_response(rid)
    assert "fast time" in str(answer.body).lower()
