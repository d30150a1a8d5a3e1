#!/usr/bin/env python3
"""psycopg 3 driver conformance checks for tenantgate.

Usage: python psycopg_check.py DSN

Runs a fixed list of checks against DSN (the tenantgate proxy, or PostgreSQL
directly) and prints one line per check:

    ok <name>
    FAIL <name>: <why>

followed by a final line "N passed, M failed".  Exit code is 0 only if every
check passed (2 on usage error).  No check is ever skipped: if a prerequisite
(e.g. the connection) is missing, the check is reported as FAIL.

Covers: simple-protocol queries (incl. multi-statement), server-side prepared
statements (prepare=True), pipeline mode, COPY FROM STDIN / TO STDOUT (text
and binary), transactions / rollback / savepoints, errors and SQLSTATEs,
binary parameters and results, autocommit on and off, a named (server-side)
cursor inside a transaction, and notices from RAISE NOTICE.

LISTEN/NOTIFY is deliberately NOT checked (not supported under transaction
pooling).

Every object created lives in tables named tg_drv_<random>[_suffix] in the
current schema (the DSN's search_path is the tenant schema); they are dropped
at the end.
"""

import datetime
import decimal
import hashlib
import os
import secrets
import sys
import threading
import time
import traceback

try:
    import psycopg
    from psycopg import errors as pgerr
    from psycopg import pq
    from psycopg.types.json import Jsonb
except ImportError as exc:  # pragma: no cover - environment problem
    print(f"FAIL import_psycopg: {exc}")
    print("0 passed, 1 failed")
    sys.exit(1)

CONNECT_TIMEOUT = 10  # seconds, libpq connect_timeout
CHECK_TIMEOUT = 60.0  # seconds per check; running queries are cancelled after it
GLOBAL_TIMEOUT = 240.0  # seconds, hard limit for the whole script

IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS
INERROR = pq.TransactionStatus.INERROR


class CheckError(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckError(msg)


def expect_eq(got, want, what):
    if got != want:
        raise CheckError(f"{what}: expected {want!r}, got {got!r}")


def expect_raises(exc_type, sqlstate, fn, what):
    try:
        fn()
    except exc_type as e:
        expect_eq(e.sqlstate, sqlstate, f"{what}: sqlstate")
        return e
    except psycopg.Error as e:
        raise CheckError(
            f"{what}: expected {exc_type.__name__}, got {type(e).__name__} (sqlstate={e.sqlstate}): {e}"
        )
    raise CheckError(f"{what}: did not raise {exc_type.__name__}")


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
        self.open_conns = set()  # everything the watchdog may need to cancel
        self.lock = threading.Lock()

    def connect(self, autocommit=True):
        conn = psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=autocommit)
        self.ever_connected = True
        with self.lock:
            self.open_conns.add(conn)
        return conn

    def close(self, conn):
        with self.lock:
            self.open_conns.discard(conn)
        try:
            conn.close()
        except Exception:
            pass

    def cancel_all(self):
        with self.lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                if not c.closed:
                    c.cancel_safe(timeout=5.0)
            except Exception:
                pass

    def need_conn(self):
        if self.conn is None or self.conn.closed or self.conn.broken:
            raise CheckError("no usable connection (an earlier check failed)")
        return self.conn

    def need_table(self):
        self.need_conn()
        if not self.table_created:
            raise CheckError("test tables were not created (create_tables failed)")
        return self.conn

    def recover(self):
        """Bring the shared connection back to a clean idle autocommit state."""
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            try:
                if conn.info.transaction_status != IDLE:
                    conn.rollback()
                if not conn.autocommit:
                    conn.autocommit = True
                conn.execute("select 1").fetchone()
                return
            except Exception:
                pass
        if conn is not None:
            self.close(conn)
        self.conn = None
        # Bounded reconnects, so an unresponsive server cannot make every
        # remaining check wait for a full connect timeout.
        if not self.ever_connected or self.reconnects >= 3:
            return
        self.reconnects += 1
        try:
            self.conn = self.connect()
        except Exception:
            self.conn = None


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def check_connect(ctx):
    ctx.conn = ctx.connect()
    expect(not ctx.conn.closed, "connection closed right after connect")
    expect_eq(ctx.conn.info.transaction_status, IDLE, "transaction status after connect")


