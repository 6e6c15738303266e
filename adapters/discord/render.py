"""How the Discord reply looks: one embed per answer (a reading, a history with its chart, a notice or an
error), within Discord's embed limits."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import discord

from bot.alerts import AlertError
from bot.commands import (
    AlertAdded,
    AlertList,
    Answer,
    Failure,
    Help,
    HistoryAnswer,
    ModeList,
    ModeLog,
    ModeSwitched,
    Notice,
    Reading,
    Removed,
    ScheduleAdded,
    ScheduleList,
)
from bot.errors import CannotSwitch, SwitchFailed, UsageError, echo_parts, user_sentence
from bot.report import AccountReading, PoolReport, QuotaReport
from bot.schedules import ScheduleError, ScheduleView

if TYPE_CHECKING:
    from bot.alerts import AlertNotice, AlertView
    from bot.history import HistoryData

# Discord's limits (resources/message.mdx, Embed Limits)
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
TOTAL_MAX = 6000

COLOURS = {"ok": 0x2ECC71, "low": 0xE67E22, "critical": 0xE74C3C, "unknown": 0x95A5A6}
ERROR_COLOUR = 0xE74C3C
SIMULATED_NOTE = "⚠️ Simulated reading: no provider credentials are set, the figures are made up."


def _cut(text: str, limit: int) -> str:
    text = text if text.strip() else "—"
    return text if len(text) <= limit else text[: limit - 1] + "…"


VALUE_MAX = 200  # characters of one value a user typed (a `when`, a condition) shown in a line


def discord_code(value: str, limit: int = VALUE_MAX) -> str:
    """What a user typed, shown as an inline code span it cannot break out of: on one line, cut first,
    backticks replaced (a span cannot hold one). Inside a span Discord renders no mention, link or
    markdown, and every message the bot sends also carries ``allowed_mentions: {"parse": []}``."""
    return f"`{_cut(' '.join(value.replace('`', chr(0x2CB)).split()), limit)}`"


def error_sentence(exc: BaseException) -> str:
    """The failure's one line, with the part that repeats what the user typed in a code span."""
    before, echo, after = echo_parts(exc)
    return before if echo is None else f"{before}{discord_code(echo)}{after}"


def render_report(report: QuotaReport) -> discord.Embed:
    lines = []
    if report.percent is not None:
        lines.append(f"`{report.progress_bar(20)}` **{report.percent:.2f}%** left")
    if report.pace:
        lines.append(f"📈 {report.pace}")
    if report.remaining is not None and report.remaining.unit == "minutes":
        lines.append(f"({report.remaining.hours:.2f} h)")
    if report.simulated:
        lines.append(SIMULATED_NOTE)
    if (age := report.age_text()) is not None:
        lines.append(f"🕒 These figures were {age} (the provider's last look at Midjourney).")
    embed = discord.Embed(
        title=_cut(f"Midjourney fast time: {report.headline}", TITLE_MAX),
        description=_cut("\n".join(lines), DESCRIPTION_MAX) if lines else None,
        colour=COLOURS[report.level],
        timestamp=report.read_at,
    )
    fields: list[tuple[str, str, bool]] = []
    if report.job_mode:
        fields.append(("Job mode", report.job_mode, True))
    if report.plan:
        fields.append(("Plan", report.plan if not report.plan_status else f"{report.plan} ({report.plan_status})", True))
    if report.renewal:
        stamp = int(report.renewal.timestamp())
        fields.append(("Renews", f"<t:{stamp}:R> (<t:{stamp}:f>)", True))
    fields.extend((name, value, len(value) <= 40) for name, value in report.other_fields)  # short ones side by side

    footer = "Read" + (" (simulated)" if report.simulated else "")
    embed.set_footer(text=footer)
    budget = TOTAL_MAX - len(embed)  # title, description and footer already count
    shown = 0
    for index, (name, value, inline) in enumerate(fields):
        if shown == FIELDS_MAX - 1 and index < len(fields) - 1:
            rest = len(fields) - index
            name, value, inline = "…", f"{rest} more fields not shown", False
        name, value = _cut(name, FIELD_NAME_MAX), _cut(value, FIELD_VALUE_MAX)
        if len(name) + len(value) > budget:
            room = budget - len(name)
            if room < 20:
                break
            value = _cut(value, room)
        embed.add_field(name=name, value=value, inline=inline)
        budget -= len(name) + len(value)
        shown += 1
        if shown == FIELDS_MAX or name == "…":
            break
    return embed


