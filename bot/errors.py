"""Every failure a user can meet, as a typed error with its one-line sentence.

All user-facing error texts live here (as slack-bolt keeps its messages in one module), so the
adapters only map an exception class to their platform's idiom and never invent wording.
Nothing in here ever includes a secret: messages are built from status codes and our own words.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every failure a user can cause or meet: ``code`` (for logs and metrics) and
    ``user_message``, the one line every surface shows (each in its own idiom). ``echo``: what the user
    typed, where the sentence repeats it (quoted as ``'echo'``), so adapters can show it safely."""

    code = "error"
    user_message = "Something went wrong; it has been logged."
    echo: str | None = None


class UsageError(UserError):
    """A command given words it does not take: the sentence repeats them and says what it takes."""

    code = "usage"

    def __init__(self, user_message: str, *, echo: str | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.echo = echo


class StartupError(UserError):
    """The bot cannot start (or a command cannot run) as configured: ``str()`` is the one line printed
    before exiting with code 2, naming the setting and what is wrong (never a secret)."""

    code = "startup"

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message

    def __str__(self) -> str:
        return self.user_message


class QuotaError(UserError):
    """Base of every error the quota service raises. ``user_message`` is one plain line for chat."""

    code = "error"
    user_message = "Something went wrong while reading the quota; it has been logged."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or self.user_message)
        self.detail = detail
        if user_message is not None:
            self.user_message = user_message

    def __str__(self) -> str:
        return self.user_message if not self.detail else f"{self.user_message} ({self.detail})"


class BadToken(QuotaError):
    code = "bad_token"
    user_message = "The upstream rejected the API token (NEXTLEG_API_TOKEN); ask the operator to check it."


class RateLimited(QuotaError):
    code = "rate_limited"
    user_message = "The upstream is rate limiting quota requests right now; try again in a minute."


class UpstreamUnavailable(QuotaError):
    code = "unavailable"
    user_message = "The Midjourney API is unavailable right now; try again in a few minutes."


class TimedOut(QuotaError):
    """No result within the reading's deadline, which starts when the ask goes out. When the bot's own
    limiter (one ask per ``interval``) held the ask back for ``queued`` seconds before that, the sentence
    says so: the user waited longer than the deadline, and not because of the upstream."""

    code = "timed_out"

    def __init__(self, seconds: float, detail: str = "", *, queued: float = 0.0,
                 interval: float | None = None) -> None:
        self.seconds = seconds
        self.queued = queued
        sentence = f"Timed out: the Midjourney API gave no answer within {_fmt_seconds(seconds)}."
        if queued >= 1 and interval:
            sentence = sentence[:-1] + (f" (before that, quota-bot held the ask back {_fmt_seconds(round(queued))} "
                                        f"to keep to one ask per {_fmt_seconds(interval)}).")
        super().__init__(detail, user_message=sentence)


class Expired(QuotaError):
    code = "expired"
    user_message = "The Midjourney API gave up on the request before it finished (incomplete); try again."


class BadResponse(QuotaError):
    code = "bad_response"
    user_message = "The Midjourney API sent an answer quota-bot could not read; it has been logged."


class ReplyTooLarge(BadResponse):
    """A provider reply over the size the bot reads (``bot.providers.base.MAX_REPLY_BYTES``)."""

    code = "reply_too_large"

    user_message = "The provider sent a reply too large to read; it has been logged."

    def __init__(self, detail: str = "", *, provider: str = "") -> None:
        super().__init__(f"{provider}: {detail}" if provider else detail)


# Failure codes the upstream sends in ``content`` instead of the info object.
ACCOUNT_CODES: dict[str, str] = {
    "NO_FAST_HOURS": "This Midjourney account has no fast time left.",
    "PLEASE_SUBSCRIBE_TO_MJ_IN_YOUR_DASHBOARD": "This Midjourney account has no active subscription.",
    "QUEUE_FULL": "The Midjourney queue is full right now; try again in a few minutes.",
    "INTERNAL_ERROR": "The Midjourney API had an internal error; try again later.",
    "FAILED_TO_PROCESS_YOUR_COMMAND": "Midjourney failed to process the /info command; try again.",
    "BOT_TOOK_TOO_LONG_TO_PROCESS_YOUR_COMMAND": "Midjourney took too long to answer /info; try again.",
    "JOB_ACTION_RESTRICTED": "Midjourney has restricted actions on this account.",
    "MODERATION_OUTAGE": "Midjourney's moderation service is down; try again later.",
    "FAILED_TO_REQUEST": "The Midjourney API could not send the request to Midjourney; try again.",
    "JOB_QUEUED": "The /info request is still queued at Midjourney; try again shortly.",
}