def check_simple_query(ctx):
    conn = ctx.need_conn()
    expect_eq(conn.execute("select 1").fetchone(), (1,), "select 1")
    # No parameters -> simple query protocol, several statements in one string.
    cur = conn.cursor()
    cur.execute("select 1 as a, 'x' as b; select generate_series(1, 3) as g; select null::int as n")
    sets = []
    while True:
        sets.append((tuple(d.name for d in cur.description), cur.fetchall()))
        if not cur.nextset():
            break
    expect_eq(
        sets,
        [
            (("a", "b"), [(1, "x")]),
            (("g",), [(1,), (2,), (3,)]),
            (("n",), [(None,)]),
        ],
        "multi-statement result sets",
    )
    # Command tags / rowcount with no result set.
    cur.execute("select 1 where false")
    expect_eq(cur.rowcount, 0, "rowcount of empty select")
    expect_eq(cur.fetchall(), [], "empty select")
    expect_eq(conn.info.transaction_status, IDLE, "status after simple queries")


def check_create_tables(ctx):
    conn = ctx.need_conn()
    conn.execute(
        f"""
        create table {ctx.table} (
            id      int primary key,
            kind    text not null,
            name    text,
            data    bytea,
            ts      timestamptz,
            amount  numeric,
            doc     jsonb,
            nums    int[]
        );
        create table {ctx.copy_table} (
            id     int primary key,
            name   text,
            amount numeric
        );
        """
    )
    ctx.table_created = True
    schema = conn.execute("select current_schema()").fetchone()[0]
    expect(schema is not None, "current_schema() is NULL (empty search_path?)")
    n = conn.execute(
        "select count(*) from pg_tables where schemaname = %s and tablename = any(%s)",
        (schema, [ctx.table, ctx.copy_table]),
    ).fetchone()[0]
    expect_eq(n, 2, f"tables visible in current schema {schema!r}")


def check_prepared_repeat_50(ctx):
    conn = ctx.need_table()
    cur = conn.cursor()
    for i in range(50):
        cur.execute(
            "select %s::int * 2 as doubled, %s::text || '!' as shout, %s::int + 1 as inc",
            (i, f"v{i}", i),
            prepare=True,
        )
        expect_eq(cur.fetchone(), (i * 2, f"v{i}!", i + 1), f"iteration {i}")
    # Second prepared statement interleaved with the first, and used inside
    # transactions (under transaction pooling each may hit another backend).
    for i in range(50):
        if i % 10 == 0:
            with conn.transaction():
                got = conn.execute("select %s::int + 1000", (i,), prepare=True).fetchone()
                expect_eq(got, (i + 1000,), f"prepared in tx iteration {i}")
                got = conn.execute(
                    "select %s::int * 2 as doubled, %s::text || '!' as shout, %s::int + 1 as inc",
                    (i, "t", i),
                    prepare=True,
                ).fetchone()
                expect_eq(got, (i * 2, "t!", i + 1), f"first statement in tx iteration {i}")
        else:
            got = conn.execute("select %s::int + 1000", (i,), prepare=True).fetchone()
            expect_eq(got, (i + 1000,), f"prepared iteration {i}")
    # Prepared statement with a table and DML.
    for i in range(50):
        conn.execute(
            f"insert into {ctx.table} (id, kind, name) values (%s, 'prep', %s)",
            (10_000 + i, f"p{i}"),
            prepare=True,
        )
    got = conn.execute(
        f"select count(*), sum(id) from {ctx.table} where kind = 'prep'", prepare=True
    ).fetchone()
    expect_eq(got, (50, sum(10_000 + i for i in range(50))), "prepared inserts")


