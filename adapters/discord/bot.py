"""The Discord adapter: every command of ``bot.commands`` as real app commands (discord.py 2.x).

Defer first, work later; commands are synced once, in ``setup_hook``; no privileged intent. With
replicas only the holder of the ``discord-gateway`` lease connects the gateway; in HTTP mode
(DISCORD_PUBLIC_KEY) there is no gateway (``interactions.py``). Details: docs/architecture.md, "Discord".
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Literal, Optional

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters import startup
from bot import metrics
from bot.alerts import AlertNotice
from bot.commands import Arg, Caller, Command, Commands, Failure, ModeSwitched
from bot.commands.run import Unexpected
from bot.errors import PostError, QuotaError, UserError
from bot.report import PoolReport, QuotaReport
from bot.schedules import ScheduleManager
from bot.service import QuotaService
from bot.settings import Settings

from .calls import account_choices, is_private, manage_check, to_call
from .render import render_alert, render_answer, render_error, render_reading

log = logging.getLogger(__name__)

# What the bot needs in a channel: see it, post, and embed.
BOT_PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, embed_links=True)
POOL_SIZE = 32
# A 429 asking for a longer wait than this is not slept through (it would hold a scheduled post for
# minutes): discord.py raises RateLimited instead, and the scheduler retries after `retry_after`.
MAX_RATELIMIT_WAIT = 30.0  # discord.py's smallest allowed value
# Channels a schedule can post into (a category or a forum takes no plain messages).
POSTABLE = [discord.ChannelType.text, discord.ChannelType.news, discord.ChannelType.voice,
            discord.ChannelType.stage_voice, discord.ChannelType.public_thread,
            discord.ChannelType.private_thread, discord.ChannelType.news_thread]
# What Discord takes: 100 characters of a description (25 autocomplete choices: calls.CHOICES_MAX).
DESCRIPTION_MAX = 100
# A group needs a description of its own (the catalog describes its subcommands).
GROUP_DESCRIPTIONS = {"schedule": "Post the quota into a channel on a schedule",
                      "alert": "Post into a channel when the fast time runs low"}


class _NoIntentWarning(logging.Filter):
    """Drop discord.py's start-up warning about the Guilds intent: we run with ``Intents.none()`` on
    purpose (slash commands need no intent) and an operator should not read it as a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Guilds intent seems to be disabled")


logging.getLogger("discord.state").addFilter(_NoIntentWarning())


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=BOT_PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


