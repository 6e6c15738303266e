"""GET /metrics passes Prometheus' own metric lint (``promtool check metrics``, client_golang's promlint).

The exposition is scraped from a real ``quota-bot run`` subprocess after a reading (a signed Slack
``/quota`` in HTTP mode, answered from the fake upstream on 127.0.0.1). Two checks:

- ``lint``, here in Python, always runs: every promlint rule (HELP present, base units such as seconds
  and bytes rather than hours or milliseconds, no abbreviated units, counters end in ``_total`` and only
  counters do, ``_bucket``/``_count``/``_sum`` and the ``le``/``quantile`` labels only on histograms and
  summaries, no type in the name, no colon, no camelCase), plus lower-case snake names and no label
  reserved by Prometheus (``__`` prefix). Its own tests below show that each rule fires.
- ``promtool check metrics`` itself, when Debian's ``prometheus`` package is installed (skipped only when
  promtool is missing), so the two cannot drift apart unnoticed on a machine that has it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from tests.conftest import TEST_TOKEN
from tests.fakes.slack import FakeSlack, form, sign
from tests.secrets import ALL_TEST_SECRETS

SLACK_BOT = ALL_TEST_SECRETS["SLACK_BOT_TOKEN"]
SLACK_SECRET = ALL_TEST_SECRETS["SLACK_SIGNING_SECRET"]
READY = re.compile(r" ready: provider=.*http://127\.0\.0\.1:(\d+)/healthz")  # the process's ready line
REMAINING_HOURS = 12.06  # what the fake upstream's default reading says is left (12.06/15.0 hours)


# --- the lint: promlint's rules, in Python ---------------------------------------------------------------

# promlint's units: each unit → its base unit (the name must use the base one)
UNITS = {
    "amperes": "amperes", "bytes": "bytes", "celsius": "celsius", "grams": "grams", "joules": "joules",
    "kelvin": "kelvin", "meters": "meters", "metres": "metres", "seconds": "seconds", "volts": "volts",
    "minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds",
    "kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius",
    "inches": "meters", "yards": "meters", "miles": "meters", "bits": "bytes", "calories": "joules",
    "pounds": "grams", "ounces": "grams",
}
UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
                 "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")
ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped", "gaugehistogram", "info", "stateset")
TYPES_IN_NAME = ("counter", "gauge", "summary", "histogram", "gauge_histogram")
SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
CAMEL = re.compile(r"[a-z][A-Z]")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class Family:
    def __init__(self, name: str) -> None:
        self.name, self.type, self.help = name, "untyped", None
        self.labels: set[str] = set()
        self.samples = 0


def _family_of(sample: str, families: dict[str, Family]) -> Family:
    if sample in families:
        return families[sample]
    for suffix in ("_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"):
        base = sample[: -len(suffix)] if sample.endswith(suffix) else None
        if base and base in families and families[base].type in ("histogram", "summary", "gaugehistogram"):
            return families[base]
    families[sample] = Family(sample)  # a sample with no TYPE: an untyped family of its own (and no HELP)
    return families[sample]


def parse(text: str) -> dict[str, Family]:
    """The families of a text-format (0.0.4) exposition, as promtool reads them: by their TYPE lines."""
    families: dict[str, Family] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                family = families.setdefault(parts[2], Family(parts[2]))
                if parts[1] == "HELP":
                    family.help = parts[3] if len(parts) > 3 else ""
                else:
                    assert len(parts) == 4 and parts[3].strip() in TYPES, f"line {number}: bad TYPE: {line!r}"
                    family.type = parts[3].strip()
            continue
        match = SAMPLE.match(line)
        assert match, f"line {number}: not a sample: {line!r}"
        family = _family_of(match.group(1), families)
        family.samples += 1
        rest = match.group(2) or ""
        while rest.strip():
            label = LABEL.match(rest)
            assert label, f"line {number}: bad labels: {line!r}"
            family.labels.add(label.group(1))
            rest = rest[label.end():]
    return families


def _unit(name: str) -> tuple[str, str] | None:
    for word in name.split("_"):
        if word in UNITS:
            return word, UNITS[word]
        for prefix in UNIT_PREFIXES:
            if word.startswith(prefix) and word[len(prefix):] in UNITS:
                return word, UNITS[word[len(prefix):]]
    return None


def lint(text: str) -> list[str]:
    """Every problem promlint (``promtool check metrics``) reports, and a few of our own; [] when clean."""
    problems: list[str] = []
    for name, family in parse(text).items():
        def problem(what: str) -> None:
            problems.append(f"{name}: {what}")  # noqa: B023 - used in this iteration only

        kind, lowered = family.type, name.lower()
        if not family.help or not family.help.strip():
            problem("no help text")
        unit = _unit(name)
        if unit and unit[0] != unit[1]:
            problem(f'use base unit "{unit[1]}" instead of "{unit[0]}"')
        if kind == "counter" and not name.endswith("_total"):
            problem('counter metrics should have "_total" suffix')
        if kind not in ("counter", "untyped") and name.endswith("_total"):
            problem('non-counter metrics should not have "_total" suffix')
        if kind != "untyped":
            if kind != "histogram" and name.endswith("_bucket"):
                problem('non-histogram metrics should not have "_bucket" suffix')
            for suffix in ("_count", "_sum"):
                if kind not in ("histogram", "summary") and name.endswith(suffix):
                    problem(f'non-histogram and non-summary metrics should not have "{suffix}" suffix')
            if kind != "histogram" and "le" in family.labels:
                problem('non-histogram metrics should not have "le" label')
            if kind != "summary" and "quantile" in family.labels:
                problem('non-summary metrics should not have "quantile" label')
            if kind != "gauge" and name.endswith("_timestamp_seconds"):
                problem('non-gauge metrics should not have "_timestamp_seconds" suffix')
        for typename in TYPES_IN_NAME:
            if f"_{typename}_" in lowered or lowered.endswith(f"_{typename}"):
                problem(f"metric name should not include type '{typename}'")
        if ":" in name:
            problem("metric names should not contain ':'")
        if CAMEL.search(name):
            problem("metric names should be written in 'snake_case' not 'camelCase'")
        for abbreviation in ABBREVIATIONS:
            if f"_{abbreviation}_" in lowered or lowered.endswith(f"_{abbreviation}"):
                problem("metric names should not contain abbreviated units")
        # ours, beyond promlint: lower-case snake names, no label Prometheus reserves for itself
        if not SNAKE.match(name):
            problem("metric names should be lower-case snake_case")
        for label in sorted(family.labels):
            if CAMEL.search(label):
                problem("label names should be written in 'snake_case' not 'camelCase'")
            elif not SNAKE.match(label):
                problem(f"label {label!r} should be lower-case snake_case")
            if label.startswith("__"):
                problem(f"label {label!r} is reserved (names starting with '__' are Prometheus' own)")
    return problems


def promtool(text: str) -> tuple[int, str]:
    """``promtool check metrics`` on ``text``: its exit code (0 clean, 3 lint problems) and what it said."""
    import subprocess

    done = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=text,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


# --- the lint's own tests: each rule fires on what it forbids ------------------------------------------------

def _exposition(name: str, kind: str, sample: str | None = None, help_: str | None = "Something.") -> str:
    lines = ([f"# HELP {name} {help_}"] if help_ is not None else []) + [f"# TYPE {name} {kind}"]
    return "\n".join(lines + [sample or f"{name} 1"]) + "\n"


LINT_CASES = [
    (_exposition("a_left_hours", "gauge"), 'use base unit "seconds" instead of "hours"'),
    (_exposition("a_wait_milliseconds", "gauge"), 'use base unit "seconds" instead of "milliseconds"'),
    (_exposition("a_size_kilobytes", "gauge"), 'use base unit "bytes" instead of "kilobytes"'),
    (_exposition("a_wait_ms", "gauge"), "abbreviated units"),
    (_exposition("a_things", "counter"), '"_total" suffix'),
    (_exposition("a_things_total", "gauge"), 'non-counter metrics should not have "_total" suffix'),
    (_exposition("a_things_count", "gauge"), '"_count" suffix'),
    (_exposition("a_things_sum", "counter", "a_things_sum 1"), '"_sum" suffix'),
    (_exposition("a_things_bucket", "gauge"), '"_bucket" suffix'),
    (_exposition("a_things", "gauge", 'a_things{le="1"} 1'), '"le" label'),
    (_exposition("a_things", "gauge", 'a_things{quantile="0.5"} 1'), '"quantile" label'),
    (_exposition("a_things_gauge", "gauge"), "should not include type 'gauge'"),
    (_exposition("a:things", "gauge"), "should not contain ':'"),
    (_exposition("a_manyThings", "gauge"), "'snake_case' not 'camelCase'"),
    (_exposition("a_things", "gauge", 'a_things{accountName="x"} 1'),
     "label names should be written in 'snake_case'"),
    (_exposition("a_things", "gauge", 'a_things{__account="x"} 1'), "is reserved"),
    (_exposition("A_THINGS", "gauge"), "lower-case snake_case"),
    (_exposition("a_things", "gauge", help_=None), "no help text"),
    ("a_things 1\n", "no help text"),
    (_exposition("a_seen_timestamp_seconds", "summary", "a_seen_timestamp_seconds_count 1"), "_timestamp_seconds"),
]
CLEAN = (_exposition("a_wait_seconds", "histogram", 'a_wait_seconds_bucket{le="+Inf"} 1\n'
                     "a_wait_seconds_count 1\na_wait_seconds_sum 0.5")
         + _exposition("a_things_total", "counter", 'a_things_total{outcome="ok"} 2')
         + _exposition("a_left_seconds", "gauge", 'a_left_seconds{account="default"} 43416'))


@pytest.mark.parametrize("text, expected", LINT_CASES)
def test_the_lint_reports_each_rule(text, expected):
    assert any(expected in p for p in lint(text)), lint(text)


OURS = ("is reserved", "lower-case snake_case", "_timestamp_seconds")  # not in promtool (the last: newer ones)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is missing")
def test_promtool_agrees_with_the_lint():
    """promtool refuses what the lint refuses, in the same words (for the rules it has)."""
    for text, expected in LINT_CASES:
        if any(mark in expected for mark in OURS):
            continue
        code, said = promtool(text)
        assert code != 0 and expected in said, (text, said)
        ours = [p.split(": ", 1)[1] for p in lint(text)]
        assert all(p in said for p in ours if not any(mark in p for mark in OURS)), (ours, said)
    assert promtool(CLEAN) == (0, "")


def test_the_lint_passes_clean_families():
    assert lint(CLEAN) == []


def test_every_label_name_the_bot_declares_is_clean():
    """Label names of every metric, also those no reading moves (scheduled posts, alerts, callbacks)."""
    collectors = [c for c in vars(metrics).values() if hasattr(c, "_labelnames")]
    assert len(collectors) >= 10
    for collector in collectors:
        for label in collector._labelnames:  # prometheus_client keeps a metric's declared labels here
            assert SNAKE.match(label) and not label.startswith("__") and label not in ("le", "quantile"), label


# --- the real process ------------------------------------------------------------------------------------

async def _scrape(tmp_path: Path, upstream) -> str:
    """Start ``quota-bot run`` (Slack in HTTP mode, SQLite), answer one signed ``/quota`` (one reading),
    then GET /metrics."""
    upstream.complete_after = 0.1
    slack = await FakeSlack(SLACK_BOT, ALL_TEST_SECRETS["SLACK_APP_TOKEN"]).start()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env.update(NEXTLEG_API_TOKEN=TEST_TOKEN, NEXTLEG_BASE_URL=upstream.base_url, HOST="127.0.0.1", PORT="0",
               DATABASE_URL=f"sqlite:///{tmp_path}/q.sqlite3", LOG_LEVEL="INFO", SLACK_BOT_TOKEN=SLACK_BOT,
               SLACK_SIGNING_SECRET=SLACK_SECRET, SLACK_API_URL=slack.api_url)
    log = tmp_path / "run.log"
    root = Path(__file__).resolve().parents[2]
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, env={**env, "PYTHONPATH": str(root)},
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline, port = time.monotonic() + 30, None
        while port is None:
            assert proc.returncode is None, f"quota-bot run exited:\n{log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in 30 s:\n{log.read_text(errors='replace')[-3000:]}"
            ready = READY.search(log.read_text(errors="replace"))
            port = int(ready.group(1)) if ready else None
            if port is None:
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            payload, rid = slack.command_payload("/quota", "")
            body = form(payload)
            async with http.post(f"http://127.0.0.1:{port}/slack/events", data=body,
                                 headers=sign(SLACK_SECRET, body)) as resp:
                assert resp.status == 200, await resp.text()
            await slack.wait_response(rid, 20)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                return await resp.text()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await slack.stop()


async def test_metrics_of_the_running_bot_pass_the_lint(tmp_path, upstream):
    text = await _scrape(tmp_path, upstream)
    assert lint(text) == []
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("quota_bot_readings_total",
                    (("account", "default"), ("outcome", "ok"), ("provider", "nextleg")))] == 1
    # the name says seconds, and so does the value: the reading's 12.06 h
    assert samples[("quota_bot_fast_time_remaining_seconds", (("account", "default"),))] == pytest.approx(
        REMAINING_HOURS * 3600, abs=1)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is missing")
async def test_metrics_of_the_running_bot_pass_promtool(tmp_path, upstream):
    text = await _scrape(tmp_path, upstream)
    code, said = promtool(text)
    assert code == 0, said