def check_pipeline(ctx):
    conn = ctx.need_table()
    n = 500
    selects = []
    with conn.pipeline() as p:
        cur = conn.cursor()
        for i in range(n):
            cur.execute(
                f"insert into {ctx.table} (id, kind, name, nums) values (%s, 'pipe', %s, %s)",
                (20_000 + i, f"pipe-{i}", [i, -i]),
            )
            if i % 100 == 99:
                c = conn.cursor()
                c.execute(f"select count(*) from {ctx.table} where kind = 'pipe'")
                selects.append((i + 1, c))
        cur.executemany(
            f"insert into {ctx.table} (id, kind, name) values (%s, 'pipe-many', %s)",
            [(21_000 + i, f"pm-{i}") for i in range(n)],
        )
        p.sync()
        c = conn.cursor()
        c.execute(
            f"select kind, count(*), sum(id) from {ctx.table} where kind like 'pipe%' group by kind order by kind"
        )
        final = c
    for want, c in selects:
        expect_eq(c.fetchone(), (want,), f"pipelined select after {want} inserts")
    expect_eq(
        final.fetchall(),
        [
            ("pipe", n, sum(20_000 + i for i in range(n))),
            ("pipe-many", n, sum(21_000 + i for i in range(n))),
        ],
        "pipelined aggregate",
    )

    # Pipeline inside an explicit transaction, with an error: the whole
    # transaction is rolled back and the connection stays usable.
    try:
        with conn.transaction():
            with conn.pipeline():
                conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'pipe-err')", (22_000,))
                conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'pipe-err')", (20_000,))  # dup
                conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'pipe-err')", (22_001,))
        raise CheckError("pipeline with duplicate key did not raise")
    except pgerr.UniqueViolation as e:
        expect_eq(e.sqlstate, "23505", "pipeline error sqlstate")
    expect_eq(conn.info.transaction_status, IDLE, "status after failed pipelined transaction")
    got = conn.execute(f"select count(*) from {ctx.table} where kind = 'pipe-err'").fetchone()
    expect_eq(got, (0,), "rows from failed pipelined transaction")

    # Pipeline with prepared statements.
    with conn.pipeline():
        curs = []
        for i in range(30):
            c = conn.cursor()
            c.execute("select %s::int * 3", (i,), prepare=True)
            curs.append(c)
    expect_eq([c.fetchone()[0] for c in curs], [i * 3 for i in range(30)], "pipelined prepared selects")


def check_copy_in_10000(ctx):
    conn = ctx.need_table()
    n = 10_000
    cur = conn.cursor()
    with cur.copy(f"COPY {ctx.copy_table} (id, name, amount) FROM STDIN") as copy:
        for i in range(1, n + 1):
            name = f"row\t{i}\\x" if i % 1000 == 0 else (None if i % 777 == 0 else f"row-{i}")
            copy.write_row((i, name, decimal.Decimal(i) / 100))
    expect_eq(cur.rowcount, n, "COPY FROM rowcount")
    got = conn.execute(
        f"select count(*), sum(id), sum(amount), count(*) filter (where name is null) from {ctx.copy_table}"
    ).fetchone()
    want_nulls = len([i for i in range(1, n + 1) if i % 777 == 0 and i % 1000 != 0])
    expect_eq(
        got,
        (n, n * (n + 1) // 2, sum(decimal.Decimal(i) / 100 for i in range(1, n + 1)), want_nulls),
        "count/sum/sum/nulls after COPY FROM",
    )
    expect_eq(
        conn.execute(f"select name from {ctx.copy_table} where id = 3000").fetchone(),
        ("row\t3000\\x",),
        "escaped text survived COPY",
    )
    # Raw block writes (already formatted text data).
    with cur.copy(f"COPY {ctx.copy_table} (id, name, amount) FROM STDIN") as copy:
        copy.write("".join(f"{i}\traw-{i}\t1\n" for i in range(n + 1, n + 11)).encode())
    got = conn.execute(f"select count(*) from {ctx.copy_table} where name like 'raw-%'").fetchone()
    expect_eq(got, (10,), "rows from raw COPY write")
    conn.execute(f"delete from {ctx.copy_table} where id > %s", (n,))


def expected_copy_name(i):
    if i % 1000 == 0:
        return f"row\t{i}\\x"
    if i % 777 == 0:
        return None
    return f"row-{i}"


def check_copy_out(ctx):
    conn = ctx.need_table()
    n = 10_000
    cur = conn.cursor()
    # Text format, parsed rows.
    rows = []
    with cur.copy(f"COPY (select id, name, amount from {ctx.copy_table} order by id) TO STDOUT") as copy:
        for row in copy.rows():
            rows.append(row)
    expect_eq(len(rows), n, "rows from COPY TO STDOUT")
    want = [(str(i), expected_copy_name(i), str(decimal.Decimal(i) / 100)) for i in range(1, n + 1)]
    for i, (g, w) in enumerate(zip(rows, want), start=1):
        if g != w:
            raise CheckError(f"COPY TO row {i}: expected {w!r}, got {g!r}")

    # Raw blocks, checksummed against the server.
    h = hashlib.md5()
    with cur.copy(f"COPY (select id, md5(id::text) from {ctx.copy_table} order by id) TO STDOUT") as copy:
        for block in copy:
            h.update(block)
    server = conn.execute(
        f"select md5(string_agg(id::text || E'\\t' || md5(id::text) || E'\\n', '' order by id)) from {ctx.copy_table}"
    ).fetchone()[0]
    expect_eq(h.hexdigest(), server, "COPY TO raw-data checksum")

    # Binary format with typed rows.
    with cur.copy(
        f"COPY (select id, name, amount from {ctx.copy_table} where id <= 2000 order by id) TO STDOUT (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "text", "numeric"])
        brows = list(copy.rows())
    expect_eq(
        brows,
        [(i, expected_copy_name(i), decimal.Decimal(i) / 100) for i in range(1, 2001)],
        "binary COPY TO rows",
    )
    expect_eq(conn.info.transaction_status, IDLE, "status after COPY TO")


def check_transaction_rollback(ctx):
    conn = ctx.need_table()
    with conn.transaction() as tx:
        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'rb')", (100,))
        expect_eq(conn.info.transaction_status, INTRANS, "status inside transaction")
        got = conn.execute(f"select count(*) from {ctx.table} where id = 100").fetchone()
        expect_eq(got, (1,), "row visible inside transaction")
        raise psycopg.Rollback(tx)
    expect_eq(conn.info.transaction_status, IDLE, "status after Rollback")
    got = conn.execute(f"select count(*) from {ctx.table} where id = 100").fetchone()
    expect_eq(got, (0,), "row after Rollback")

    class Boom(Exception):
        pass

    try:
        with conn.transaction():
            conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'rb')", (101,))
            raise Boom()
    except Boom:
        pass
    got = conn.execute(f"select count(*) from {ctx.table} where id = 101").fetchone()
    expect_eq(got, (0,), "row after exception rollback")

    # Explicit SQL BEGIN / ROLLBACK in autocommit mode.
    conn.execute("begin")
    conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'rb')", (102,))
    conn.execute("rollback")
    got = conn.execute(f"select count(*) from {ctx.table} where id = 102").fetchone()
    expect_eq(got, (0,), "row after SQL ROLLBACK")

    # Commit persists and is visible to another connection.
    with conn.transaction():
        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'commit')", (103,))
    other = ctx.connect()
    try:
        got = other.execute(f"select kind from {ctx.table} where id = 103").fetchall()
        expect_eq(got, [("commit",)], "committed row from another connection")
    finally:
        ctx.close(other)


