"""How a reading looks in the terminal (the CLI and the console chat)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from bot.errors import user_sentence
from bot.report import AccountReading, PoolReport, QuotaReport

if TYPE_CHECKING:
    from bot.alerts import AlertNotice
    from bot.history import HistoryData

_LEVEL_WORD = {"ok": "OK", "low": "LOW", "critical": "CRITICAL", "unknown": "?"}


def _relative(moment: datetime, now: datetime | None = None) -> str:
    """``in 12d 3h``, ``5h 20m ago``."""
    now = now or datetime.now(timezone.utc)
    delta = (moment - now).total_seconds()
    days, rest = divmod(abs(int(delta)), 86400)
    hours = rest // 3600
    span = f"{days}d {hours}h" if days else f"{hours}h {rest % 3600 // 60}m"
    return f"in {span}" if delta >= 0 else f"{span} ago"


def _when(moment: datetime, now: datetime | None = None) -> str:
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M %Z')} ({_relative(moment, now)})"


def render_report(report: QuotaReport, width: int = 24) -> str:
    lines = []
    if report.simulated:
        lines.append("[SIMULATED reading: no provider credentials are set; figures are made up]")
    lines.append(f"Midjourney fast time: {report.headline}")
    if report.pace:
        lines.append(f"  {report.pace}")
    if report.percent is not None:
        lines.append(f"  [{report.progress_bar(width, '#', '-')}] {report.percent:.2f}%  {_LEVEL_WORD[report.level]}")
    rows: list[tuple[str, str]] = []
    if report.job_mode:
        rows.append(("Job mode", report.job_mode))
    if report.plan:
        plan = report.plan if not report.plan_status else f"{report.plan} ({report.plan_status})"
        rows.append(("Plan", plan))
    if report.renewal:
        rows.append(("Renews", _when(report.renewal)))
    rows.extend(report.other_fields)
    age = report.age_text()
    rows.append(("Read at", report.read_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") + (f" ({age})" if age else "")))
    pad = max(len(k) for k, _ in rows)
    lines.extend(f"  {k.ljust(pad)}  {v}" for k, v in rows)
    return "\n".join(lines)


def render_error(exc: BaseException) -> str:
    return f"quota-bot: {user_sentence(exc)}"


# --- several accounts (QUOTA_ACCOUNTS_FILE) ---------------------------------------------------------

POOL_NAME_MAX = 32
POOL_TEXT_MAX = 20
POOL_HEADER = ("Account", "Left", "Fast time", "Job mode", "Renews", "Read")


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split()) or "-"  # one row a line, whatever the provider sent
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figures(report: QuotaReport) -> str:
    """``12.06 h of 15 h``, ``190 min of 200 min``, ``25 min``: the account's headline without "left"."""
    if report.remaining is None:
        return "unknown (not in the sum)"
    if report.total is None:
        return str(report.remaining)
    return f"{report.remaining} of {'~' if report.total_derived else ''}{report.total}"


def _pool_row(account: AccountReading) -> tuple[str, ...]:
    name = _cut(account.name, POOL_NAME_MAX)
    report = account.report
    if report is None:
        sentence = user_sentence(account.error) if account.error is not None else "No reading."
        return (name, f"✗ {_cut(sentence, 300)} (not in the sum)")
    gauge = f"[{report.progress_bar(10, '#', '-')}] {report.percent:6.2f}%" if report.percent is not None else ""
    return (name, _figures(report), gauge, _cut(report.job_mode, POOL_TEXT_MAX) if report.job_mode else "",
            _relative(report.renewal) if report.renewal else "", report.age_text() or "")


def render_pool(report: PoolReport, width: int = 24) -> str:
    """The sum, the pooled bar, then an aligned table with one row per account (in order); a failed
    account's row holds its one-line reason in place of the figures."""
    lines = []
    simulated = [a.name for a in report.answered if a.report.simulated]  # type: ignore[union-attr]  # answered rows carry a report
    if simulated:  # only these: the others are real readings
        lines.append(f"[SIMULATED readings from {', '.join(simulated)}: made up by the built-in simulator]")
    lines.append(f"Midjourney fast time: {report.headline}")
    if report.pace:
        lines.append(f"  {report.pace}")
    if report.percent is not None:
        lines.append(f"  [{report.progress_bar(width, '#', '-')}] {report.percent:.2f}%  {_LEVEL_WORD[report.level]}")
    rows = [_pool_row(a) for a in report.accounts]
    full = [POOL_HEADER, *(r for r in rows if len(r) == len(POOL_HEADER))]
    used = [i for i in range(len(POOL_HEADER)) if i < 2 or any(r[i] for r in full[1:])]  # drop empty columns
    pads = {i: max(len(r[i]) for r in full) for i in used}
    pads[0] = max(pads[0], *(len(r[0]) for r in rows)) if rows else pads[0]
    for row in [POOL_HEADER, *rows]:
        cells = [row[i] for i in used] if len(row) == len(POOL_HEADER) else list(row)
        text = "  ".join(c.ljust(pads[i]) for i, c in zip(used, cells))
        lines.append(f"  {text.rstrip()}")
    lines.append(f"  Read at {report.read_at.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}")
    return "\n".join(lines)


def render_reading(outcome: QuotaReport | PoolReport) -> str:
    """The text for what the service answered: one account's reading or the pooled one."""
    return render_pool(outcome) if isinstance(outcome, PoolReport) else render_report(outcome)


