"""The Discord adapter: `/quota`, `/quota-schedule` and `/quota-alert` as real app commands (discord.py 2.x).

Defer first, work later: the handler defers before anything that can wait, then edits the original
response with the embed. Commands are synced once, in ``setup_hook`` (never in ``on_ready``, which
runs again on every reconnect). No privileged intent is needed: ``Intents.none()``.

Replicas: with ``gateway_lease`` (``bot.replicas.Lease`` on the store's lock ``discord-gateway``, set by
the runtime) every replica logs in, so REST works everywhere (scheduled and alert posts go out from any
replica), but only the lease's holder connects the gateway, and it registers the commands (once per
process, when it first holds the lease). The others try every 5 s; when the holder dies its database
connection closes, the lock is free and one of them connects. A holder that loses the lock to another
replica (after a database restart) closes its gateway connection and stands by.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters import startup
from bot import metrics
from bot.alerts import AlertError, AlertNotice
from bot.errors import PostError, QuotaError
from bot.history import history_chart
from bot.report import PoolReport, QuotaReport
from bot.schedules import ScheduleError, ScheduleManager
from bot.service import QuotaService
from bot.settings import Settings

from .render import (CHART_FILENAME, alert_added_text, alert_list_text, error_sentence, render_alert, render_error,
                     render_history, render_notice, render_reading, schedule_added_text, schedule_list_text)

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
MANAGE_HINT = "Only members with the Manage Server permission can manage quota {what}."
NOT_AVAILABLE = "{What} are not available on this bot."


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

    def __init__(self, settings: Settings, service: QuotaService, schedules: ScheduleManager | None = None) -> None:
        assert settings.discord_bot_token is not None
        self._token = settings.discord_bot_token
        self._settings = settings
        self.service = service
        self.schedules = schedules
        self.client = _Client(self)
        self._task: asyncio.Task[None] | None = None
        self.synced = 0
        self.registrations: list[tuple[str, str | None]] = []  # (where, why it failed or None), each sync
        self.gateway_lease: Any = None  # bot.replicas.Lease: connect the gateway only while holding it
        self.gateway_held = False
        self._register(self.client.tree)

    def __repr__(self) -> str:
        return f"DiscordAdapter(guilds={self._settings.discord_guild_ids})"

    # --- lifecycle ------------------------------------------------------------------------------
    def mount(self, app: Any) -> None:
        return None

    async def start(self) -> None:
        await self.login()
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
        self.client.ws = None  # type: ignore[assignment]

    async def stop(self) -> None:
        # discord.py's READY handler may still wait for guilds (2 s); stopped now, it would fail after close
        ready = getattr(getattr(self.client, "_connection", None), "_ready_task", None)
        if ready is not None and not ready.done():
            ready.cancel()
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
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

    # --- commands -------------------------------------------------------------------------------
    def _register(self, tree: app_commands.CommandTree) -> None:
        async def answer_quota(interaction: discord.Interaction, public: bool, account: str | None) -> None:
            await self._defer(interaction, ephemeral=not public)
            outcome = "ok"
            try:
                embed = render_reading(await self.service.get_report(account))
            except Exception as exc:
                embed, outcome = self._error_embed(exc, "/quota"), "error"
            await interaction.edit_original_response(embed=embed)
            metrics.COMMANDS.labels("discord", "quota", outcome).inc()

        names = tuple(getattr(self.service, "names", ()))
        if not names:  # one account: no option to choose one
            @tree.command(name="quota", description="How much Midjourney fast time is left")
            @app_commands.describe(public="Show the answer to everyone in the channel (default: only you)")
            async def quota(interaction: discord.Interaction, public: bool = False) -> None:
                await answer_quota(interaction, public, None)
        else:  # an accounts file: `account` (autocompleted over the names) reads one of them
            @tree.command(name="quota", description="How much Midjourney fast time is left, across the accounts")
            @app_commands.describe(public="Show the answer to everyone in the channel (default: only you)",
                                   account="Only this account (default: all of them, with the sum)")
            async def quota_accounts(interaction: discord.Interaction, public: bool = False,
                                     account: str | None = None) -> None:
                await answer_quota(interaction, public, account.strip().lower() if account else None)

            @quota_accounts.autocomplete("account")
            async def account_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
                typed = current.strip().lower()
                return [app_commands.Choice(name=n, value=n) for n in names if typed in n][:25]

        async def answer_history(interaction: discord.Interaction, days: int, public: bool, account: str | None) -> None:
            await self._defer(interaction, ephemeral=not public)
            try:
                data, png = await history_chart(self.service, days, account)
            except Exception as exc:
                await interaction.edit_original_response(embed=self._error_embed(exc, "/quota-history"))
                metrics.COMMANDS.labels("discord", "quota-history", "error").inc()
                return
            metrics.COMMANDS.labels("discord", "quota-history", "ok").inc()
            await interaction.edit_original_response(
                embed=render_history(data), attachments=[discord.File(io.BytesIO(png), filename=CHART_FILENAME)])

        if not names:
            @tree.command(name="quota-history", description="Fast time over the last days: pace, forecast and a chart")
            @app_commands.describe(days="How many days back (1-90, default 30)",
                                   public="Show the answer to everyone in the channel (default: only you)")
            async def quota_history(interaction: discord.Interaction, days: app_commands.Range[int, 1, 90] = 30,
                                    public: bool = False) -> None:
                await answer_history(interaction, days, public, None)
        else:
            @tree.command(name="quota-history", description="Fast time over the last days: pace, forecast and a chart")
            @app_commands.describe(days="How many days back (1-90, default 30)",
                                   public="Show the answer to everyone in the channel (default: only you)",
                                   account="Only this account (default: all of them and the pool)")
            async def quota_history_accounts(interaction: discord.Interaction, days: app_commands.Range[int, 1, 90] = 30,
                                             public: bool = False, account: str | None = None) -> None:
                await answer_history(interaction, days, public, account.strip().lower() if account else None)

            @quota_history_accounts.autocomplete("account")
            async def history_account_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
                typed = current.strip().lower()
                return [app_commands.Choice(name=n, value=n) for n in names if typed in n][:25]

        group = app_commands.Group(
            name="quota-schedule",
            description="Post the quota into a channel on a schedule",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )

        @group.command(name="add", description="Post the quota on a schedule (cron or 'every 6h')")
        @app_commands.describe(when="A cron expression such as '0 9 * * 1-5', or 'every 6h'",
                               channel="Where to post (default: this channel)")
        async def add(interaction: discord.Interaction, when: str,
                      channel: app_commands.Transform[app_commands.AppCommandChannel, PostableChannel] | None = None) -> None:
            if not await self._may_manage(interaction):
                return
            target = str(channel.id if channel is not None else interaction.channel_id)
            view = await self.schedules.add("discord", target, when, created_by=str(interaction.user.id))  # type: ignore[union-attr]
            await interaction.edit_original_response(embed=render_notice(schedule_added_text(view)))

        @group.command(name="list", description="List the quota schedules of this server's bot")
        async def list_(interaction: discord.Interaction) -> None:
            if not await self._may_manage(interaction):
                return
            views = await self.schedules.list("discord")  # type: ignore[union-attr]
            await interaction.edit_original_response(embed=render_notice(schedule_list_text(views)))

        @group.command(name="remove", description="Remove a quota schedule by its id")
        @app_commands.describe(id="The schedule's id, as shown by /quota-schedule list")
        async def remove(interaction: discord.Interaction, id: int) -> None:
            if not await self._may_manage(interaction):
                return
            removed = await self.schedules.remove("discord", id)  # type: ignore[union-attr]
            text = f"Removed schedule #{id}." if removed else f"There is no schedule #{id}; see `/quota-schedule list`."
            await interaction.edit_original_response(embed=render_notice(text, ok=removed))

        tree.add_command(group)
        self._register_alerts(tree, names)

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            await self._answer_error(interaction, getattr(error, "original", error))

    def _register_alerts(self, tree: app_commands.CommandTree, names: tuple[str, ...]) -> None:
        """`/quota-alert add|list|remove`: the same permissions and shape as `/quota-schedule`."""
        group = app_commands.Group(
            name="quota-alert",
            description="Post into a channel when the fast time runs low",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )

        async def answer_add(interaction: discord.Interaction, condition: str, channel: Any, account: str | None) -> None:
            if not await self._may_manage(interaction, "alerts"):
                return
            target = str(channel.id if channel is not None else interaction.channel_id)
            view = await self.service.alerts.add("discord", target, condition, account=account,  # type: ignore[attr-defined]
                                                 created_by=str(interaction.user.id))
            await interaction.edit_original_response(embed=render_notice(alert_added_text(view)))

        condition_help = "Below what: a percentage, an amount or runout, e.g. 20%, 5h, 90m"
        if not names:  # one account: no option to choose one
            @group.command(name="add", description="Post into a channel when the fast time falls below a line")
            @app_commands.describe(condition=condition_help, channel="Where to post (default: this channel)")
            async def add(interaction: discord.Interaction, condition: str,
                          channel: app_commands.Transform[app_commands.AppCommandChannel, PostableChannel] | None = None) -> None:
                await answer_add(interaction, condition, channel, None)
        else:  # an accounts file: `account` (autocompleted over the names) watches one of them
            @group.command(name="add", description="Post into a channel when the fast time falls below a line")
            @app_commands.describe(condition=condition_help, channel="Where to post (default: this channel)",
                                   account="Only this account (default: all of them, the sum)")
            async def add_accounts(interaction: discord.Interaction, condition: str,
                                   channel: app_commands.Transform[app_commands.AppCommandChannel, PostableChannel] | None = None,
                                   account: str | None = None) -> None:
                await answer_add(interaction, condition, channel, account.strip().lower() if account else None)

            @add_accounts.autocomplete("account")
            async def alert_account_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
                typed = current.strip().lower()
                return [app_commands.Choice(name=n, value=n) for n in names if typed in n][:25]

        @group.command(name="list", description="List the quota alerts of this server's bot")
        async def list_(interaction: discord.Interaction) -> None:
            if not await self._may_manage(interaction, "alerts"):
                return
            views = await self.service.alerts.list("discord")  # type: ignore[attr-defined]
            await interaction.edit_original_response(embed=render_notice(alert_list_text(views)))

        @group.command(name="remove", description="Remove a quota alert by its id")
        @app_commands.describe(id="The alert's id, as shown by /quota-alert list")
        async def remove(interaction: discord.Interaction, id: int) -> None:
            if not await self._may_manage(interaction, "alerts"):
                return
            removed = await self.service.alerts.remove("discord", id)  # type: ignore[attr-defined]
            text = f"Removed alert #{id}." if removed else f"There is no alert #{id}; see `/quota-alert list`."
            await interaction.edit_original_response(embed=render_notice(text, ok=removed))

        tree.add_command(group)

    @staticmethod
    async def _defer(interaction: discord.Interaction, *, ephemeral: bool) -> None:
        """Acknowledge at once (the deferral), timed from the handler's start for the ack histogram."""
        started = time.monotonic()
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        metrics.ACK_SECONDS.labels("discord").observe(time.monotonic() - started)

    async def _may_manage(self, interaction: discord.Interaction, what: str = "schedules") -> bool:
        """Defer (ephemeral), then check Manage Server again: the default permission is only a hint.
        ``what``: ``schedules`` or ``alerts``, the manager that must be there."""
        await self._defer(interaction, ephemeral=True)
        command = f"quota-{what[:-1]}"
        if not interaction.permissions.manage_guild:
            await interaction.edit_original_response(embed=render_notice(MANAGE_HINT.format(what=what), ok=False))
            metrics.COMMANDS.labels("discord", command, "refused").inc()
            return False
        metrics.COMMANDS.labels("discord", command, "ok").inc()
        manager = self.schedules if what == "schedules" else getattr(self.service, "alerts", None)
        if manager is None:
            text = NOT_AVAILABLE.format(What=what.capitalize())
            await interaction.edit_original_response(embed=render_notice(text, ok=False))
            return False
        return True

    def _error_embed(self, exc: BaseException, what: str) -> discord.Embed:
        if isinstance(exc, (QuotaError, ScheduleError, AlertError)):
            log.info("%s answered with an error: %s", what, exc)
            if isinstance(exc, (ScheduleError, AlertError)):
                return render_notice(error_sentence(exc), ok=False)
        else:
            log.error("%s failed unexpectedly", what, exc_info=exc)
        return render_error(exc)

    async def _answer_error(self, interaction: discord.Interaction, exc: BaseException) -> None:
        """The one error handler: every failure still answers the user in one line."""
        embed = self._error_embed(exc, f"/{interaction.command.qualified_name if interaction.command else '?'}")
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
