"""Prometheus metrics (GET /metrics), with the official client library.

One registry per process. Labels name accounts (the operator's own names), providers, platforms,
commands and outcomes: never a token, a user id or a channel. Counters move as the bot works; the
gauge of the fast time left lets an operator alert in their own monitoring. Every name passes
``promtool check metrics`` (times in seconds, counters ending in ``_total``): tests/e2e/test_metrics_lint.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

READINGS = Counter("quota_bot_readings", "Readings taken from the provider, by outcome (ok or the error's code)",
                   ["account", "provider", "outcome"], registry=REGISTRY)
READING_SECONDS = Histogram("quota_bot_reading_seconds", "How long one reading took (ask to result)",
                            ["account", "provider"], registry=REGISTRY,
                            buckets=(0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 300))
POLLS = Histogram("quota_bot_polls_per_reading", "Polls one reading needed", ["account", "provider"],
                  registry=REGISTRY, buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30))
CACHE = Counter("quota_bot_cache", "Answers by how they were served: hit (a cached reading), shared (waited "
                "on a reading in flight) or ask (started a reading)", ["account", "kind"], registry=REGISTRY)
# Prometheus' base unit for time is the second (promtool check metrics refuses hours): use set_remaining
REMAINING = Gauge("quota_bot_fast_time_remaining_seconds", "Fast time left at the last reading, in seconds",
                  ["account"], registry=REGISTRY)
COMMANDS = Counter("quota_bot_commands", "Chat commands answered, by platform, command and outcome",
                   ["platform", "command", "outcome"], registry=REGISTRY)
ACK_SECONDS = Histogram("quota_bot_ack_seconds", "From a command's arrival to its acknowledgement",
                        ["platform"], registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5))
SCHEDULED_POSTS = Counter("quota_bot_scheduled_posts", "Scheduled runs by outcome (posted, failed, skipped)",
                          ["platform", "outcome"], registry=REGISTRY)
ALERTS = Counter("quota_bot_alerts", "Alert posts by outcome (posted, failed)", ["platform", "outcome"],
                 registry=REGISTRY)
MODE_SWITCHES = Counter("quota_bot_mode_switches", "Switches of an account's speed mode, by the mode asked for, "
                        "cause (person or alert) and outcome (ok, refused, failed)",
                        ["account", "mode", "cause", "outcome"], registry=REGISTRY)
CALLBACKS = Counter("quota_bot_upstream_callbacks", "Provider callbacks to the webhook, accepted or refused",
                    ["outcome"], registry=REGISTRY)


def set_remaining(account: str, hours: float) -> None:
    """The fast time left at ``account``'s last reading, given in hours (as readings carry it)."""
    REMAINING.labels(account).set(hours * 3600.0)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