def check_savepoint(ctx):
    conn = ctx.need_table()
    with conn.transaction():
        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'sp')", (200,))
        try:
            with conn.transaction():  # SAVEPOINT
                conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'sp')", (201,))
                conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'sp')", (200,))
            raise CheckError("duplicate key inside savepoint did not raise")
        except pgerr.UniqueViolation:
            pass
        expect_eq(conn.info.transaction_status, INTRANS, "status after ROLLBACK TO SAVEPOINT")
        with conn.transaction() as sp:
            conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'sp')", (202,))
            raise psycopg.Rollback(sp)
        with conn.transaction():
            conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'sp')", (203,))
    got = conn.execute(f"select id from {ctx.table} where kind = 'sp' order by id").fetchall()
    expect_eq(got, [(200,), (203,)], "rows after savepoints")


def check_errors_sqlstate(ctx):
    conn = ctx.need_table()
    e = expect_raises(pgerr.DivisionByZero, "22012", lambda: conn.execute("select 1/0"), "select 1/0")
    expect_eq(e.diag.message_primary, "division by zero", "diag.message_primary")
    expect_eq(e.diag.severity_nonlocalized, "ERROR", "diag.severity_nonlocalized")
    expect_raises(pgerr.DivisionByZero, "22012", lambda: conn.execute("select %s::int / 0", (1,)), "param 1/0")
    expect_raises(
        pgerr.DivisionByZero, "22012", lambda: conn.execute("select %s::int / 0", (1,), prepare=True), "prepared 1/0"
    )
    expect_raises(pgerr.SyntaxError, "42601", lambda: conn.execute("selec 1"), "syntax error")
    expect_raises(
        pgerr.UndefinedTable, "42P01", lambda: conn.execute(f"select * from tg_drv_missing_{ctx.suffix}"), "undefined table"
    )
    expect_raises(
        pgerr.UniqueViolation,
        "23505",
        lambda: conn.execute(f"insert into {ctx.table} (id, kind) values (103, 'dup')"),
        "unique violation",
    )
    expect_raises(
        pgerr.RaiseException,
        "P0001",
        lambda: conn.execute("do $$ begin raise exception 'tg custom %', 7; end $$"),
        "raise exception",
    )
    expect_eq(conn.info.transaction_status, IDLE, "status after autocommit errors")

    # Error inside a transaction: aborted state, 25P02, rollback, usable.
    conn.execute("begin")
    conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'aborted')", (300,))
    expect_raises(pgerr.DivisionByZero, "22012", lambda: conn.execute("select 1/0"), "1/0 in transaction")
    expect_eq(conn.info.transaction_status, INERROR, "status after error in transaction")
    expect_raises(pgerr.InFailedSqlTransaction, "25P02", lambda: conn.execute("select 1"), "query in aborted tx")
    conn.execute("rollback")
    expect_eq(conn.info.transaction_status, IDLE, "status after rollback")
    expect_eq(conn.execute("select 1").fetchone(), (1,), "select 1 after rollback")
    got = conn.execute(f"select count(*) from {ctx.table} where id = 300").fetchone()
    expect_eq(got, (0,), "row from aborted transaction")


