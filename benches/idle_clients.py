#!/usr/bin/env python3
"""Memory cost of idle clients on a proxy.

Opens N client connections (asyncpg, no TLS, trust or a given password) to
host:port, holds them, and reads the proxy's resident memory (VmRSS of --pid) before
and while they are held. Prints RSS in MiB and the growth per client in KiB, then
closes every connection. Bounded: a connect timeout and a fixed hold time.

  python benches/idle_clients.py --port 6433 --user tg_bench --dbname tg_bench --pid 1234
"""

import argparse
import asyncio
import sys

import asyncpg


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--dbname", required=True)
    ap.add_argument("--password", default=None)
    ap.add_argument("--pid", type=int, required=True, help="proxy process to measure")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50, help="connects in flight at once")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds to hold before measuring")
    ap.add_argument("--label", default="", help="name printed with the result")
    args = ap.parse_args()

    sem = asyncio.Semaphore(args.concurrency)

    async def connect():
        async with sem:
            # statement_cache_size=0: nothing is prepared, the connections stay idle.
            return await asyncpg.connect(
                host=args.host, port=args.port, user=args.user, database=args.dbname,
                password=args.password, ssl=False, timeout=30, statement_cache_size=0)

    before = rss_kib(args.pid)
    results = await asyncio.gather(*(connect() for _ in range(args.clients)),
                                   return_exceptions=True)
    conns = [c for c in results if isinstance(c, asyncpg.Connection)]
    errors = [e for e in results if isinstance(e, BaseException)]
    try:
        await asyncio.sleep(args.hold)
        # One round trip on a sample proves they are live, not half-open.
        for c in conns[:: max(1, len(conns) // 10)]:
            await c.fetchval("SELECT 1")
        during = rss_kib(args.pid)
    finally:
        await asyncio.gather(*(c.close(timeout=10) for c in conns), return_exceptions=True)

    per_client = (during - before) / max(1, len(conns))
    label = f"{args.label}: " if args.label else ""
    print(f"{label}{len(conns)} idle clients: RSS {before / 1024:.1f} MiB -> "
          f"{during / 1024:.1f} MiB, {per_client:.1f} KiB per client")
    if errors:
        print(f"{label}{len(errors)} connections failed, first: {errors[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
