"""Faults benchmark: what a hostile provider costs the bot and the provider.

1. Requests per reading when every poll is answered 429 with ``Retry-After: 0`` (and 503 with a
   negative one, and a date in the past), on the TheNextLeg protocol, for a reading deadline of
   ``--deadline`` seconds. Goal: at most deadline ÷ 1 s (the retry floor).
2. The peak resident memory of the real ``quota-bot quota`` process while a 50 MB reply arrives (with
   a Content-Length and chunked, as the ask's answer and as a poll's). Goal: < 100 MB.

    python -m bench.bench_faults [--deadline 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time

from aiohttp import web

from bot.errors import QuotaError
from bot.providers.base import AskLimiter
from bot.providers.nextleg import NextLegProvider
from bot.simulator import Scripted, UpstreamSimulator

TOKEN = "bench-faults-token"
BIG = 50 * 1024 * 1024


async def hammering(deadline: float) -> None:
    past = "Wed, 01 Jan 2025 00:00:00 GMT"
    for status, retry_after in ((429, "0"), (503, "-5"), (429, past)):
        async with UpstreamSimulator(complete_after=0.1, require_token=TOKEN) as sim:
            sim.poll_script.extend(Scripted(status, {"success": False}, headers={"Retry-After": retry_after})
                                   for _ in range(1_000_000))
            provider = NextLegProvider(base_url=sim.base_url, token=TOKEN, limiter=AskLimiter(0.05),
                                       poll_timeout=deadline)
            started = time.monotonic()
            try:
                await provider.fetch()
            except QuotaError:
                pass
            finally:
                await provider.close()
            requests = len(sim.asks) + len(sim.polls)
            print(f"  {status} Retry-After {retry_after!r:33}: {requests:4d} requests in one reading of "
                  f"{time.monotonic() - started:.1f} s (goal <= {deadline / 1.0:.0f}; "
                  f"{'MET' if requests <= deadline + 1 else 'NOT MET'})")


class Huge:
    def __init__(self, where: str, chunked: bool) -> None:
        self.where, self.chunked, self.sent = where, chunked, 0

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_route("*", "/v2/info", self.info)
        app.router.add_get("/v2/message/{id}", self.huge)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def info(self, request: web.Request) -> web.StreamResponse:
        if self.where == "ask":
            return await self.huge(request)
        return web.json_response({"success": True, "messageId": "m1"})

    async def huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if not self.chunked:
            resp.content_length = BIG
        await resp.prepare(request)
        chunk = b"x" * (1024 * 1024)
        try:
            await resp.write(b'{"progress": 50, "pad": "')
            for _ in range(BIG // len(chunk) - 1):
                await resp.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp


PEAK = ("import sys\nfrom adapters.cli.main import main\ncode = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "sys.stderr.write('PEAK_RSS_MB %.1f\\n' % (int(hwm) / 1024))\nsys.exit(code)\n")


async def memory() -> None:
    for where in ("ask", "poll"):
        for chunked in (False, True):
            fake = Huge(where, chunked)
            runner, base = await fake.start()
            folder = tempfile.mkdtemp()
            env = {"PATH": os.environ.get("PATH", ""), "HOME": folder, "NEXTLEG_API_TOKEN": TOKEN,
                   "NEXTLEG_BASE_URL": base, "QUOTA_READ_TIMEOUT": "20", "DATABASE_URL": f"sqlite:///{folder}/b.db"}
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", PEAK, "quota", cwd=folder, env=env,
                                                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            await runner.cleanup()
            text = err.decode()
            peak = float(text.rsplit("PEAK_RSS_MB ", 1)[1].split()[0]) if "PEAK_RSS_MB" in text else float("nan")
            told = "too large to read" in text
            print(f"  50 MB {where:4} reply, {'chunked' if chunked else 'Content-Length':14}: peak RSS {peak:5.1f} MB "
                  f"(goal < 100: {'MET' if peak < 100 else 'NOT MET'}), {fake.sent / 2**20:4.1f} MiB sent before the "
                  f"bot hung up, answered in {time.monotonic() - started:.1f} s, "
                  f"{'said too large' if told else 'DID NOT SAY too large'}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deadline", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"requests to the provider per reading, every poll told to retry at once ({args.deadline:.0f} s deadline):")
    await hammering(args.deadline)
    print("peak memory of `quota-bot quota` while a 50 MB reply arrives:")
    await memory()


if __name__ == "__main__":
    asyncio.run(main())
