"""A Socket Mode command with nowhere to answer (no response_url): acked, one line in the log, no
traceback, and the bot goes on answering (issue 20, item 8)."""

from __future__ import annotations

import asyncio
import logging

from tests.e2e.test_slack_e2e import slack_socket  # noqa: F401 - the shared fixtures


async def test_a_command_without_response_url_is_one_line_not_a_traceback(slack_socket, slack_fake, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    await slack_socket()
    for command in ("/quota", "/quota-schedule", "/quota-alert"):
        envelope_id, _ = await slack_fake.envelope(command=command, text="help", without=("response_url",))
        await slack_fake.wait_ack(envelope_id, timeout=5)
    await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in caplog.records if "no response_url" in r.getMessage()]
    assert len(lines) == 3, lines
    envelope_id, rid = await slack_fake.envelope(text="help")  # the next command is answered as usual
    assert "/quota" in (await slack_fake.wait_response(rid)).body["text"]
