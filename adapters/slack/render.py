"""How the Slack reply looks: Block Kit with a plain-text fallback, within Block Kit's limits.
Readings, error sentences and the `/quota-schedule` and `/quota-alert` answers are all shaped here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from bot.errors import echo_parts, user_sentence
from bot.report import AccountReading, PoolReport, QuotaReport
from bot.schedules import ScheduleView

if TYPE_CHECKING:
    from bot.alerts import AlertNotice, AlertView
    from bot.commands import Answer
    from bot.history import HistoryData

MAX_BLOCKS = 50
SECTION_TEXT_MAX = 3000
FIELDS_PER_SECTION = 10
FIELD_TEXT_MAX = 2000
HEADER_MAX = 150

LEVEL_EMOJI = {"ok": ":large_green_circle:", "low": ":large_orange_circle:", "critical": ":red_circle:",
               "unknown": ":white_circle:"}
SIMULATED_NOTE = ":warning: *Simulated reading*: no provider credentials are set, the figures are made up."


def _cut(text: str, limit: int) -> str:
    """Plain text (not yet escaped, or a plain_text object) within ``limit`` characters."""
    text = text if text.strip() else "—"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _trim(text: str, limit: int) -> str:
    """mrkdwn, already escaped, within ``limit`` characters. The cut never lands inside an escape
    (``&amp;``) or one of our ``<…>`` links, mentions and dates: it moves to before it. Values are cut
    before they are escaped (`fit`, or `_cut` then `escape`); this is the last guard for a whole text."""
    text = text if text.strip() else "—"
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    amp = head.rfind("&")
    if amp >= 0 and len(head) - amp < 5 and ";" not in head[amp:]:
        head = head[:amp]
    if head.rfind("<") > head.rfind(">"):
        head = head[: head.rfind("<")]
    return head + "…"


def escape(text: str) -> str:
    """Slack's three escapes (api.slack.com "Formatting text for app surfaces"): & < > and nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """``text`` escaped, within ``limit`` characters: cut in plain text first, so the cut can never
    land inside an escape."""
    text = text if text.strip() else "—"
    out = escape(text)
    if len(out) <= limit:
        return out
    used = count = 0
    for char in text:
        used += len(escape(char))
        if used > limit - 1:
            break
        count += 1
    return escape(text[:count]) + "…"


class Mrkdwn(str):
    """Text already in Slack's mrkdwn: every value in it escaped, our own ``<#C…>``, ``<!date^…>`` and
    ``<!subteam^…>`` left as they are. As markupsafe's ``Markup`` does for HTML: `render_text` sends a
    ``Mrkdwn`` as it is and escapes any other ``str`` whole, so a sentence (ours, a usage text, or one
    that repeats what a user typed) never reaches Slack with a raw ``<…>`` in it; anything built by
    joining strings is a plain ``str`` again, and escaped."""

    __slots__ = ()


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
    return escape(text + (" [simulated]" if report.simulated else ""))


def render_report(report: QuotaReport) -> tuple[list[dict[str, Any]], str]:
    """(blocks, plain-text fallback) for one reading."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"Midjourney fast time: {report.headline}", HEADER_MAX)}},
    ]
    if report.percent is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text":
                       f"{LEVEL_EMOJI[report.level]} `{report.progress_bar(20)}` *{report.percent:.2f}%* left"}})
    if report.pace:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f":chart_with_downwards_trend: {fit(report.pace, 500)}"}]})
    if report.simulated:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": SIMULATED_NOTE}]})
    if (age := report.age_text()) is not None:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f":clock3: These figures were {age} (the provider's last look at Midjourney)."}]})
    fields: list[str] = []
    if report.job_mode:
        fields.append(f"*Job mode*\n{fit(report.job_mode, 500)}")
    if report.plan:
        plan = report.plan if not report.plan_status else f"{report.plan} ({report.plan_status})"
        fields.append(f"*Plan*\n{fit(plan, 500)}")
    if report.renewal:
        fields.append(f"*Renews*\n{slack_date(report.renewal)}")
    fields.extend(f"*{fit(k, 200)}*\n{fit(v, FIELD_TEXT_MAX - 210)}" for k, v in report.other_fields)
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Read {slack_date(report.read_at)}"
                                               + (" · simulated" if report.simulated else "")}]}
    room = MAX_BLOCKS - len(blocks) - 1  # keep the footer
    chunks = [fields[i:i + FIELDS_PER_SECTION] for i in range(0, len(fields), FIELDS_PER_SECTION)]
    if len(chunks) > room:
        hidden = sum(len(c) for c in chunks[room - 1:])
        chunks = chunks[: room - 1] + [[f"*…*\n{hidden} more fields not shown"]]
    for chunk in chunks:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _trim(f, FIELD_TEXT_MAX)} for f in chunk]})
    blocks.append(footer)
    return blocks, fallback_text(report)