class AccountProblem(QuotaError):
    """The upstream finished the job but answered with a failure code instead of account info."""

    code = "account"

    def __init__(self, upstream_code: str) -> None:
        self.upstream_code = upstream_code
        sentence = ACCOUNT_CODES.get(upstream_code.strip().upper())
        if sentence is None:
            shown = upstream_code.strip()[:200] or "an empty answer"
            sentence = f"The Midjourney API answered with {shown}."
        super().__init__(f"upstream code {upstream_code[:200]!r}", user_message=sentence)


UNEXPECTED = "Something went wrong; it has been logged."
ECHO_MAX = 100  # characters of something a user typed that a sentence repeats


def shown(value: object, limit: int = ECHO_MAX) -> str:
    """Something a user typed, as a sentence repeats it: on one line, cut to ``limit`` characters.
    Cut here, in plain text, before an adapter escapes it, so no cut ever lands inside an escape."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo_parts(exc: BaseException) -> tuple[str, str | None, str]:
    """(before, echo, after): the user's sentence split around the one thing it repeats of what the
    user typed (the exception's ``echo``, quoted as ``'echo'`` in the sentence), so that each adapter
    can show that part its own safe way (a Discord code span, Slack's escapes). Without an echo:
    (sentence, None, "")."""
    sentence = getattr(exc, "user_message", None) if not isinstance(exc, QuotaError) else exc.user_message
    if not isinstance(sentence, str):
        sentence = user_sentence(exc)
    echo = getattr(exc, "echo", None)
    if isinstance(echo, str) and echo:
        before, quoted, after = sentence.partition(f"'{echo}'")
        if quoted:
            return before, echo, after
    return sentence, None, ""


def user_sentence(exc: BaseException) -> str:
    """The one line a chat user sees for any exception (typed or not)."""
    if isinstance(exc, UserError):
        return exc.user_message
    return UNEXPECTED


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if float(seconds).is_integer():
        return f"{int(seconds)} s"
    return f"{seconds:.1f} s"


class PostError(Exception):
    """A scheduled post that did not go out, as an adapter reports it to the scheduler.

    ``kind``: ``"gone"`` — the channel is lost or the bot lacks permission (the schedule is marked
    failing with ``reason`` until a post succeeds); ``"rate_limited"`` — retry after ``retry_after``
    seconds; ``"transient"`` — a 5xx or network error, retry with backoff a bounded number of times.
    """

    def __init__(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after


class UnknownAccount(QuotaError):
    """A command named an account that the accounts file does not list; the sentence lists the names."""

    code = "unknown_account"

    def __init__(self, name: str, names: tuple[str, ...] | list[str]) -> None:
        self.name, self.names = name, tuple(names)
        listed = ", ".join(self.names) if self.names else "none: this bot reads one account"
        self.echo = shown(name, 40)
        super().__init__(f"unknown account {self.echo!r}", user_message=f"There is no account '{self.echo}'. Accounts: {listed}.")


class CannotSwitch(UserError):
    """The account's provider has no call that switches Midjourney's speed mode."""

    code = "cannot_switch"

    def __init__(self, provider: str, account: str | None = None) -> None:
        self.provider = provider
        where = f" (account {account})" if account else ""
        self.user_message = f"{provider} cannot switch the speed mode{where}."
        super().__init__(self.user_message)


class ModeRefused(QuotaError):
    """Midjourney answered the switch with a refusal: no Relax on the Basic plan, no Turbo on the plan, a
    pending moderation. ``said`` is Midjourney's own sentence (clipped)."""

    code = "mode_refused"

    def __init__(self, mode: str, said: str, detail: str = "") -> None:
        self.mode, self.said = mode, said
        name = {"fast": "Fast", "relax": "Relax", "turbo": "Turbo"}.get(mode, mode)
        text = said.rstrip()
        sentence = f"Midjourney did not switch to {name}: {text}" if text else f"Midjourney did not switch to {name}."
        if text and not text.endswith((".", "!", "?", "…")):
            sentence += "."
        super().__init__(detail or f"refused {mode}: {said!r}", user_message=sentence)


class SwitchFailed(UserError):
    """A switch of the speed mode that did not happen, as the `mode` command and alerts meet it: the
    provider's error (``cause``: its code and sentence), and whether Midjourney or the account said no
    (``refused``) rather than the request not getting through."""

    def __init__(self, cause: UserError, *, refused: bool) -> None:
        super().__init__(cause.user_message)
        self.cause, self.refused = cause, refused
        self.code = cause.code
        self.user_message = cause.user_message
        self.detail = str(getattr(cause, "detail", "") or "")
