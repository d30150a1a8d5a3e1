#!/usr/bin/env python3
"""asyncpg driver conformance checks for tenantgate.

Usage: python asyncpg_check.py DSN

Runs a fixed list of checks against DSN (the tenantgate proxy, or PostgreSQL
directly) and prints one line per check:

    ok <name>
    FAIL <name>: <why>

followed by a final line "N passed, M failed".  Exit code is 0 only if every
check passed (2 on usage error).  No check is ever skipped: if a prerequisite
(e.g. the connection) is missing, the check is reported as FAIL.

asyncpg prepares every query server-side and keeps a statement cache
(statement_cache_size is left at its default on purpose): under transaction
pooling the proxy must transparently re-prepare statements on whichever
backend serves the next transaction.

LISTEN/NOTIFY is deliberately NOT checked (not supported under transaction
pooling).

Every object created lives in tables named tg_drv_<random>[_suffix] in the
current schema (the DSN's search_path is the tenant schema); they are dropped
at the end.
"""

import asyncio
import datetime
import decimal
import hashlib
import io
import json
import os
import secrets
import sys
import threading
import time
import traceback

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL import_asyncpg: {exc}")
    print("0 passed, 1 failed")
    sys.exit(1)

CONNECT_TIMEOUT = 10.0  # seconds, asyncpg connect(timeout=)
COMMAND_TIMEOUT = 15.0  # seconds, default per-query timeout
CHECK_TIMEOUT = 60.0  # seconds, hard limit per check
GLOBAL_TIMEOUT = 240.0  # seconds, hard limit for the whole script