def check_binary_params(ctx):
    conn = ctx.need_table()
    blob = bytes(range(256)) * 4
    ts = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=datetime.timezone.utc)
    amount = decimal.Decimal("-12345678901234567890.000000000123")
    doc = {"a": 1, "b": [True, None, "é\u2603"]}
    text = "multi\nline 'q' \\ \u00e9\U0001F600"
    nums = [1, None, -3, 2147483647]
    cur = conn.cursor(binary=True)  # binary results
    cur.execute(
        "select %b::bytea, %b::int8, %b::text, %b::timestamptz, %b::numeric, %b::jsonb, %b::int4[], %b::int4, %b::bool",
        (blob, 9223372036854775807, text, ts, amount, Jsonb(doc), nums, None, False),
    )
    expect_eq(cur.pgresult.fformat(0), 1, "result format is binary")
    got = cur.fetchone()
    expect_eq(got[0], blob, "bytea")
    expect_eq(got[1], 9223372036854775807, "int8")
    expect_eq(got[2], text, "text")
    expect_eq(got[3], ts, "timestamptz")
    expect_eq(got[4], amount, "numeric")
    expect_eq(got[5], doc, "jsonb")
    expect_eq(got[6], nums, "int4[]")
    expect(got[7] is None, f"NULL: got {got[7]!r}")
    expect_eq(got[8], False, "bool")

    # Binary params into a table, read back with text and binary results.
    ins = f"insert into {ctx.table} (id, kind, name, data, ts, amount, doc, nums) values (%b, 'bin', %b, %b, %b, %b, %b, %b)"
    conn.cursor().execute(ins, (400, text, blob, ts, amount, Jsonb(doc), nums))
    conn.cursor().execute(ins, (401, None, None, None, None, None, None))
    sel = f"select name, data, ts, amount, doc, nums from {ctx.table} where id = %b"
    for binary in (False, True):
        c = conn.cursor(binary=binary)
        expect_eq(c.execute(sel, (400,)).fetchone(), (text, blob, ts, amount, doc, nums), f"stored row (binary={binary})")
        expect_eq(c.execute(sel, (401,)).fetchone(), (None,) * 6, f"stored NULL row (binary={binary})")
    # Large bytea parameter.
    big = hashlib.sha256(b"tg").digest() * 40000  # ~1.3 MB
    got = conn.execute("select length(%b::bytea), md5(%b::bytea)", (big, big)).fetchone()
    expect_eq(got, (len(big), hashlib.md5(big).hexdigest()), "1.3MB bytea param")


def check_autocommit_on(ctx):
    conn = ctx.need_table()
    expect(conn.autocommit, "shared connection should be in autocommit")
    conn.execute("select 1").fetchone()
    expect_eq(conn.info.transaction_status, IDLE, "status after select in autocommit")
    conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-on')", (500,))
    expect_eq(conn.info.transaction_status, IDLE, "status after insert in autocommit")
    other = ctx.connect()
    try:
        got = other.execute(f"select count(*) from {ctx.table} where kind = 'ac-on'").fetchone()
        expect_eq(got, (1,), "autocommitted row from another connection")
    finally:
        ctx.close(other)
    # Toggle autocommit off and back on the same connection.
    conn.autocommit = False
    try:
        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-toggle')", (501,))
        expect_eq(conn.info.transaction_status, INTRANS, "status after insert with autocommit off")
        conn.rollback()
    finally:
        if conn.info.transaction_status != IDLE:
            conn.rollback()
        conn.autocommit = True
    got = conn.execute(f"select count(*) from {ctx.table} where kind = 'ac-toggle'").fetchone()
    expect_eq(got, (0,), "rolled-back row after toggling autocommit")