def render_history(data: "HistoryData", width: int = 48) -> str:
    """The console and CLI history: a sparkline per account (and the pool), the pace line, the figures."""
    from bot.chart import sparkline
    from bot.history import summary_line

    several = len(data.series) > 1
    title = f"Midjourney fast time, last {data.days} days" + (" (all accounts)" if several else "")
    lines = (["[SIMULATED history: the figures are made up]"] if data.simulated else []) + [title]
    rows = [(name, points) for name, points in data.series.items()]
    if data.pooled:
        rows.append(("pool", data.pooled))
    pad = max((len(name) for name, _ in rows), default=0) if several else 0
    for name, points in rows:
        label = f"{name.ljust(pad)}  " if several else ""
        now = f"  {points[-1][1]:.1f} h now" if points else "  no readings"
        lines.append(f"  {label}{sparkline([v for _, v in points], width) or '-' * width}{now}")
    lines.append(f"  {data.pace}")
    lines.append(f"  {summary_line(data)}")
    return "\n".join(lines)


def render_alert(notice: "AlertNotice") -> str:
    acted = notice.action_line()  # an alert that acts: what it did
    if notice.kind == "back":  # it re-armed and switched its account back (or says why not)
        return f"ALERT #{notice.alert_id}: {notice.headline}\n  {_plain(acted or '')}"
    lines = [f"ALERT #{notice.alert_id}: {notice.headline}"]
    if acted:
        lines.append(f"  {_plain(acted)}")
    if notice.pace:
        lines.append(f"  {notice.pace}")
    if notice.renewal is not None:
        lines.append(f"  Renews {_when(notice.renewal)}")
    return "\n".join(lines)


# --- any command's answer (bot.commands), in the console chat ----------------------------------------

def _plain(text: str) -> str:
    """Chat markup off for the terminal: backticks and *bold* marks dropped."""
    return text.replace("`", "").replace("*", "")


def _next(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def render_schedules(views: list) -> str:
    if not views:
        return "No quota schedules yet. Add one with /quota-schedule add every 6h."
    lines = []
    for v in views:
        nxt = f"next {_next(v.next_runs[0])}" if v.next_runs else "no next run"
        origin = " (from QUOTA_SCHEDULES)" if v.source == "config" else ""
        failing = f"  failing: {v.failing}" if v.failing else ""
        lines.append(f"  #{v.id} {v.when!r} ({v.timezone}) in {v.platform}:{v.channel}, {nxt}{origin}{failing}")
    return "\n".join(lines)


def render_alerts(views: list) -> str:
    if not views:
        return "No quota alerts yet. Add one with /quota-alert add 20%."
    lines = []
    for v in views:
        origin = "from QUOTA_ALERTS" if v.source == "config" else "from chat"
        who = f"account {v.account}" if v.account else "all accounts"
        failing = f"  failing: {v.failing}" if v.failing else ""
        lines.append(f"  #{v.id} below {v.condition!r} for {who} in {v.platform}:{v.channel} ({origin}), "
                     f"{v.state_text}{failing}")
    return "\n".join(lines)


def render_answer(answer: object) -> str:
    """Any answer but the history's (whose chart is written to a file first)."""
    from bot.commands import (AlertAdded, AlertList, Failure, Help, ModeList, ModeLog, ModeSwitched, Notice, Reading,
                              Removed, ScheduleAdded, ScheduleList)

    if isinstance(answer, Reading):
        return render_reading(answer.outcome)
    if isinstance(answer, Failure):
        from bot.errors import QuotaError

        return render_error(answer.error) if isinstance(answer.error, QuotaError) else _plain(user_sentence(answer.error))
    if isinstance(answer, Help):
        return "\n".join(_plain(line) for line in answer.lines)
    if isinstance(answer, Notice):
        return _plain(answer.text)
    if isinstance(answer, ScheduleAdded):
        v = answer.view
        runs = ", ".join(_next(t) for t in v.next_runs)
        return f"Schedule #{v.id} added: {v.when!r} ({v.timezone}), posted here. Next runs: {runs}"
    if isinstance(answer, ScheduleList):
        return render_schedules(answer.views)
    if isinstance(answer, AlertAdded):
        v = answer.view
        who = f"account {v.account}" if v.account else "all accounts"
        return f"Alert #{v.id} added: below {v.condition!r} for {who}, posted here." + (f"\n{v.note}" if v.note else "")
    if isinstance(answer, AlertList):
        return render_alerts(answer.views)
    if isinstance(answer, Removed):
        return _plain(answer.text())
    if isinstance(answer, (ModeList, ModeLog, ModeSwitched)):
        return render_modes(answer)
    raise TypeError(f"no console rendering for {type(answer).__name__}")


def render_modes(answer: object) -> str:
    """A speed-mode answer in the terminal: each account's mode, the last switches, or the switch done
    (with its announcement: the console is its own channel)."""
    from bot.commands import ModeList, ModeLog, ModeSwitched
    from bot.modes import NO_SWITCHES, SWITCH_HINT, log_line, mode_lines, switched_text

    if isinstance(answer, ModeList):
        return "\n".join(_plain(line) for line in [*mode_lines(answer.modes), SWITCH_HINT])
    if isinstance(answer, ModeLog):
        if not answer.rows:
            return NO_SWITCHES
        return "\n".join("  " + _plain(log_line(r, r.who if r.platform in ("console", "") or r.who.startswith("alert #")
                                                  else f"{r.who} ({r.platform})", _next(datetime.fromtimestamp(r.at))))
                         for r in answer.rows)
    assert isinstance(answer, ModeSwitched)
    return _plain(switched_text(answer.switched))