class CheckError(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckError(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckError(f"{what}: expected {want!r}, got {got!r}")


class Ctx:
    def __init__(self, dsn):
        self.dsn = dsn
        self.suffix = secrets.token_hex(4)
        self.table = f"tg_drv_{self.suffix}"
        self.copy_table = f"tg_drv_{self.suffix}_copy"
        self.conn = None
        self.table_created = False
        self.ever_connected = False
        self.reconnects = 0

    async def connect(self):
        conn = await asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
        )
        self.ever_connected = True
        return conn

    def need_conn(self):
        if self.conn is None or self.conn.is_closed():
            raise CheckError("no usable connection (an earlier check failed)")
        return self.conn

    def need_table(self):
        self.need_conn()
        if not self.table_created:
            raise CheckError("test tables were not created (create_tables failed)")
        return self.conn

    async def recover(self):
        """Bring the shared connection back to a clean idle state after a failure."""
        conn = self.conn
        if conn is not None and not conn.is_closed():
            try:
                if conn.is_in_transaction():
                    await conn.execute("rollback", timeout=COMMAND_TIMEOUT)
                await conn.fetchval("select 1", timeout=COMMAND_TIMEOUT)
                return
            except Exception:
                conn.terminate()
        self.conn = None
        # Reconnect (bounded, so an unresponsive server cannot make every
        # remaining check wait for a full connect timeout).
        if not self.ever_connected or self.reconnects >= 3:
            return
        self.reconnects += 1
        try:
            self.conn = await self.connect()
        except Exception:
            self.conn = None


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


async def check_connect(ctx):
    ctx.conn = await ctx.connect()
    expect(not ctx.conn.is_closed(), "connection closed right after connect")


async def check_select_1(ctx):
    conn = ctx.need_conn()
    expect_eq(await conn.fetchval("select 1"), 1, "select 1")
    row = await conn.fetchrow("select 1 as a, 'x'::text as b")
    expect_eq((row["a"], row["b"]), (1, "x"), "select 1 row")


async def check_create_tables(ctx):
    conn = ctx.need_conn()
    await conn.execute(
        f"""
        create table {ctx.table} (
            id      int primary key,
            kind    text not null,
            name    text,
            data    bytea,
            ts      timestamptz,
            amount  numeric,
            doc     jsonb,
            tags    text[],
            nums    int[]
        );
        create table {ctx.copy_table} (
            id    int primary key,
            name  text,
            data  bytea,
            amount numeric
        );
        """
    )
    ctx.table_created = True
    # Tables must land in the schema the connection is configured with.
    schema = await conn.fetchval("select current_schema()")
    expect(schema is not None, "current_schema() is NULL (empty search_path?)")
    got = await conn.fetchval(
        "select count(*) from pg_tables where schemaname = $1 and tablename = any($2::text[])",
        schema,
        [ctx.table, ctx.copy_table],
    )
    expect_eq(got, 2, f"tables visible in current schema {schema!r}")


async def check_prepared_repeat_50(ctx):
    conn = ctx.need_conn()
    # Same parameterised query text, different params: asyncpg prepares once
    # and re-uses the cached statement for all 50 runs.
    for i in range(50):
        row = await conn.fetchrow(
            "select $1::int * 2 as doubled, $2::text || '!' as shout, $1::int + length($2::text) as s",
            i,
            f"v{i}",
        )
        expect_eq(
            (row["doubled"], row["shout"], row["s"]),
            (i * 2, f"v{i}!", i + len(f"v{i}")),
            f"iteration {i}",
        )


async def check_prepare_fetch_many(ctx):
    conn = ctx.need_conn()
    stmt = await conn.prepare(
        "select g, g * $1::int as m from generate_series(1, $2::int) g order by g"
    )
    params = stmt.get_parameters()
    expect_eq(len(params), 2, "prepared statement parameter count")
    attrs = [a.name for a in stmt.get_attributes()]
    expect_eq(attrs, ["g", "m"], "prepared statement columns")
    for i in range(1, 51):
        n = (i % 7) + 1
        rows = await stmt.fetch(i, n)
        expect_eq(
            [(r["g"], r["m"]) for r in rows],
            [(g, g * i) for g in range(1, n + 1)],
            f"stmt.fetch iteration {i}",
        )
        expect_eq(await stmt.fetchval(i, 1, column=1), i, f"stmt.fetchval iteration {i}")


async def check_prepared_across_transactions(ctx):
    conn = ctx.need_conn()
    # Interleave a prepared statement with transactions: under transaction
    # pooling each transaction may run on a different backend.
    stmt = await conn.prepare("select $1::int + 1000")
    for i in range(20):
        async with conn.transaction():
            expect_eq(await stmt.fetchval(i), i + 1000, f"in tx iteration {i}")
            expect_eq(await conn.fetchval("select $1::text", str(i)), str(i), f"cached query in tx {i}")
        expect_eq(await stmt.fetchval(-i), 1000 - i, f"outside tx iteration {i}")


async def check_typed_params(ctx):
    conn = ctx.need_table()
    ts = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=datetime.timezone.utc)
    ts_other_tz = datetime.datetime(
        2024, 3, 1, 8, 59, 58, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=9))
    )
    amount = decimal.Decimal("-12345678901234567890.000000000123")
    blob = bytes(range(256)) * 3
    doc = {"a": 1, "b": [True, None, "é\u2603"], "c": {"d": 1.5}}
    tags = ["alpha", "be ta", 'q"uote', "", None]
    nums = [1, -2, 2147483647, None]
    text = "multi\nline 'quoted' \\ unicode \u00e9\u2603\U0001F600"

    # Round trip through parameters only.
    row = await conn.fetchrow(
        """select $1::int as i, $2::bigint as b, $3::text as t, $4::bytea as by,
                  $5::timestamptz as ts, $6::numeric as n, $7::json as j,
                  $8::text[] as ta, $9::int[] as ia, $10::int as nul, $11::bool as bo,
                  $12::float8 as f""",
        -42,
        9223372036854775807,
        text,
        blob,
        ts,
        amount,
        json.dumps(doc),
        tags,
        nums,
        None,
        True,
        1.25,
    )
    expect_eq(row["i"], -42, "int")
    expect_eq(row["b"], 9223372036854775807, "bigint")
    expect_eq(row["t"], text, "text")
    expect_eq(row["by"], blob, "bytea")
    expect_eq(row["ts"], ts, "timestamptz")
    expect_eq(row["n"], amount, "numeric")
    expect_eq(json.loads(row["j"]), doc, "json")
    expect_eq(row["ta"], tags, "text[]")
    expect_eq(row["ia"], nums, "int[]")
    expect(row["nul"] is None, f"NULL param: expected None, got {row['nul']!r}")
    expect_eq(row["bo"], True, "bool")
    expect_eq(row["f"], 1.25, "float8")
    # A timestamptz given in another zone is the same instant.
    expect_eq(await conn.fetchval("select $1::timestamptz = $2::timestamptz", ts, ts_other_tz), True, "timestamptz across zones")
    # NULL compared through a typed parameter.
    expect_eq(await conn.fetchval("select $1::text is null", None), True, "NULL text param")

    # Round trip through table storage.
    await conn.execute(
        f"insert into {ctx.table} (id, kind, name, data, ts, amount, doc, tags, nums) "
        "values ($1, 'typed', $2, $3, $4, $5, $6, $7, $8)",
        1,
        text,
        blob,
        ts,
        amount,
        json.dumps(doc),
        tags,
        nums,
    )
    await conn.execute(
        f"insert into {ctx.table} (id, kind, name, data, ts, amount, doc, tags, nums) "
        "values ($1, 'typed', $2, $3, $4, $5, $6, $7, $8)",
        2, None, None, None, None, None, None, None,
    )
    r = await conn.fetchrow(f"select * from {ctx.table} where id = $1", 1)
    expect_eq(
        (r["name"], r["data"], r["ts"], r["amount"], json.loads(r["doc"]), r["tags"], r["nums"]),
        (text, blob, ts, amount, doc, tags, nums),
        "stored row 1",
    )
    r = await conn.fetchrow(f"select * from {ctx.table} where id = $1", 2)
    expect_eq(
        (r["name"], r["data"], r["ts"], r["amount"], r["doc"], r["tags"], r["nums"]),
        (None,) * 7,
        "stored NULL row 2",
    )