def point_library_at(api_base_url: str, gateway_url: str | None) -> None:
    """DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL: redirect discord.py's REST base and gateway."""
    discord.http.Route.BASE = api_base_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class PostableChannel(app_commands.Transformer):
    """A channel option that offers only channels a message can be posted into."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return POSTABLE

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> Any:
        return value  # an AppCommandChannel / AppCommandThread: its id is all a schedule needs


def _short(text: str) -> str:
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def _option(arg: Arg) -> tuple[Any, Any]:
    """(annotation, default) of the callback parameter discord.py turns into ``arg``'s option:
    bool, an integer within the argument's range, an id, a text, an account name (autocompleted), or
    a channel a message can be posted into. Optional arguments default to theirs, or None."""
    annotation: Any = {"bool": bool, "id": int, "text": str, "account": str}.get(arg.kind)
    if arg.kind == "int":
        annotation = app_commands.Range[int, arg.low, arg.high] if arg.low is not None or arg.high is not None else int
    elif arg.kind == "channel":
        annotation = app_commands.Transform[app_commands.AppCommandChannel, PostableChannel]
    elif arg.kind == "choice":  # a menu of the words (discord.py turns a Literal into choices)
        annotation = Literal.__getitem__(tuple(arg.choices))
    if arg.required:
        return annotation, inspect.Parameter.empty
    if arg.default is None:
        return Optional[annotation], None
    return annotation, arg.default


class _Client(discord.Client):
    def __init__(self, adapter: "DiscordAdapter") -> None:
        # The bot never joins voice: no "PyNaCl/davey is not installed" warnings in the operator's log.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        # A bounded pool of kept-alive connections: a burst of interactions reuses them instead of
        # opening one new connection (a TLS handshake, against Discord) per deferral.
        # allowed_mentions none by default: every message, edit and followup carries `{"parse": []}`, so
        # nothing a user typed (echoed back in an answer) can ping; an alert names its role explicitly.
        super().__init__(intents=discord.Intents.none(), max_ratelimit_timeout=MAX_RATELIMIT_WAIT,
                         connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60),
                         allowed_mentions=discord.AllowedMentions.none())
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)

    async def setup_hook(self) -> None:  # runs once per login, not per reconnect
        if self.adapter.gateway_lease is None:  # else the lease's holder registers them (see the module's doc)
            await self.adapter.sync_commands()

    async def on_ready(self) -> None:
        log.info("Discord gateway ready as %s", self.user)


class DiscordAdapter:
    name = "discord"

    def __init__(self, settings: Settings, service: QuotaService, schedules: ScheduleManager | None = None, *,
                 commands: Commands | None = None, gateway_lease: Any = None) -> None:
        assert settings.discord_bot_token is not None
        self._token = settings.discord_bot_token
        self._settings = settings
        self.service = service
        self.schedules = schedules
        # the commands this adapter serves (built by the composition root; a bare one for a lone adapter)
        self.commands = commands or Commands(service, schedules=schedules, history_days=settings.quota_history_days)
        self.client = _Client(self)
        self._task: asyncio.Task[None] | None = None
        self.synced = 0
        self.registrations: list[tuple[str, str | None]] = []  # (where, why it failed or None), each sync
        self.gateway_lease: Any = gateway_lease  # bot.replicas.Lease: connect the gateway only while holding it
        self.gateway_held = False
        self.interactions: Any = None  # HTTP mode (DISCORD_PUBLIC_KEY): interactions arrive as POSTs, no gateway
        if settings.discord_http_mode:
            from .interactions import Interactions

            assert settings.discord_public_key is not None
            self.interactions = Interactions(settings.discord_public_key, self.commands)
            self.gateway_lease = None  # no replica holds the gateway: each answers what reaches it
        self._register(self.client.tree)

    def __repr__(self) -> str:
        return f"DiscordAdapter(guilds={self._settings.discord_guild_ids})"

    # --- lifecycle ------------------------------------------------------------------------------
    def mount(self, app: Any) -> None:
        if self.interactions is not None:
            self.interactions.mount(app)

    async def start(self) -> None:
        await self.login()
        if self.interactions is not None:  # commands registered (setup_hook); posts go out over REST
            log.info("Discord: HTTP mode: interactions are answered at POST /discord/interactions; "
                     "no gateway connection")
            return
        work = self._connect() if self.gateway_lease is None else self._lead()
        self._task = asyncio.get_running_loop().create_task(work, name="discord-gateway")

    async def login(self) -> None:
        """What `run` does before the gateway, and all `check` does: ``GET /users/@me``, the application
        (``GET /oauth2/applications/@me``), then ``setup_hook``, which registers the commands when no
        gateway lease decides who does. Raises ``AdapterStartError`` (one line) after closing the client."""
        point_library_at(self._settings.discord_api_base_url, self._settings.discord_gateway_url)
        try:
            await self.client.login(self._token.get_secret_value())  # also runs setup_hook (the sync)
        except discord.LoginFailure:
            await self.client.close()
            raise startup.discord_rejected() from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            await self.client.close()
            raise startup.discord_unreachable(self._settings.discord_api_base_url, exc) from None
        except BaseException:
            await self.client.close()
            raise

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Discord gateway connection ended; /quota is unavailable in Discord until restart")

    async def _lead(self) -> None:
        """Connect the gateway while holding the lease; stand by while another replica holds it."""
        lease = self.gateway_lease
        try:
            while not self.client.is_closed():
                waited = await lease.acquire()
                if self.client.is_closed():
                    return
                if waited:  # taken over: give a holder that just lost the lock a moment to close its connection
                    await asyncio.sleep(2 * lease.check)
                log.info("Discord: this replica holds the gateway connection")
                self.gateway_held = True
                if not self.synced:
                    await self.sync_commands()
                connection = asyncio.ensure_future(self._connect())
                lost = asyncio.ensure_future(lease.kept())
                try:
                    done, _ = await asyncio.wait({connection, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not connection.done():
                        connection.cancel()
                    await asyncio.gather(connection, lost, return_exceptions=True)
                    self.gateway_held = False
                if connection in done:  # closed by stop(), or ended with an error (logged)
                    return
                await self._close_gateway()
                log.warning("Discord: another replica holds the gateway connection now; this one stands by")
        finally:
            self.gateway_held = False
            await lease.release()

    async def _close_gateway(self) -> None:
        """Close the gateway connection, keeping the login (REST) for posts."""
        ws = getattr(self.client, "ws", None)
        if ws is not None:
            try:
                await ws.close(code=1000)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.client.ws = None  # type: ignore[assignment]  # discord.py types ws as always set; None is its "not connected"

    async def stop(self) -> None:
        if self.interactions is not None:  # answers in progress are sent first
            await self.interactions.stop()
        # discord.py's READY handler may still wait for guilds (2 s); stopped now, it would fail after close
        ready = getattr(getattr(self.client, "_connection", None), "_ready_task", None)
        if ready is not None and not ready.done():
            ready.cancel()
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: the task's end is all we wait for
                pass
        if self.gateway_lease is not None:  # after the connection closed: the next holder never overlaps it
            await self.gateway_lease.release()

    async def sync_commands(self) -> None:
        """Register the commands once per start: in each DISCORD_GUILD_IDS guild, or globally.

        A failed registration is logged and start-up goes on: commands registered before keep
        working, and one unreachable guild does not cost the others their commands."""
        tree = self.client.tree
        app_id = self.client.application_id
        guilds = self._settings.discord_guild_ids
        targets: list[discord.Object | None] = [discord.Object(id=g) for g in guilds] if guilds else [None]
        for guild in targets:
            where = f"in guild {guild.id}" if guild else "globally"
            if guild is not None:
                tree.copy_global_to(guild=guild)
            try:
                commands = await tree.sync(guild=guild)
            except discord.HTTPException as exc:
                hint = (" (is the bot in that server, invited with the applications.commands scope?)"
                        if exc.status == 403 else "")
                failure = f"Discord commands could not be registered {where}: {exc.status} {exc.text[:200]}{hint}"
                log.error("%s", failure)
                self.registrations.append((where, failure))
                continue
            log.info("Discord commands registered %s: %s", where, ", ".join(c.name for c in commands))
            self.registrations.append((where, None))
        self.synced += 1
        if app_id:
            log.info("Invite the bot with: %s", invite_url(app_id))

    # --- commands (declared once in bot.commands; derived and rendered here) ----------------------
    def _register(self, tree: app_commands.CommandTree) -> None:
        """One app command per definition of ``self.commands.all``: `quota`, `quota-history`, and the
        groups `quota-schedule` / `quota-alert` (Manage Server by default, guild only) with their
        subcommands. `help` is not registered: Discord shows every option's description itself."""
        names = self.commands.names

        async def account_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=n, value=n) for n in account_choices(names, current)]

        groups: dict[str, app_commands.Group] = {}
        for command in self.commands.all:
            if command.path == ("help",):
                continue
            callback = self._callback(command, account_names)
            if len(command.path) == 1:
                tree.add_command(app_commands.Command(name=command.family, description=_short(command.summary),
                                                      callback=callback))
                continue
            group = groups.get(command.family)
            if group is None:
                group = groups[command.family] = app_commands.Group(
                    name=command.family, description=GROUP_DESCRIPTIONS[command.path[0]],
                    default_permissions=discord.Permissions(manage_guild=True) if command.manage else None,
                    guild_only=True)
                tree.add_command(group)
            group.add_command(app_commands.Command(name=command.path[1], description=_short(command.summary),
                                                   callback=callback, parent=group))

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            await self._answer_error(interaction, getattr(error, "original", error))

    def _callback(self, command: Command, account_names: Any) -> Any:
        """The callback discord.py calls for ``command``, its signature synthesized from the arguments
        (discord.py reads the options from it: types, ranges, defaults, descriptions, autocomplete)."""
        async def callback(interaction: discord.Interaction, **values: Any) -> None:
            await self._run(interaction, command, values)

        parameters = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=discord.Interaction)]
        for arg in command.args:
            annotation, default = _option(arg)
            parameters.append(inspect.Parameter(arg.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                                default=default))
        callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]  # read by discord.py
        callback.__qualname__ = callback.__name__ = command.family.replace("-", "_") + "".join(
            f"_{word}" for word in command.path[1:])
        derived: Any = app_commands.describe(**{a.name: _short(a.help) for a in command.args})(callback)
        if any(a.kind == "account" for a in command.args):
            derived = app_commands.autocomplete(account=account_names)(derived)
        return derived

    async def _run(self, interaction: discord.Interaction, command: Command, values: dict[str, Any]) -> None:
        """Defer at once (only the caller sees it unless `public`; manage commands always private), run
        the command, edit the original response with its answer."""
        await self._defer(interaction, ephemeral=is_private(command, values))
        caller = Caller("discord", str(interaction.channel_id), str(interaction.user.id),
                        manage_check(interaction.permissions.manage_guild))
        answer = await self.commands.run(caller, to_call(command, values))
        await interaction.edit_original_response(**render_answer(answer))
        if isinstance(answer, ModeSwitched):  # one public line for the channel: who switched what
            try:
                await interaction.followup.send(answer.announcement(f"<@{interaction.user.id}>"), ephemeral=False)
            except discord.HTTPException as exc:
                log.warning("/quota-mode: the public line could not be posted (%s %s)", exc.status, exc.text[:150])

    @staticmethod
    async def _defer(interaction: discord.Interaction, *, ephemeral: bool) -> None:
        """Acknowledge at once (the deferral), timed from the handler's start for the ack histogram."""
        started = time.monotonic()
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        metrics.ACK_SECONDS.labels("discord").observe(time.monotonic() - started)

    async def _answer_error(self, interaction: discord.Interaction, exc: BaseException) -> None:
        """The last resort (commands never raise; this sees a failed option transform or a failed edit):
        the user still gets one line, the detail goes to the log."""
        what = f"/{interaction.command.qualified_name if interaction.command else '?'}"
        if isinstance(exc, UserError):
            log.info("%s answered with an error: %s", what, exc)
        else:
            log.error("%s failed unexpectedly", what, exc_info=exc)
        embed = render_answer(Failure(exc if isinstance(exc, UserError) else Unexpected()))["embed"]
        try:
            if interaction.response.is_done():
                await interaction.edit_original_response(embed=embed)
            else:
                await interaction.response.send_message(embed=embed, ephemeral=True)
        except discord.HTTPException:
            log.exception("could not send the error answer")

    # --- scheduled posts ------------------------------------------------------------------------
    async def post(self, channel: str, outcome: QuotaReport | PoolReport | QuotaError | AlertNotice) -> None:
        content, mentions = None, discord.AllowedMentions.none()  # nobody is pinged unless configured
        if isinstance(outcome, AlertNotice):
            embed = render_alert(outcome)
            if outcome.mention:  # QUOTA_ALERT_MENTION names a role
                content = f"<@&{outcome.mention}>"
                mentions = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(int(outcome.mention))])
        else:
            embed = render_error(outcome) if isinstance(outcome, BaseException) else render_reading(outcome)
        try:
            await self.client.get_partial_messageable(int(channel)).send(content=content, embed=embed,
                                                                         allowed_mentions=mentions)
        except (discord.Forbidden, discord.NotFound) as exc:
            raise PostError("gone", f"Discord {exc.status}: {exc.text or 'no access to the channel'}"[:200]) from None
        except discord.RateLimited as exc:
            raise PostError("rate_limited", "Discord rate limit", retry_after=exc.retry_after) from None
        except discord.HTTPException as exc:
            if exc.status == 429:
                raise PostError("rate_limited", "Discord rate limit", retry_after=1.0) from None
            kind = "transient" if exc.status >= 500 else "gone"
            raise PostError(kind, f"Discord {exc.status}: {exc.text[:150]}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise PostError("transient", f"network: {type(exc).__name__}") from None