# --- several accounts (QUOTA_ACCOUNTS_FILE) ---------------------------------------------------------

# Per-account caps (before escaping), so that one account's line stays far inside a section.
POOL_NAME_MAX = 80
POOL_TEXT_MAX = 60
POOL_SENTENCE_MAX = 300


def _figures(report: QuotaReport) -> str:
    """``12.06 h of 15 h``, ``190 min of 200 min``, ``25 min``: the account's headline without "left"."""
    if report.remaining is None:
        return "fast time unknown"
    if report.total is None:
        return str(report.remaining)
    return f"{report.remaining} of {'~' if report.total_derived else ''}{report.total}"


def pool_line(account: AccountReading) -> str:
    """One account as mrkdwn: level, *name*, figures; then bar, percent, job mode, renewal and age.
    A failed account: ``:x: *name*`` and its one-line reason, marked as not in the sum."""
    name = escape(_cut(account.name, POOL_NAME_MAX))  # cut, then escaped: a cut never lands inside an escape
    report = account.report
    if report is None:
        sentence = user_sentence(account.error) if account.error is not None else "No reading."
        return f":x: *{name}*: {escape(_cut(sentence, POOL_SENTENCE_MAX))} _(not in the sum)_"
    first = f"{LEVEL_EMOJI[report.level]} *{name}*  {_figures(report)}"
    if report.remaining is None:
        first += " _(not in the sum)_"
    details = []
    if report.percent is not None:
        details.append(f"`{report.progress_bar(10)}` *{report.percent:.2f}%*")
    if report.job_mode:
        details.append(escape(_cut(report.job_mode, POOL_TEXT_MAX)))
    if report.renewal:
        day = report.renewal.astimezone(timezone.utc).strftime("%Y-%m-%d")
        details.append(f"renews {slack_date(report.renewal, '{date_short_pretty}', fallback=day)}")
    if (age := report.age_text()) is not None:
        details.append(f":clock3: {age}")
    if report.simulated:
        details.append("_simulated_")
    return first + ("\n" + " · ".join(details) if details else "")


def pool_fallback_text(report: PoolReport) -> str:
    text = f"Midjourney fast time: {report.headline}"
    if report.percent is not None:
        text += f" ({report.percent:.2f}%)"
    simulated = [a for a in report.answered if a.report.simulated]  # type: ignore[union-attr]  # answered rows carry a report
    partly = "partly " if len(simulated) < len(report.answered) else ""
    return escape(text + (f" [{partly}simulated]" if simulated else ""))


def render_pool(report: PoolReport) -> tuple[list[dict[str, Any]], str]:
    """(blocks, plain-text fallback) for several accounts: the sum in the header, the pooled bar, one
    section per account in order (several per section when there are too many for 50 blocks), a footer."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"Midjourney fast time: {report.headline}", HEADER_MAX)}},
    ]
    if report.percent is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text":
                       f"{LEVEL_EMOJI[report.level]} `{report.progress_bar(20)}` *{report.percent:.2f}%* left"}})
    if report.pace:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f":chart_with_downwards_trend: {fit(report.pace, 500)}"}]})
    simulated = [a.name for a in report.answered if a.report.simulated]  # type: ignore[union-attr]  # answered rows carry a report
    if simulated:  # only these: the others are real readings
        names = escape(_cut(", ".join(simulated), 1000))  # cut, then escaped
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                       f":warning: *Simulated readings* from {names}: made up by the built-in simulator, "
                       "not read from Midjourney."}]})
    blocks.append({"type": "divider"})
    answered = len([a for a in report.accounts if a.report is not None])
    footer_text = f"Read {slack_date(report.read_at)} · {answered} of {len(report.accounts)} accounts answered"
    partly = "partly " if len(simulated) < answered else ""
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": footer_text
                                               + (f" · {partly}simulated" if simulated else "")}]}
    lines = [_trim(pool_line(a), SECTION_TEXT_MAX) for a in report.accounts]
    room = MAX_BLOCKS - len(blocks) - 1  # keep the footer
    if len(lines) <= room:
        groups: list[list[str]] = [[line] for line in lines]
    else:  # pack several accounts into one section, then say how many did not fit
        groups = []
        for index, line in enumerate(lines):
            if groups and len("\n".join([*groups[-1], line])) <= SECTION_TEXT_MAX:
                groups[-1].append(line)
            elif len(groups) < room:
                groups.append([line])
            else:
                hidden = len(lines) - index
                while len("\n".join(groups[-1])) + 50 > SECTION_TEXT_MAX and len(groups[-1]) > 1:
                    groups[-1].pop()
                    hidden += 1
                groups[-1].append(f"…and {hidden} more accounts not shown")
                break
    texts = [_trim("\n".join(group), SECTION_TEXT_MAX) for group in groups]
    blocks.extend({"type": "section", "text": {"type": "mrkdwn", "text": t}} for t in texts)
    blocks.append(footer)
    return blocks, pool_fallback_text(report)


def render_reading(outcome: QuotaReport | PoolReport) -> tuple[list[dict[str, Any]], str]:
    """(blocks, fallback) for what the service answered: one account's reading or the pooled one."""
    return render_pool(outcome) if isinstance(outcome, PoolReport) else render_report(outcome)