async def check_transaction_rollback(ctx):
    conn = ctx.need_table()
    tr = conn.transaction()
    await tr.start()
    expect(conn.is_in_transaction(), "not in transaction after start()")
    await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'rollback')", 100)
    expect_eq(
        await conn.fetchval(f"select count(*) from {ctx.table} where id = $1", 100), 1, "row visible inside tx"
    )
    await tr.rollback()
    expect(not conn.is_in_transaction(), "still in transaction after rollback()")
    expect_eq(
        await conn.fetchval(f"select count(*) from {ctx.table} where id = $1", 100), 0, "row after rollback"
    )

    # Context-manager form: exception -> rollback.
    class Boom(Exception):
        pass

    try:
        async with conn.transaction():
            await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'rollback')", 101)
            raise Boom()
    except Boom:
        pass
    expect_eq(
        await conn.fetchval(f"select count(*) from {ctx.table} where id = $1", 101), 0, "row after ctx-manager rollback"
    )

    # And commit does persist.
    async with conn.transaction():
        await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'commit')", 102)
    other = await ctx.connect()
    try:
        expect_eq(
            await other.fetchval(f"select count(*) from {ctx.table} where id = $1", 102),
            1,
            "committed row seen from another connection",
        )
    finally:
        await other.close(timeout=COMMAND_TIMEOUT)


async def check_savepoint(ctx):
    conn = ctx.need_table()
    async with conn.transaction():
        await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'sp-outer')", 200)
        try:
            async with conn.transaction():  # nested -> SAVEPOINT
                await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'sp-inner')", 201)
                # duplicate key inside the savepoint
                await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'sp-dup')", 200)
            raise CheckError("duplicate insert inside savepoint did not raise")
        except asyncpg.exceptions.UniqueViolationError as e:
            expect_eq(e.sqlstate, "23505", "sqlstate of duplicate key")
        # outer transaction still usable after ROLLBACK TO SAVEPOINT
        async with conn.transaction():
            await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'sp-inner2')", 202)
        # explicit SQL savepoints too
        await conn.execute("savepoint tg_sp")
        await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'sp-sql')", 203)
        await conn.execute("rollback to savepoint tg_sp")
        await conn.execute("release savepoint tg_sp")
    rows = await conn.fetch(f"select id from {ctx.table} where id between 200 and 299 order by id")
    expect_eq([r["id"] for r in rows], [200, 202], "rows after savepoint rollbacks")


async def check_error_in_transaction(ctx):
    conn = ctx.need_table()
    await conn.execute("begin")
    expect(conn.is_in_transaction(), "not in transaction after BEGIN")
    await conn.execute(f"insert into {ctx.table} (id, kind) values ($1, 'aborted')", 300)
    try:
        await conn.fetchval("select $1::int / 0", 1)
        raise CheckError("division by zero did not raise")
    except asyncpg.exceptions.DivisionByZeroError:
        pass
    expect(conn.is_in_transaction(), "transaction ended by the error (should stay open, aborted)")
    try:
        await conn.fetchval("select 1")
        raise CheckError("query in aborted transaction did not raise")
    except asyncpg.exceptions.InFailedSQLTransactionError as e:
        expect_eq(e.sqlstate, "25P02", "sqlstate in aborted transaction")
    await conn.execute("rollback")
    expect(not conn.is_in_transaction(), "still in transaction after ROLLBACK")
    expect_eq(await conn.fetchval("select 1"), 1, "select 1 after rollback")
    expect_eq(
        await conn.fetchval(f"select count(*) from {ctx.table} where id = $1", 300), 0, "row from aborted tx"
    )
    # Cached prepared statements still work after the aborted transaction.
    expect_eq(await conn.fetchval("select $1::int * 2", 21), 42, "cached statement after rollback")


