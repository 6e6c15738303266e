"""Private PNG upload (files.getUploadURLExternal → upload URL → files.completeUploadExternal) with the
real slack-sdk against the fake Slack on 127.0.0.1."""

from __future__ import annotations

import logging
import struct
import time
import zlib

import aiohttp
import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncServerErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.app import ShortRateLimitRetryHandler
from adapters.slack.files import image_block, upload_png
from tests.fakes.slack import FakeSlack
from tests.ports import refusing_port
from tests.secrets import ALL_TEST_SECRETS

BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
FILES_LOGGER = "adapters.slack.files"


def _png(width: int = 4, height: int = 3) -> bytes:
    """A small valid PNG (grey pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PNG = _png()


@pytest.fixture
async def fake():
    slack = await FakeSlack(BOT).start()
    yield slack
    await slack.stop()


@pytest.fixture
async def client(fake):
    """A client built like the adapter's: its kept-alive session and its retry handlers."""
    session = aiohttp.ClientSession()
    yield _client(fake.api_url, session)
    await session.close()


def _client(api_url: str, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    return AsyncWebClient(token=BOT, base_url=api_url, session=session, retry_handlers=[
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ShortRateLimitRetryHandler(max_retry_count=3),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ])


def _files_calls(fake: FakeSlack) -> list:
    return [c for c in fake.calls if c.path.startswith("files.")]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FILES_LOGGER and r.levelno >= logging.WARNING]


def _assert_no_token_anywhere(fake: FakeSlack) -> None:
    assert all(BOT not in c.url for c in fake.calls)
    for upload in fake.uploads:
        assert BOT not in upload.url
        assert "Authorization" not in upload.headers  # the upload URL is pre-signed: the token stays home
        assert BOT not in str(upload.headers)


async def test_upload_is_three_calls_in_order_private_and_returns_the_file_id(fake, client, caplog):
    file_id = await upload_png(client, PNG, filename="quota.png", title="Midjourney fast time")
    assert file_id == "F0FAKE0001"

    get_url, complete = _files_calls(fake)
    assert [get_url.path, complete.path] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert get_url.body["filename"] == "quota.png" and get_url.body["length"] == str(len(PNG))
    assert get_url.headers["Authorization"] == f"Bearer {BOT}"  # Web API calls carry the token in the header
    assert len(fake.uploads) == 1
    upload = fake.uploads[0]
    assert get_url.at < upload.at < complete.at  # step 1, 2, 3
    assert upload.file_id == file_id and upload.status == 200 and upload.data == PNG
    assert fake.files[file_id]["data"] == PNG and fake.files[file_id]["length"] == len(PNG)

    # files=[{"id", "title"}] and no channel: the file is shared nowhere
    assert fake.completions == [{"files": [{"id": file_id, "title": "Midjourney fast time"}],
                                 "channel_id": None, "channels": None, "shared": False}]
    assert "channel_id" not in complete.body and "channels" not in complete.body
    assert fake.files[file_id]["completed"] and fake.files[file_id]["channels"] == []
    assert not _warnings(caplog)
    _assert_no_token_anywhere(fake)


async def test_upload_without_a_session_anywhere_still_works(fake):
    """A client with no session of its own (the SDK opens one per call); the bytes go over a short-lived one."""
    file_id = await upload_png(_client(fake.api_url), PNG, filename="quota.png", title="t")
    assert file_id is not None and fake.files[file_id]["data"] == PNG and fake.files[file_id]["completed"]


async def test_upload_with_the_callers_session(fake, client):
    async with aiohttp.ClientSession() as mine:
        file_id = await upload_png(client, PNG, filename="quota.png", title="t", session=mine)
    assert file_id is not None and fake.uploads[-1].data == PNG


def test_image_block_shape():
    assert image_block("F0123456", "Fast time left: 12.06 h of 15 h") == {
        "type": "image", "slack_file": {"id": "F0123456"}, "alt_text": "Fast time left: 12.06 h of 15 h"}
    assert image_block("F0123456", "chart", title="Quota") == {
        "type": "image", "slack_file": {"id": "F0123456"}, "alt_text": "chart",
        "title": {"type": "plain_text", "text": "Quota"}}
    long = image_block("F1", "a" * 2500, title="b" * 2500)  # Slack's limit: 2000 characters each
    assert len(long["alt_text"]) == 2000 and len(long["title"]["text"]) == 2000
    assert "image_url" not in long  # never a public URL


async def test_missing_scope_is_none_and_one_warning_that_says_what_to_do(fake, client, caplog):
    fake.files_missing_scope = True
    assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    assert [c.path for c in _files_calls(fake)] == ["files.getUploadURLExternal"]  # nothing more is tried
    assert not fake.uploads and not fake.completions
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "files:write" in warnings[0] and "reinstall" in warnings[0] and "manifest" in warnings[0]
    # the next answer is text-only too, without a second warning (at most one an hour)
    assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    assert len(_warnings(caplog)) == 1
    # the operator added the scope and reinstalled: uploads work again, same client
    fake.files_missing_scope = False
    assert await upload_png(client, PNG, filename="quota.png", title="t") is not None
    assert not any("Traceback" in r.getMessage() for r in caplog.records)