# --- several accounts (QUOTA_ACCOUNTS_FILE) ---------------------------------------------------------

LEVEL_EMOJI = {"ok": "🟢", "low": "🟠", "critical": "🔴", "unknown": "⚪"}
# Per-account caps, so that 20 accounts fit in one embed before the fair share below has to cut.
POOL_NAME_MAX = 80
POOL_TEXT_MAX = 60
POOL_SENTENCE_MAX = 200


def _figures(report: QuotaReport) -> str:
    """``12.06 h of 15 h``, ``190 min of 200 min``, ``25 min``: the account's headline without "left"."""
    if report.remaining is None:
        return "fast time unknown"
    if report.total is None:
        return str(report.remaining)
    return f"{report.remaining} of {'~' if report.total_derived else ''}{report.total}"


def _pool_field(account: AccountReading) -> tuple[str, str]:
    """(field name, field value) for one account: figures, bar and details, or its one-line reason."""
    name = discord.utils.escape_markdown(_cut(account.name, POOL_NAME_MAX))
    report = account.report
    if report is None:
        sentence = _cut(user_sentence(account.error) if account.error is not None else "No reading.", POOL_SENTENCE_MAX)
        return f"✗ {name}", f"*Not in the sum:* {sentence}"
    first = f"**{_figures(report)}**"
    if report.percent is not None:
        first = f"`{report.progress_bar(10)}` {report.percent:.2f}% · {first}"
    if report.remaining is None:
        first += " *(not in the sum)*"
    details = []
    if report.job_mode:
        details.append(discord.utils.escape_markdown(_cut(report.job_mode, POOL_TEXT_MAX)))
    if report.renewal:
        details.append(f"renews <t:{int(report.renewal.timestamp())}:R>")
    if (age := report.age_text()) is not None:
        details.append(f"🕒 {age}")
    if report.simulated:
        details.append("simulated")
    value = first + ("\n" + " · ".join(details) if details else "")
    return f"{LEVEL_EMOJI[report.level]} {name}", value


