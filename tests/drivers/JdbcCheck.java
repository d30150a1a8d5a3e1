// PostgreSQL JDBC conformance through the proxy.
// Usage: java -cp postgresql.jar:DIR JdbcCheck JDBC_URL USER PASSWORD
// Prints "ok <name>" / "FAIL <name>: why" per check and "N passed, M failed"; exit 0 only
// when all pass. prepareThreshold=1 makes every statement a named server-side one.
import java.sql.*;
import java.util.*;

public class JdbcCheck {
    interface Check { void run() throws Exception; }
    static int passed = 0, failed = 0;

    static void check(String name, Check c) {
        try { c.run(); System.out.println("ok " + name); passed++; }
        catch (Throwable e) { System.out.println("FAIL " + name + ": " + String.valueOf(e).replace('\n', ' ')); failed++; }
    }

    static void require(boolean cond, String msg) { if (!cond) throw new AssertionError(msg); }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        p.setProperty("prepareThreshold", "1");
        p.setProperty("connectTimeout", "10");
        p.setProperty("socketTimeout", "30");
        String t = "tg_jdbc_" + Long.toHexString(new Random().nextLong() & 0xffffffffL);
        Connection c = DriverManager.getConnection(args[0], p);
        check("simple", () -> {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 1")) {
                require(r.next() && r.getInt(1) == 1, "select 1");
            }
        });
        check("create_table", () -> {
            try (Statement s = c.createStatement()) { s.execute("CREATE TABLE " + t + " (id int PRIMARY KEY, name text)"); }
        });
        check("prepared_and_batch", () -> {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " VALUES (?, ?)")) {
                for (int i = 0; i < 500; i++) { ps.setInt(1, i); ps.setString(2, "n" + i); ps.addBatch(); }
                int[] n = ps.executeBatch();
                require(n.length == 500, "batch");
            }
            try (PreparedStatement q = c.prepareStatement("SELECT name FROM " + t + " WHERE id = ?")) {
                for (int i = 0; i < 50; i++) {
                    q.setInt(1, i);
                    try (ResultSet r = q.executeQuery()) { require(r.next() && r.getString(1).equals("n" + i), "row " + i); }
                }
            }
        });
        check("transaction_and_fetch_size", () -> {
            c.setAutoCommit(false);
            try (PreparedStatement q = c.prepareStatement("SELECT g FROM generate_series(1, 20000) g")) {
                q.setFetchSize(1000);
                long sum = 0; int rows = 0;
                try (ResultSet r = q.executeQuery()) { while (r.next()) { sum += r.getInt(1); rows++; } }
                require(rows == 20000 && sum == 200010000L, "rows " + rows + " sum " + sum);
            }
            try (Statement s = c.createStatement()) { s.execute("INSERT INTO " + t + " VALUES (9999, 'x')"); }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM " + t + " WHERE id = 9999")) {
                require(r.next() && r.getInt(1) == 0, "rolled back row visible");
            }
        });
        check("errors", () -> {
            String state = null;
            try (Statement s = c.createStatement()) { s.executeQuery("SELECT 1/0"); } catch (SQLException e) { state = e.getSQLState(); }
            require("22012".equals(state), "sqlstate " + state);
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 2")) { require(r.next() && r.getInt(1) == 2, "usable"); }
        });
        check("cleanup", () -> { try (Statement s = c.createStatement()) { s.execute("DROP TABLE " + t); } });
        c.close();
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
