"""How the Slack reply looks: Block Kit with a plain-text fallback, within Block Kit's limits.
Readings, error sentences and the `/quota-schedule` answers are all shaped here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bot.errors import user_sentence
from bot.report import QuotaReport
from bot.schedules import ScheduleView

MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000
FIELDS_PER_SECTION = 10
FIELD_TEXT_MAX = 2000
HEADER_MAX = 150

LEVEL_EMOJI = {"ok": ":large_green_circle:", "low": ":large_orange_circle:", "critical": ":red_circle:",
               "unknown": ":white_circle:"}
SIMULATED_NOTE = ":warning: *Simulated reading*: no provider credentials are set, the figures are made up."


def _cut(text: str, limit: int) -> str:
    text = text if text.strip() else "—"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_date(moment: datetime, token: str = "{date_short_pretty} at {time}", fallback: str | None = None) -> str:
    """``<!date^…>`` so every reader sees their own local time; the fallback (for clients that cannot
    format it) is UTC unless given."""
    if fallback is None:
        fallback = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{token}|{fallback}>"


def fallback_text(report: QuotaReport) -> str:
    text = f"Midjourney fast time: {report.headline}"
    if report.percent is not None:
        text += f" ({report.percent:.2f}%)"
    return text + (" [simulated]" if report.simulated else "")


def render_report(report: QuotaReport) -> tuple[list[dict[str, Any]], str]:
    """(blocks, plain-text fallback) for one reading."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"Midjourney fast time: {report.headline}", HEADER_MAX)}},
    ]
    if report.percent is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text":
                       f"{LEVEL_EMOJI[report.level]} `{report.progress_bar(20)}` *{report.percent:.2f}%* left"}})
    if report.simulated:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": SIMULATED_NOTE}]})
    if (age := report.age_text()) is not None:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f":clock3: These figures were {age} (the provider's last look at Midjourney)."}]})
    fields: list[str] = []
    if report.job_mode:
        fields.append(f"*Job mode*\n{escape(report.job_mode)}")
    if report.plan:
        plan = report.plan if not report.plan_status else f"{report.plan} ({report.plan_status})"
        fields.append(f"*Plan*\n{escape(plan)}")
    if report.renewal:
        fields.append(f"*Renews*\n{slack_date(report.renewal)}")
    fields.extend(f"*{escape(_cut(k, 200))}*\n{escape(_cut(v, FIELD_TEXT_MAX - 210))}" for k, v in report.other_fields)
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Read {slack_date(report.read_at)}"
                                               + (" · simulated" if report.simulated else "")}]}
    room = MAX_BLOCKS - len(blocks) - 1  # keep the footer
    chunks = [fields[i:i + FIELDS_PER_SECTION] for i in range(0, len(fields), FIELDS_PER_SECTION)]
    if len(chunks) > room:
        hidden = sum(len(c) for c in chunks[room - 1:])
        chunks = chunks[: room - 1] + [[f"*…*\n{hidden} more fields not shown"]]
    for chunk in chunks:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, FIELD_TEXT_MAX)} for f in chunk]})
    blocks.append(footer)
    return blocks, fallback_text(report)


def render_error(exc: BaseException) -> tuple[list[dict[str, Any]], str]:
    sentence = user_sentence(exc)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":x: {escape(sentence)}"}}], sentence


def render_text(text: str) -> tuple[list[dict[str, Any]], str]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_TEXT_MAX)}}], text


# --- /quota-schedule answers ----------------------------------------------------------------------

def _next_run(moment: datetime, zone: str) -> str:
    """The reader's local time, and the wall-clock time in the schedule's own timezone."""
    wall = f"{moment.strftime('%Y-%m-%d %H:%M')} {zone}"
    return f"{slack_date(moment, '{date_short_pretty} {time}', fallback=wall)} ({wall})"


def schedule_added_text(view: ScheduleView) -> str:
    runs = "\n".join(f"• {_next_run(t, view.timezone)}" for t in view.next_runs)
    return (f"Schedule *#{view.id}* added: `{escape(view.when)}` ({view.timezone}) in <#{view.channel}>."
            f"\nNext runs:\n{runs}")


def schedule_line(view: ScheduleView) -> str:
    next_run = f"next {slack_date(view.next_runs[0])}" if view.next_runs else "no next run"
    state = f" :warning: failing: {escape(view.failing)}" if view.failing else ""
    origin = " (from QUOTA_SCHEDULES)" if view.source == "config" else ""
    return f"*#{view.id}* `{escape(view.when)}` ({view.timezone}) in <#{view.channel}>, {next_run}{origin}{state}"


def schedule_list_text(views: list[ScheduleView]) -> str:
    """One line a schedule; `render_text` cuts the whole to one section's 3,000 characters."""
    if not views:
        return "No quota schedules yet. Add one with `/quota-schedule add every 6h`."
    lines = [schedule_line(v) for v in views]
    text = "\n".join(lines)
    if len(text) <= SECTION_TEXT_MAX:
        return text
    shown: list[str] = []
    for line in lines:
        if len("\n".join([*shown, line])) > SECTION_TEXT_MAX - 60:
            break
        shown.append(line)
    return "\n".join(shown) + f"\n…and {len(lines) - len(shown)} more."