def render_pool(report: PoolReport) -> discord.Embed:
    """One embed for several accounts: the sum in the title, the pooled bar, then one field per account
    (in order), all within 25 fields and 6,000 characters."""
    lines = []
    if report.percent is not None:
        lines.append(f"`{report.progress_bar(20)}` **{report.percent:.2f}%** left")
    if report.pace:
        lines.append(f"📈 {report.pace}")
    simulated = [a.name for a in report.answered if a.report.simulated]  # type: ignore[union-attr]  # answered rows carry a report
    if simulated:  # only these: the others are real readings
        lines.append(f"⚠️ Simulated readings from {discord.utils.escape_markdown(', '.join(simulated))}: "
                     "made up by the built-in simulator, not read from Midjourney.")
    embed = discord.Embed(
        title=_cut(f"Midjourney fast time: {report.headline}", TITLE_MAX),
        description=_cut("\n".join(lines), DESCRIPTION_MAX) if lines else None,
        colour=COLOURS[report.level],
        timestamp=report.read_at,
    )
    partly = len(simulated) < len(report.answered)
    embed.set_footer(text="Read" + ((" (partly simulated)" if partly else " (simulated)") if simulated else ""))
    fields = [_pool_field(a) for a in report.accounts]
    if len(fields) > FIELDS_MAX:
        rest = len(fields) - (FIELDS_MAX - 1)
        fields = fields[: FIELDS_MAX - 1] + [("…", f"{rest} more accounts not shown")]
    budget = TOTAL_MAX - len(embed)  # title, description and footer already count
    for index, (name, value) in enumerate(fields):
        share = budget // (len(fields) - index)  # what a short field leaves over goes to the next ones
        name = _cut(name, min(FIELD_NAME_MAX, max(2, share // 3)))
        value = _cut(value, min(FIELD_VALUE_MAX, max(2, share - len(name))))
        embed.add_field(name=name, value=value, inline=False)
        budget -= len(name) + len(value)
    return embed


def render_reading(outcome: QuotaReport | PoolReport) -> discord.Embed:
    """The embed for what the service answered: one account's reading or the pooled one."""
    return render_pool(outcome) if isinstance(outcome, PoolReport) else render_report(outcome)


def render_error(exc: BaseException) -> discord.Embed:
    return discord.Embed(title="Quota unavailable", description=_cut(error_sentence(exc), DESCRIPTION_MAX),
                         colour=ERROR_COLOUR)


def render_notice(text: str, *, ok: bool = True) -> discord.Embed:
    return discord.Embed(description=_cut(text, DESCRIPTION_MAX), colour=COLOURS["ok"] if ok else ERROR_COLOUR)


def schedule_added_text(view: ScheduleView) -> str:
    runs = "\n".join(f"• <t:{int(t.timestamp())}:F>" for t in view.next_runs)
    return (f"Schedule **#{view.id}** added: {discord_code(view.when)} ({view.timezone}) in <#{view.channel}>.\n"
            f"Next runs:\n{runs}")


def schedule_line(view: ScheduleView) -> str:
    next_run = f"next <t:{int(view.next_runs[0].timestamp())}:R>" if view.next_runs else "no next run"
    state = f" ⚠️ failing: {_cut(view.failing, VALUE_MAX)}" if view.failing else ""
    origin = " (from QUOTA_SCHEDULES)" if view.source == "config" else ""
    return f"**#{view.id}** {discord_code(view.when)} ({view.timezone}) in <#{view.channel}>, {next_run}{origin}{state}"


def schedule_list_text(views: list[ScheduleView]) -> str:
    """One line a schedule, cut at a line (never inside a mention or a code span) to fit one embed
    description, saying how many more there are (as `alert_list_text`)."""
    if not views:
        return "No quota schedules yet. Add one with `/quota-schedule add`."
    return _fit_lines([schedule_line(v) for v in views], DESCRIPTION_MAX)


# --- /quota-alert answers -------------------------------------------------------------------------

def _alert_account(view: "AlertView") -> str:
    return f"account **{discord.utils.escape_markdown(view.account)}**" if view.account else "all accounts"


def alert_added_text(view: "AlertView") -> str:
    text = (f"Alert **#{view.id}** added: below {discord_code(view.condition)} for {_alert_account(view)}, "
            f"posted in <#{view.channel}>.")
    return text + (f"\n{view.note}" if view.note else "")


def alert_line(view: "AlertView") -> str:
    origin = "from QUOTA_ALERTS" if view.source == "config" else "from chat"
    state = f" ⚠️ failing: {_cut(view.failing, VALUE_MAX)}" if view.failing else ""
    return (f"**#{view.id}** below {discord_code(view.condition)} for {_alert_account(view)} in <#{view.channel}> ({origin}), "
            f"{view.state_text}{state}")


def alert_list_text(views: list["AlertView"]) -> str:
    """One line an alert, cut at a line (never inside a channel mention) to fit one embed description."""
    if not views:
        return "No quota alerts yet. Add one with `/quota-alert add`."
    return _fit_lines([alert_line(v) for v in views], DESCRIPTION_MAX)


def _fit_lines(lines: list[str], limit: int) -> str:
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    shown: list[str] = []
    for line in lines:
        if len("\n".join([*shown, line])) > limit - 60:
            break
        shown.append(line)
    return "\n".join(shown) + f"\n…and {len(lines) - len(shown)} more."


CHART_FILENAME = "quota-history.png"


def render_history(data: "HistoryData", with_chart: bool = True) -> discord.Embed:
    """The `/quota-history` answer: the pace line and the figures, the chart as the embed's image
    (the PNG goes along as an attachment named CHART_FILENAME)."""
    from bot.history import summary_line

    several = len(data.series) > 1
    lines = [f"📈 {data.pace}", summary_line(data)]
    if data.simulated:
        lines.append(SIMULATED_NOTE)
    embed = discord.Embed(title=_cut(f"Midjourney fast time, last {data.days} days" + (" (all accounts)" if several else ""),
                                     TITLE_MAX),
                          description=_cut("\n".join(lines), DESCRIPTION_MAX), colour=COLOURS["ok"])
    if with_chart:
        embed.set_image(url=f"attachment://{CHART_FILENAME}")
    return embed


def render_alert(notice: "AlertNotice") -> discord.Embed:
    """A low-quota alert: the headline, the pace and forecast, the renewal, who can act."""
    acted = notice.action_line(discord.utils.escape_markdown)  # an alert that acts: what it did
    if notice.kind == "back":  # it re-armed and switched its account back (or says why not)
        embed = discord.Embed(title=_cut(f"↩️ {notice.headline}", TITLE_MAX), description=_cut(acted or "", DESCRIPTION_MAX),
                              colour=COLOURS["ok"])
        embed.set_footer(text=f"quota-bot alert #{notice.alert_id} · {notice.condition}")
        return embed
    lines = []
    if acted:
        lines.append(f"🐢 {acted}")
    if notice.pace:
        lines.append(f"📈 {notice.pace}")
    if notice.renewal is not None:
        stamp = int(notice.renewal.timestamp())
        lines.append(f"Renews <t:{stamp}:R> (<t:{stamp}:f>)")
    if notice.acted not in ("ok", "already"):
        lines.append("Whoever manages the Midjourney plan can switch to Relax mode or buy more fast time."
                     + (f" {SIMULATED_NOTE}" if notice.simulated else ""))
    elif notice.simulated:
        lines.append(SIMULATED_NOTE)
    embed = discord.Embed(title=_cut(f"⚠️ {notice.headline}", TITLE_MAX), description=_cut("\n".join(lines), DESCRIPTION_MAX),
                          colour=COLOURS["critical"])
    embed.set_footer(text=f"quota-bot alert #{notice.alert_id} · {notice.condition}")
    return embed


def who_mention(who: str, platform: str) -> str:
    """Who switched, as Discord shows them: a mention of a Discord user (never pinged: allowed mentions
    are none), ``alert #N``, or a user of another surface by its id."""
    if platform == "discord" and who.isdigit():
        return f"<@{who}>"
    if who.startswith("alert #") or not platform:
        return discord.utils.escape_markdown(who[:40])
    return f"{discord.utils.escape_markdown(who[:40])} ({platform})"


def render_modes(answer: ModeList | ModeLog | ModeSwitched) -> discord.Embed:
    """A speed-mode answer: each account's mode, the last switches, or the switch just done."""
    from bot.modes import NO_SWITCHES, SWITCH_HINT, log_line, mode_lines, switched_text

    esc = discord.utils.escape_markdown
    if isinstance(answer, ModeList):
        text = "\n".join(mode_lines(answer.modes, esc)) + "\n" + SWITCH_HINT
        return discord.Embed(title="Speed mode", description=_cut(text, DESCRIPTION_MAX), colour=COLOURS["ok"])
    if isinstance(answer, ModeLog):
        lines = [log_line(r, who_mention(r.who, r.platform), f"<t:{int(r.at)}:f>", esc) for r in answer.rows]
        return discord.Embed(title="Speed-mode switches", description=_cut("\n".join(lines) or NO_SWITCHES,
                                                                            DESCRIPTION_MAX), colour=COLOURS["ok"])
    return render_notice(switched_text(answer.switched, esc))


def render_answer(answer: Answer) -> dict[str, Any]:
    """What edits the deferred response for any command's answer: ``embed``, and ``attachments`` (the
    chart, named CHART_FILENAME) for a history."""
    if isinstance(answer, Reading):
        return {"embed": render_reading(answer.outcome)}
    if isinstance(answer, HistoryAnswer):
        return {"embed": render_history(answer.data),
                "attachments": [discord.File(io.BytesIO(answer.png), filename=CHART_FILENAME)]}
    if isinstance(answer, Failure):
        error = answer.error  # a refused schedule or alert is a notice; a reading that failed, "Quota unavailable"
        if isinstance(error, (ScheduleError, AlertError, UsageError, CannotSwitch, SwitchFailed)):
            return {"embed": render_notice(error_sentence(error), ok=False)}
        return {"embed": render_error(error)}
    if isinstance(answer, Notice):
        return {"embed": render_notice(answer.text, ok=answer.ok)}
    if isinstance(answer, ScheduleAdded):
        text = schedule_added_text(answer.view)
    elif isinstance(answer, ScheduleList):
        text = schedule_list_text(answer.views)
    elif isinstance(answer, AlertAdded):
        text = alert_added_text(answer.view)
    elif isinstance(answer, AlertList):
        text = alert_list_text(answer.views)
    elif isinstance(answer, Removed):
        return {"embed": render_notice(answer.text(), ok=answer.ok)}
    elif isinstance(answer, Help):
        text = "\n".join(answer.lines)
    elif isinstance(answer, (ModeList, ModeLog, ModeSwitched)):
        return {"embed": render_modes(answer)}
    else:  # pragma: no cover - every answer type is handled above
        raise TypeError(f"no Discord rendering for {type(answer).__name__}")
    return {"embed": render_notice(text)}