def check_autocommit_off(ctx):
    ctx.need_table()
    conn = ctx.connect(autocommit=False)
    observer = ctx.connect()
    try:
        expect(not conn.autocommit, "autocommit should be off")
        expect_eq(conn.execute("select 1").fetchone(), (1,), "select 1")
        expect_eq(conn.info.transaction_status, INTRANS, "implicit BEGIN after first statement")
        conn.commit()
        expect_eq(conn.info.transaction_status, IDLE, "status after commit")

        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-off')", (600,))
        got = observer.execute(f"select count(*) from {ctx.table} where id = 600").fetchone()
        expect_eq(got, (0,), "uncommitted row visible to another connection")
        conn.rollback()
        got = conn.execute(f"select count(*) from {ctx.table} where id = 600").fetchone()
        expect_eq(got, (0,), "row after rollback")
        conn.rollback()

        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-off')", (601,))
        conn.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-off')", (602,), prepare=True)
        conn.commit()
        got = observer.execute(f"select array_agg(id order by id) from {ctx.table} where kind = 'ac-off'").fetchone()
        expect_eq(got, ([601, 602],), "committed rows from another connection")

        # Error in implicit transaction -> INERROR -> rollback -> usable.
        expect_raises(pgerr.DivisionByZero, "22012", lambda: conn.execute("select 1/0"), "1/0 with autocommit off")
        expect_eq(conn.info.transaction_status, INERROR, "status after error")
        conn.rollback()
        expect_eq(conn.execute("select 2").fetchone(), (2,), "select after rollback")
        conn.rollback()

        # Connection context manager commits on clean exit.
        with ctx.connect(autocommit=False) as c2:
            c2.execute(f"insert into {ctx.table} (id, kind) values (%s, 'ac-off-ctx')", (603,))
        ctx.close(c2)
        got = observer.execute(f"select count(*) from {ctx.table} where kind = 'ac-off-ctx'").fetchone()
        expect_eq(got, (1,), "row committed by connection context manager")
    finally:
        ctx.close(conn)
        ctx.close(observer)