def render_error(exc: BaseException) -> tuple[list[dict[str, Any]], str]:
    """The one line for a failure, escaped (it may repeat what a user typed), as blocks and fallback."""
    sentence = fit(user_sentence(exc), SECTION_TEXT_MAX - 4)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": f":x: {sentence}"}}], sentence


def render_text(text: str) -> tuple[list[dict[str, Any]], str]:
    """One section (and the same text as the fallback): a `Mrkdwn` as it is, any other text escaped."""
    shown = _trim(text, SECTION_TEXT_MAX) if isinstance(text, Mrkdwn) else fit(text, SECTION_TEXT_MAX)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}], shown


# --- /quota-schedule answers ----------------------------------------------------------------------

def _next_run(moment: datetime, zone: str) -> str:
    """The reader's local time, and the wall-clock time in the schedule's own timezone."""
    wall = f"{moment.strftime('%Y-%m-%d %H:%M')} {zone}"
    return f"{slack_date(moment, '{date_short_pretty} {time}', fallback=wall)} ({wall})"


def schedule_added_text(view: ScheduleView) -> Mrkdwn:
    runs = "\n".join(f"• {_next_run(t, view.timezone)}" for t in view.next_runs)
    return Mrkdwn(f"Schedule *#{view.id}* added: `{_code(view.when)}` ({escape(view.timezone)}) in <#{view.channel}>."
                  f"\nNext runs:\n{runs}")


def schedule_line(view: ScheduleView) -> str:
    next_run = f"next {slack_date(view.next_runs[0])}" if view.next_runs else "no next run"
    state = f" :warning: failing: {fit(view.failing, VALUE_MAX)}" if view.failing else ""
    origin = " (from QUOTA_SCHEDULES)" if view.source == "config" else ""
    return (f"*#{view.id}* `{_code(view.when)}` ({escape(view.timezone)}) in <#{view.channel}>, "
            f"{next_run}{origin}{state}")


def schedule_list_text(views: list[ScheduleView]) -> Mrkdwn:
    """One line a schedule, within one section's 3,000 characters (cut at a line, saying how many more)."""
    if not views:
        return Mrkdwn("No quota schedules yet. Add one with `/quota-schedule add every 6h`.")
    return _fit_lines([schedule_line(v) for v in views])


VALUE_MAX = 200  # characters of one value (a `when`, a failure) in a line, before escaping


def _code(value: str) -> str:
    """A value for inside a backtick code span: on one line, cut, no backtick to close the span, escaped."""
    return fit(" ".join(value.replace("`", "'").split()), VALUE_MAX)


def _fit_lines(lines: list[str]) -> Mrkdwn:
    """The lines within one section's 3,000 characters, cut at a line, saying how many were left out."""
    text = "\n".join(lines)
    if len(text) <= SECTION_TEXT_MAX:
        return Mrkdwn(text)
    shown: list[str] = []
    for line in lines:
        if len("\n".join([*shown, line])) > SECTION_TEXT_MAX - 60:
            break
        shown.append(line)
    return Mrkdwn("\n".join(shown) + f"\n…and {len(lines) - len(shown)} more.")


