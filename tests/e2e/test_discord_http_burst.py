"""Discord over HTTP under a burst: a /quota whose reading is not ready is not held for INLINE_WAIT
while the same command before it is still waiting for that reading (it would share it: it cannot be
ready sooner); it is deferred at once. Signed POSTs from the fake Discord to the bot's HTTP server."""

from __future__ import annotations

import asyncio


from tests.fakes.discord import FakeDiscord
from tests.secrets import ALL_TEST_SECRETS

TOKEN = ALL_TEST_SECRETS["DISCORD_BOT_TOKEN"]
TITLE = "Midjourney fast time: 12.06 h of 15 h left"


async def test_a_quota_behind_one_waiting_for_the_same_reading_is_deferred_at_once(discord_http_endpoint, discord_fake: FakeDiscord,
                                                                                   upstream):
    discord_http_endpoint.interactions.inline_wait = 30.0  # longer than the reading takes: the first one is answered inline
    first = asyncio.ensure_future(discord_fake.http_slash("quota"))
    for _ in range(200):  # until the first one's reading has been asked for
        if upstream.asks:
            break
        await asyncio.sleep(0.05)
    assert len(upstream.asks) == 1 and not first.done()
    _, token, second = await discord_fake.http_slash("quota")  # the same reading is in flight
    assert second.status == 200 and second.body["type"] == 5, second.body  # deferred, not held
    _, _, answered = await asyncio.wait_for(first, 20)
    assert answered.body["type"] == 4 and answered.body["data"]["embeds"][0]["title"] == TITLE
    edit = await discord_fake.wait_edit(token, 20)
    assert edit.body["embeds"][0]["title"] == TITLE
    assert len(upstream.asks) == 1  # both answered from one ask