def check_named_cursor(ctx):
    conn = ctx.need_conn()
    n = 5000
    name = f"tg_cur_{ctx.suffix}"
    with conn.transaction():
        with conn.cursor(name) as cur:
            cur.execute(
                "select g, md5(g::text) from generate_series(1, %s::int) g order by g", (n,)
            )
            total = 0
            batches = 0
            while True:
                rows = cur.fetchmany(700)
                if not rows:
                    break
                batches += 1
                for g, h in rows:
                    total += 1
                    if g != total:
                        raise CheckError(f"row {total}: got g={g}")
                    if h != hashlib.md5(str(g).encode()).hexdigest():
                        raise CheckError(f"row {total}: md5 mismatch")
            expect_eq(total, n, "rows fetched in batches")
            expect_eq(batches, (n + 699) // 700, "number of batches")
            # The cursor really exists server-side.
            got = conn.execute("select count(*) from pg_cursors where name = %s", (name,)).fetchone()
            expect_eq(got, (1,), "pg_cursors entry for named cursor")
        # Iteration with itersize and a scrollable cursor.
        with conn.cursor(name + "_s", scrollable=True) as cur:
            cur.itersize = 1000
            cur.execute("select g from generate_series(1, %s::int) g order by g", (n,))
            expect_eq(sum(1 for _ in cur), n, "iterated rows")
            cur.scroll(0, mode="absolute")
            expect_eq(cur.fetchone(), (1,), "first row after scroll(0)")
            cur.scroll(2498)
            expect_eq(cur.fetchone(), (2500,), "row after relative scroll")
    expect_eq(conn.info.transaction_status, IDLE, "status after named-cursor transaction")


def check_notices(ctx):
    conn = ctx.need_conn()
    received = []

    def handler(diag):
        received.append((diag.severity_nonlocalized, diag.message_primary, diag.sqlstate))

    conn.add_notice_handler(handler)
    try:
        conn.execute(
            f"do $$ begin raise notice 'tg notice %', 42; raise warning 'tg warning {ctx.suffix}'; end $$"
        )
        with conn.transaction():
            conn.execute("do $$ begin raise notice 'tg in tx'; end $$")
            conn.execute("select 1").fetchone()
        # Notice raised during a parameterised (extended protocol) query.
        conn.execute(
            "select %s::int",
            (5,),
        ).fetchone()
        conn.execute("do $$ begin raise notice using message = 'tg last', errcode = '01000'; end $$")
    finally:
        conn.remove_notice_handler(handler)
    mine = [r for r in received if r[1] and r[1].startswith("tg ")]
    expect_eq(
        mine,
        [
            ("NOTICE", "tg notice 42", "00000"),
            ("WARNING", f"tg warning {ctx.suffix}", "01000"),
            ("NOTICE", "tg in tx", "00000"),
            ("NOTICE", "tg last", "01000"),
        ],
        "notices received",
    )
    # Handler removed: no more deliveries.
    conn.execute("do $$ begin raise notice 'tg after removal'; end $$")
    expect_eq(len([r for r in received if r[1] == "tg after removal"]), 0, "notice after handler removal")


def check_cleanup(ctx):
    conn = ctx.need_conn()
    conn.execute(f"drop table if exists {ctx.table}, {ctx.copy_table}")
    ctx.table_created = False
    got = conn.execute("select count(*) from pg_class where relname like %s", (f"tg_drv_{ctx.suffix}%",)).fetchone()
    expect_eq(got, (0,), "relations left after drop")


CHECKS = [
    ("connect", check_connect),
    ("simple_query", check_simple_query),
    ("create_tables", check_create_tables),
    ("prepared_repeat_50", check_prepared_repeat_50),
    ("pipeline", check_pipeline),
    ("copy_from_stdin_10000", check_copy_in_10000),
    ("copy_to_stdout", check_copy_out),
    ("transaction_rollback", check_transaction_rollback),
    ("savepoint", check_savepoint),
    ("errors_sqlstate", check_errors_sqlstate),
    ("binary_params", check_binary_params),
    ("autocommit_on", check_autocommit_on),
    ("autocommit_off", check_autocommit_off),
    ("named_cursor_5000", check_named_cursor),
    ("notices", check_notices),
    ("cleanup", check_cleanup),
]


def one_line(text):
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe(exc):
    if isinstance(exc, CheckError):
        return str(exc)
    if isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__} sqlstate={exc.sqlstate}: {str(exc).strip()}"
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
    where = f" (at {os.path.basename(__file__)}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}{where}: {exc}"


TALLY = {"passed": 0, "failed": 0}


def emergency_cleanup(ctx):
    try:
        c = ctx.connect()
        try:
            c.execute(f"drop table if exists {ctx.table}, {ctx.copy_table}")
        finally:
            ctx.close(c)
    except Exception as e:
        print(f"# warning: emergency cleanup failed: {one_line(describe(e))}", flush=True)


def main(dsn):
    ctx = Ctx(dsn)
    cleanup_ok = False
    for name, fn in CHECKS:
        timed_out = threading.Event()

        def on_timeout():
            timed_out.set()
            ctx.cancel_all()

        timer = threading.Timer(CHECK_TIMEOUT, on_timeout)
        timer.daemon = True
        timer.start()
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001 - report everything
            timer.cancel()
            TALLY["failed"] += 1
            why = describe(e)
            if timed_out.is_set():
                why = f"timed out after {CHECK_TIMEOUT:.0f}s ({why})"
            print(f"FAIL {name}: {one_line(why)}", flush=True)
            ctx.recover()
        else:
            timer.cancel()
            if timed_out.is_set():
                TALLY["failed"] += 1
                print(f"FAIL {name}: timed out after {CHECK_TIMEOUT:.0f}s", flush=True)
                ctx.recover()
            else:
                TALLY["passed"] += 1
                if name == "cleanup":
                    cleanup_ok = True
                print(f"ok {name}", flush=True)
    if not cleanup_ok and ctx.ever_connected:
        emergency_cleanup(ctx)
    with ctx.lock:
        leftovers = list(ctx.open_conns)
    for c in leftovers:
        ctx.close(c)
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
    watchdog = threading.Timer(GLOBAL_TIMEOUT, _global_watchdog)
    watchdog.daemon = True
    watchdog.start()
    rc = main(sys.argv[1])
    watchdog.cancel()
    sys.exit(rc)