async def check_division_by_zero(ctx):
    conn = ctx.need_conn()
    try:
        await conn.fetchval("select 1/0")
        raise CheckError("select 1/0 did not raise")
    except asyncpg.exceptions.DivisionByZeroError as e:
        expect_eq(e.sqlstate, "22012", "sqlstate")
        expect("division by zero" in str(e), f"unexpected message {str(e)!r}")
    except asyncpg.PostgresError as e:
        raise CheckError(f"expected DivisionByZeroError, got {type(e).__name__} ({e.sqlstate}): {e}")
    # Simple-protocol path too (execute without args).
    try:
        await conn.execute("select 1/0")
        raise CheckError("execute('select 1/0') did not raise")
    except asyncpg.exceptions.DivisionByZeroError as e:
        expect_eq(e.sqlstate, "22012", "sqlstate (simple protocol)")
    expect(not conn.is_in_transaction(), "left in a transaction after error")
    expect_eq(await conn.fetchval("select 2"), 2, "connection usable after error")


async def check_copy_in(ctx):
    conn = ctx.need_table()
    n = 5000
    records = [
        (i, f"name-{i}", bytes([i % 256, (i * 7) % 256]), decimal.Decimal(i) / 100)
        for i in range(1, n + 1)
    ]
    status = await conn.copy_records_to_table(
        ctx.copy_table, records=records, columns=["id", "name", "data", "amount"]
    )
    expect_eq(status, f"COPY {n}", "copy_records_to_table status")
    # Text-format COPY FROM STDIN from a file-like source.
    src = io.BytesIO(
        "".join(f"{i}\tcsv-{i}\t\\N\t{i}.5\n" for i in range(n + 1, n + 101)).encode()
    )
    status = await conn.copy_to_table(ctx.copy_table, source=src, columns=["id", "name", "data", "amount"])
    expect_eq(status, "COPY 100", "copy_to_table status")
    row = await conn.fetchrow(
        f"select count(*) as c, sum(id) as s, sum(amount) as a, "
        f"count(*) filter (where data is null) as nd from {ctx.copy_table}"
    )
    total = n + 100
    expect_eq(row["c"], total, "row count after COPY IN")
    expect_eq(row["s"], total * (total + 1) // 2, "sum(id) after COPY IN")
    want_amount = sum(decimal.Decimal(i) / 100 for i in range(1, n + 1)) + sum(
        decimal.Decimal(f"{i}.5") for i in range(n + 1, n + 101)
    )
    expect_eq(row["a"], want_amount, "sum(amount) after COPY IN")
    expect_eq(row["nd"], 100, "NULL bytea count")
    r = await conn.fetchrow(f"select name, data from {ctx.copy_table} where id = 300")
    expect_eq((r["name"], r["data"]), ("name-300", bytes([300 % 256, 2100 % 256])), "row 300")


async def check_copy_out(ctx):
    conn = ctx.need_table()
    n = await conn.fetchval(f"select count(*) from {ctx.copy_table}")
    expect(n > 0, "copy table is empty (copy_in failed?)")
    buf = io.BytesIO()
    status = await conn.copy_from_query(
        f"select id, name from {ctx.copy_table} where id <= $1 order by id", 5000, output=buf, format="csv"
    )
    expect_eq(status, "COPY 5000", "copy_from_query status")
    lines = buf.getvalue().decode().splitlines()
    expect_eq(len(lines), 5000, "lines from copy_from_query")
    expect_eq(lines[0], "1,name-1", "first line")
    expect_eq(lines[-1], "5000,name-5000", "last line")
    expect_eq(lines, [f"{i},name-{i}" for i in range(1, 5001)], "copy_from_query contents")

    # Whole-table text COPY TO STDOUT.
    buf = io.BytesIO()
    status = await conn.copy_from_table(ctx.copy_table, columns=["id"], output=buf)
    expect_eq(status, f"COPY {n}", "copy_from_table status")
    ids = sorted(int(x) for x in buf.getvalue().decode().split())
    expect_eq(ids, list(range(1, n + 1)), "copy_from_table ids")


async def check_executemany(ctx):
    conn = ctx.need_table()
    rows = [(1000 + i, "many", f"m{i}", [i, i + 1]) for i in range(1000)]
    await conn.executemany(
        f"insert into {ctx.table} (id, kind, name, nums) values ($1, $2, $3, $4)", rows
    )
    r = await conn.fetchrow(
        f"select count(*) as c, sum(id) as s, sum(nums[2]) as n2 from {ctx.table} where kind = 'many'"
    )
    expect_eq(r["c"], 1000, "row count after executemany")
    expect_eq(r["s"], sum(1000 + i for i in range(1000)), "sum(id) after executemany")
    expect_eq(r["n2"], sum(i + 1 for i in range(1000)), "sum(nums[2]) after executemany")
    # executemany is atomic: a failing row rolls back the whole batch.
    try:
        await conn.executemany(
            f"insert into {ctx.table} (id, kind) values ($1, $2)",
            [(5000, "many2"), (5001, "many2"), (1000, "dup")],
        )
        raise CheckError("executemany with duplicate key did not raise")
    except asyncpg.exceptions.UniqueViolationError:
        pass
    expect_eq(
        await conn.fetchval(f"select count(*) from {ctx.table} where kind = 'many2'"),
        0,
        "rows from failed executemany",
    )
    expect(not conn.is_in_transaction(), "left in a transaction after failed executemany")


async def check_large_result(ctx):
    conn = ctx.need_conn()
    n = 20000
    t0 = time.monotonic()
    rows = await conn.fetch(
        "select i, md5(i::text) as h, repeat('x', i % 50) as pad from generate_series(1, $1::int) i order by i",
        n,
    )
    expect_eq(len(rows), n, "row count")
    h = hashlib.md5()
    for idx, r in enumerate(rows, start=1):
        if r["i"] != idx:
            raise CheckError(f"row {idx}: got i={r['i']}")
        want = hashlib.md5(str(idx).encode()).hexdigest()
        if r["h"] != want:
            raise CheckError(f"row {idx}: md5 mismatch {r['h']!r} != {want!r}")
        if r["pad"] != "x" * (idx % 50):
            raise CheckError(f"row {idx}: pad mismatch")
        h.update(f"{r['i']}:{r['h']}:{r['pad']},".encode())
    server = await conn.fetchval(
        "select md5(string_agg(i::text || ':' || md5(i::text) || ':' || repeat('x', i % 50) || ',', '' order by i)) "
        "from generate_series(1, $1::int) i",
        n,
    )
    expect_eq(h.hexdigest(), server, "client vs server checksum")
    expect(time.monotonic() - t0 < CHECK_TIMEOUT, "too slow")


async def check_cursor_in_transaction(ctx):
    conn = ctx.need_conn()
    n = 3000
    async with conn.transaction():
        # Iterating cursor with prefetch.
        total = 0
        count = 0
        async for r in conn.cursor("select g from generate_series(1, $1::int) g order by g", n, prefetch=250):
            count += 1
            total += r["g"]
        expect_eq((count, total), (n, n * (n + 1) // 2), "iterated cursor count/sum")
        # Explicit cursor: fetch / forward / fetchrow.
        cur = await conn.cursor("select g, g * g as sq from generate_series(1, $1::int) g order by g", n)
        first = await cur.fetch(100)
        expect_eq([r["g"] for r in first], list(range(1, 101)), "first batch")
        moved = await cur.forward(400)
        expect_eq(moved, 400, "forward() count")
        r = await cur.fetchrow()
        expect_eq((r["g"], r["sq"]), (501, 501 * 501), "row after forward")
        rest = 0
        while True:
            batch = await cur.fetch(700)
            if not batch:
                break
            rest += len(batch)
        expect_eq(rest, n - 501, "remaining rows")
    expect(not conn.is_in_transaction(), "still in transaction after cursor block")


async def check_concurrent_connections(ctx):
    async def worker(tag):
        c = await ctx.connect()
        try:
            stmt = await c.prepare("select $1::int * $2::int as p, $3::text as t")
            for i in range(200):
                if i % 2 == 0:
                    r = await stmt.fetchrow(i, tag, f"{tag}-{i}")
                else:
                    # implicit (cached) prepared statement, same text on both connections
                    r = await c.fetchrow("select $1::int * $2::int as p, $3::text as t", i, tag, f"{tag}-{i}")
                if (r["p"], r["t"]) != (i * tag, f"{tag}-{i}"):
                    raise CheckError(f"conn {tag} iteration {i}: got {tuple(r)!r}")
            return tag
        finally:
            await c.close(timeout=COMMAND_TIMEOUT)

    results = await asyncio.gather(worker(3), worker(7), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        e = errors[0]
        raise CheckError(f"{len(errors)} worker(s) failed: {describe(e)}")
    expect_eq(sorted(results), [3, 7], "worker results")


async def check_cleanup(ctx):
    conn = ctx.need_conn()
    await conn.execute(f"drop table if exists {ctx.table}, {ctx.copy_table}")
    ctx.table_created = False
    left = await conn.fetchval(
        "select count(*) from pg_class where relname like $1", f"tg_drv_{ctx.suffix}%"
    )
    expect_eq(left, 0, "relations left after drop")


CHECKS = [
    ("connect", check_connect),
    ("select_1", check_select_1),
    ("create_tables", check_create_tables),
    ("prepared_repeat_50", check_prepared_repeat_50),
    ("prepare_fetch_many", check_prepare_fetch_many),
    ("prepared_across_transactions", check_prepared_across_transactions),
    ("typed_params", check_typed_params),
    ("transaction_rollback", check_transaction_rollback),
    ("savepoint", check_savepoint),
    ("error_in_transaction", check_error_in_transaction),
    ("division_by_zero_22012", check_division_by_zero),
    ("copy_records_to_table", check_copy_in),
    ("copy_from_query", check_copy_out),
    ("executemany", check_executemany),
    ("large_result_20000", check_large_result),
    ("cursor_in_transaction", check_cursor_in_transaction),
    ("concurrent_connections", check_concurrent_connections),
    ("cleanup", check_cleanup),
]


def one_line(text):
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(exc):
    if isinstance(exc, CheckError):
        return str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{type(exc).__name__} sqlstate={exc.sqlstate}: {exc}"
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
    where = f" (at {os.path.basename(__file__)}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}{where}: {exc}"


async def emergency_cleanup(ctx):
    """Drop the test tables on a fresh connection if the cleanup check failed."""
    try:
        c = await ctx.connect()
        try:
            await c.execute(f"drop table if exists {ctx.table}, {ctx.copy_table}")
        finally:
            await c.close(timeout=COMMAND_TIMEOUT)
    except Exception as e:
        print(f"# warning: emergency cleanup failed: {one_line(describe(e))}", flush=True)


TALLY = {"passed": 0, "failed": 0}


async def main(dsn):
    ctx = Ctx(dsn)
    cleanup_ok = False
    for name, fn in CHECKS:
        try:
            await asyncio.wait_for(fn(ctx), timeout=CHECK_TIMEOUT)
        except BaseException as e:  # noqa: BLE001 - report everything
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            TALLY["failed"] += 1
            print(f"FAIL {name}: {one_line(describe(e))}", flush=True)
            try:
                await asyncio.wait_for(ctx.recover(), timeout=CHECK_TIMEOUT)
            except BaseException:
                ctx.conn = None
        else:
            TALLY["passed"] += 1
            if name == "cleanup":
                cleanup_ok = True
            print(f"ok {name}", flush=True)
    if not cleanup_ok and ctx.ever_connected:
        await asyncio.wait_for(emergency_cleanup(ctx), timeout=CHECK_TIMEOUT)
    if ctx.conn is not None and not ctx.conn.is_closed():
        try:
            await ctx.conn.close(timeout=COMMAND_TIMEOUT)
        except Exception:
            ctx.conn.terminate()
    print(f"{TALLY['passed']} passed, {TALLY['failed']} failed", flush=True)
    return 0 if TALLY["failed"] == 0 else 1


def _global_watchdog():
    print(f"FAIL global_timeout: script exceeded {GLOBAL_TIMEOUT:.0f}s, aborting", flush=True)
    print(f"{TALLY['passed']} passed, {TALLY['failed'] + 1} failed", flush=True)
    os._exit(1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} DSN", file=sys.stderr)
        sys.exit(2)
    timer = threading.Timer(GLOBAL_TIMEOUT, _global_watchdog)
    timer.daemon = True
    timer.start()
    rc = asyncio.run(main(sys.argv[1]))
    timer.cancel()
    sys.exit(rc)
