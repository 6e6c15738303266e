"""How a reading looks in the terminal (the CLI and the console chat)."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.errors import user_sentence
from bot.report import QuotaReport

_LEVEL_WORD = {"ok": "OK", "low": "LOW", "critical": "CRITICAL", "unknown": "?"}


def _when(moment: datetime, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    delta = (moment - now).total_seconds()
    days, rest = divmod(abs(int(delta)), 86400)
    hours = rest // 3600
    span = f"{days}d {hours}h" if days else f"{hours}h {rest % 3600 // 60}m"
    relative = f"in {span}" if delta >= 0 else f"{span} ago"
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M %Z')} ({relative})"


def render_report(report: QuotaReport, width: int = 24) -> str:
    lines = []
    if report.simulated:
        lines.append("[SIMULATED reading: no provider credentials are set; figures are made up]")
    lines.append(f"Midjourney fast time: {report.headline}")
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