# --- /quota-alert answers -------------------------------------------------------------------------

def _alert_account(view: "AlertView") -> str:
    return f"account *{fit(view.account, VALUE_MAX)}*" if view.account else "all accounts"


def alert_added_text(view: "AlertView") -> Mrkdwn:
    text = (f"Alert *#{view.id}* added: below `{_code(view.condition)}` for {_alert_account(view)}, "
            f"posted in <#{view.channel}>.")
    return Mrkdwn(text + (f"\n{fit(view.note, SECTION_TEXT_MAX - 500)}" if view.note else ""))


def alert_line(view: "AlertView") -> str:
    origin = "from QUOTA_ALERTS" if view.source == "config" else "from chat"
    state = f" :warning: failing: {fit(view.failing, VALUE_MAX)}" if view.failing else ""
    return (f"*#{view.id}* below `{_code(view.condition)}` for {_alert_account(view)} in <#{view.channel}> "
            f"({origin}), {escape(view.state_text)}{state}")


def alert_list_text(views: list["AlertView"]) -> Mrkdwn:
    """One line an alert, within one section's 3,000 characters (cut like `schedule_list_text`)."""
    if not views:
        return Mrkdwn("No quota alerts yet. Add one with `/quota-alert add 20%`.")
    return _fit_lines([alert_line(v) for v in views])


def render_history(data: "HistoryData", file_id: str | None) -> tuple[list[dict[str, Any]], str]:
    """`/quota history`: the pace line and the figures, and the chart as an image block that refers to
    the file the bot uploaded (shared nowhere, so a private answer stays private); without a file
    (no files:write scope, or the upload failed), a text sparkline instead."""
    from bot.chart import sparkline
    from bot.history import summary_line

    several = len(data.series) > 1
    title = f"Midjourney fast time, last {data.days} days" + (" (all accounts)" if several else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _trim(
            f":chart_with_downwards_trend: {fit(data.pace, 1000)}\n{fit(summary_line(data), 1900)}", SECTION_TEXT_MAX)}},
    ]
    if data.simulated:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": SIMULATED_NOTE}]})
    if file_id is not None:
        blocks.append({"type": "image", "slack_file": {"id": file_id}, "alt_text": _cut(f"{title}. {data.pace}", 2000)})
    else:
        rows = list(data.series.items()) + ([("pool", data.pooled)] if data.pooled else [])
        text = "\n".join(f"`{sparkline([v for _, v in points], 40) or '-' * 40}` {fit(name, 80) if several else ''}"
                         for name, points in rows)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _trim(text, SECTION_TEXT_MAX)}})
    return blocks, f"{escape(title)}: {fit(data.pace, 1000)}"


def render_alert(notice: "AlertNotice") -> tuple[list[dict[str, Any]], str]:
    """A low-quota alert (plain text; a user group is mentioned only when QUOTA_ALERT_MENTION names one)."""
    mention = f"<!subteam^{notice.mention}> " if notice.mention else ""
    acted = notice.action_line(lambda text: fit(text, 600))  # an alert that acts: what it did (reason escaped)
    if notice.kind == "back":  # it re-armed and switched its account back (or says why not)
        lines = [f":leftwards_arrow_with_hook: *{fit(notice.headline, 500)}*", acted or ""]
    else:
        lines = [f":warning: {mention}*{fit(notice.headline, 500)}*"]
        if acted:
            lines.append(f":turtle: {acted}")
        if notice.pace:
            lines.append(f":chart_with_downwards_trend: {fit(notice.pace, 1000)}")
        if notice.renewal is not None:
            lines.append(f"Renews {slack_date(notice.renewal)}")
        if notice.acted not in ("ok", "already"):
            lines.append("Whoever manages the Midjourney plan can switch to Relax mode or buy more fast time.")
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": _trim("\n".join(lines), SECTION_TEXT_MAX)}}]
    if notice.simulated:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": SIMULATED_NOTE}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"quota-bot alert #{notice.alert_id} · {fit(notice.condition, VALUE_MAX)}"}]})
    if notice.kind == "back":
        return blocks, f"{fit(notice.headline, 500)}. {acted or ''}"
    return blocks, f"{mention}{fit(notice.headline, 500)}" + (f". {acted}" if acted else "")