async def test_upload_url_500_then_200_is_retried_once(fake, client, caplog):
    fake.upload_script.append((500, "internal error"))
    file_id = await upload_png(client, PNG, filename="quota.png", title="t")
    assert file_id is not None
    assert [u.status for u in fake.uploads] == [500, 200]
    assert all(u.data == PNG and u.file_id == file_id for u in fake.uploads)
    assert fake.completions[0]["files"][0]["id"] == file_id
    assert not _warnings(caplog)


async def test_upload_url_failing_twice_is_none_with_the_status(fake, client, caplog):
    fake.upload_script.extend([(503, "unavailable"), (502, "bad gateway")])
    assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    assert len(fake.uploads) == 2 and not fake.completions  # one retry only, and no completion
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "the upload URL" in warnings[0] and "HTTP 502" in warnings[0]


async def test_upload_url_4xx_is_not_retried(fake, client, caplog):
    fake.upload_script.append((400, "bad request"))
    assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    assert len(fake.uploads) == 1 and not fake.completions
    assert "HTTP 400" in _warnings(caplog)[0]


async def test_unreachable_upload_url_is_none(fake, client, caplog):
    with refusing_port() as port:
        fake.upload_base = f"http://127.0.0.1:{port}"  # nothing listens there
        started = time.monotonic()
        assert await upload_png(client, PNG, filename="quota.png", title="t") is None
        assert time.monotonic() - started < 5 and not fake.completions
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "the upload URL" in warnings[0] and "ClientConnectorError" in warnings[0]
    assert any("retrying once" in r.getMessage() for r in caplog.records)


async def test_unreachable_web_api_is_none(caplog):
    async with aiohttp.ClientSession() as session:
        with refusing_port() as port:
            client = _client(f"http://127.0.0.1:{port}/api/", session)
            assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "files.getUploadURLExternal" in warnings[0]
    assert "ClientConnectorError" in warnings[0]


@pytest.mark.parametrize("where", ["get", "complete"])
async def test_any_other_slack_error_is_none_with_slacks_word(fake, client, caplog, where):
    error = (200, {"ok": False, "error": "invalid_arguments"}, {})
    (fake.get_upload_url_script if where == "get" else fake.complete_upload_script).append(error)
    assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    warnings = _warnings(caplog)
    step = "files.getUploadURLExternal" if where == "get" else "files.completeUploadExternal"
    assert len(warnings) == 1 and step in warnings[0] and "(invalid_arguments)" in warnings[0]
    _assert_no_token_anywhere(fake)


async def test_web_api_429_goes_through_the_clients_retry_handlers(fake, client):
    fake.get_upload_url_script.append((429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}))
    started = time.monotonic()
    assert await upload_png(client, PNG, filename="quota.png", title="t") is not None
    assert [c.path for c in _files_calls(fake)].count("files.getUploadURLExternal") == 2
    assert time.monotonic() - started >= 0.9


async def test_rejected_token_is_none_and_never_logged(fake, caplog):
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token="xoxb-wrong-token-999", base_url=fake.api_url, session=session)
        assert await upload_png(client, PNG, filename="quota.png", title="t") is None
    assert "(invalid_auth)" in _warnings(caplog)[0]
    assert "xoxb-wrong-token-999" not in caplog.text


async def test_fake_upload_url_takes_a_multipart_form_too(fake, client):
    """The fake accepts what Slack accepts: raw bytes (above) or a multipart form with the file part."""
    got = await client.files_getUploadURLExternal(filename="quota.png", length=len(PNG))
    form = aiohttp.FormData()
    form.add_field("file", PNG, filename="quota.png", content_type="image/png")
    async with aiohttp.ClientSession() as session, session.post(got["upload_url"], data=form) as resp:
        assert resp.status == 200 and await resp.text() == f"OK - {len(PNG)}"
    assert fake.uploads[-1].data == PNG and fake.uploads[-1].content_type == "multipart/form-data"


async def test_empty_png_is_not_uploaded(fake, client, caplog):
    assert await upload_png(client, b"", filename="quota.png", title="t") is None
    assert not _files_calls(fake) and len(_warnings(caplog)) == 1


async def test_a_closed_session_from_the_caller_falls_back_to_the_clients(fake, client):
    closed = aiohttp.ClientSession()
    await closed.close()
    file_id = await upload_png(client, PNG, filename="quota.png", title="t", session=closed)
    assert file_id is not None and fake.files[file_id]["data"] == PNG
