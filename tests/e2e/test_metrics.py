"""GET /metrics: the Prometheus text format (parsed with the client library's own parser), counters that
move as commands are answered, and no label carrying a token, a user id or a channel."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.secrets import ALL_TEST_SECRETS
from tests.e2e.test_app import _run, _settings


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_as_commands_are_answered(tmp_path, upstream, slack_fake):
    upstream.complete_after = 0.1
    settings = _settings(tmp_path, upstream, slack_fake, quota_cache_seconds=60, quota_sample_every="off")
    stop, task, info = await _run(settings)
    url = f"http://127.0.0.1:{info['port']}/metrics"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                before = _samples(await resp.text())
            for _ in range(3):  # one ask, then two cache hits
                _, rid = await slack_fake.envelope("/quota", "")
                await slack_fake.wait_response(rid)
            async with http.get(url) as resp:
                text = await resp.text()
        after = _samples(text)
    finally:
        stop.set()
        await task

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("quota_bot_commands_total", platform="slack", command="quota", outcome="ok") == 3
    assert delta("quota_bot_readings_total", account="default", provider="nextleg", outcome="ok") == 1
    assert delta("quota_bot_cache_total", account="default", kind="ask") == 1
    assert delta("quota_bot_cache_total", account="default", kind="hit") == 2
    assert delta("quota_bot_ack_seconds_count", platform="slack") == 3
    assert delta("quota_bot_polls_per_reading_count", account="default", provider="nextleg") == 1
    assert delta("quota_bot_reading_seconds_count", account="default", provider="nextleg") == 1
    assert 0 < _value(after, "quota_bot_fast_time_remaining_seconds", account="default") <= 15 * 3600
    for secret in ALL_TEST_SECRETS.values():
        assert secret not in text
    labels = {value for (_, pairs) in after for _, value in pairs}
    assert not any(v.startswith(("U0", "C0", "T0")) for v in labels), "no user, channel or team id as a label"