# --- any command's answer (bot.commands) ------------------------------------------------------------

def usage_mrkdwn(sentence: str) -> Mrkdwn:
    """A sentence with a usage in it: escaped, our backtick spans kept, "Usage:" in bold."""
    return Mrkdwn(fit(sentence, SECTION_TEXT_MAX - 10).replace("Usage:", "*Usage:*", 1))


def usage_failure_text(exc: BaseException) -> Mrkdwn:
    """A usage answer: what the user typed in a code span (escaped, no backtick to break out of it),
    the rest escaped, "Usage:" in bold."""
    before, echo, after = echo_parts(exc)
    if echo is None:
        return usage_mrkdwn(before)
    text = (fit(before, 1200) if before else "") + f"`{_code(echo)}`" + (fit(after, 1500) if after.strip() else after)
    return Mrkdwn(text.replace("Usage:", "*Usage:*", 1))


def who_mention(who: str, platform: str) -> str:
    """Who switched, as Slack shows them: a mention of a Slack user (``<@U…>``), ``alert #N``, or a user
    of another surface by its id (escaped)."""
    if platform == "slack" and who.isalnum() and who.isascii():
        return f"<@{who}>"
    if who.startswith("alert #") or not platform:
        return escape(who[:40])
    return f"{escape(who[:40])} ({escape(platform)})"


def modes_text(answer: Any) -> "Mrkdwn":
    """A speed-mode answer (``ModeList``, ``ModeLog``, ``ModeSwitched``) as mrkdwn."""
    from bot.commands import ModeList, ModeLog
    from bot.modes import NO_SWITCHES, SWITCH_HINT, log_line, mode_lines, switched_text

    if isinstance(answer, ModeList):
        return Mrkdwn(_trim("\n".join(mode_lines(answer.modes, escape)) + "\n" + SWITCH_HINT, SECTION_TEXT_MAX))
    if isinstance(answer, ModeLog):
        lines = [log_line(r, who_mention(r.who, r.platform),
                          slack_date(datetime.fromtimestamp(r.at, timezone.utc), "{date_short} {time}"), escape)
                 for r in answer.rows]
        return Mrkdwn(_trim("*Speed-mode switches*\n" + "\n".join(lines), SECTION_TEXT_MAX) if lines else NO_SWITCHES)
    return Mrkdwn(_trim(switched_text(answer.switched, escape), SECTION_TEXT_MAX))


def render_answer(answer: "Answer") -> tuple[list[dict[str, Any]], str, bool]:
    """(blocks, fallback, public) for any answer but the history's (whose chart is uploaded first)."""
    from bot.alerts import AlertError
    from bot.commands import (AlertAdded, AlertList, Failure, Help, ModeList, ModeLog, ModeSwitched, Notice, Reading,
                              Removed, ScheduleAdded, ScheduleList)
    from bot.errors import UsageError
    from bot.schedules import ScheduleError

    if isinstance(answer, Reading):
        blocks, text = render_reading(answer.outcome)
        return blocks, text, answer.public
    if isinstance(answer, Failure):
        error = answer.error
        if isinstance(error, UsageError):
            blocks, text = render_text(usage_failure_text(error))
        elif isinstance(error, (ScheduleError, AlertError)):
            blocks, text = render_text(f":x: {error.user_message}")
        else:
            blocks, text = render_error(error)
        return blocks, text, False
    if isinstance(answer, Help):
        blocks, text = render_text(Mrkdwn("\n".join(usage_mrkdwn(line) for line in answer.lines)))
    elif isinstance(answer, Notice):
        blocks, text = render_text(answer.text)
    elif isinstance(answer, ScheduleAdded):
        blocks, text = render_text(schedule_added_text(answer.view))
    elif isinstance(answer, ScheduleList):
        blocks, text = render_text(schedule_list_text(answer.views))
    elif isinstance(answer, AlertAdded):
        blocks, text = render_text(alert_added_text(answer.view))
    elif isinstance(answer, AlertList):
        blocks, text = render_text(alert_list_text(answer.views))
    elif isinstance(answer, Removed):
        blocks, text = render_text(answer.text())
    elif isinstance(answer, (ModeList, ModeLog, ModeSwitched)):
        blocks, text = render_text(modes_text(answer))
    else:  # pragma: no cover - every answer type is handled above
        raise TypeError(f"no Slack rendering for {type(answer).__name__}")
    return blocks, text, False
