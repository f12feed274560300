//! The page cache wrapper (pcache.rs) in a process of its own: it must be installed before
//! SQLite initializes, which the other test binaries' parallel tests do not promise.

use rusqlite::Connection;
use switchboard_store::sqlite::{install_page_cache, truncations};

/// Rows of `n` random-looking keys, inserted into and deleted from an index so that its
/// pages split, free and get reused out of order (what makes a balance park a page).
fn churn(conn: &Connection, round: u64, n: u64) {
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..n {
        let k = (round * n + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1;
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, zeroblob(200))",
            [k as i64],
        )
        .unwrap();
    }
    tx.execute("DELETE FROM t WHERE k % 3 = 0", []).unwrap();
    tx.commit().unwrap();
}

#[test]
fn commits_skip_the_cache_walk_and_a_rollback_still_drops_its_pages() {
    assert!(install_page_cache(), "installed before SQLite initialized");
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("t.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER NOT NULL, v BLOB);
         CREATE INDEX t_k ON t(k);",
    )
    .unwrap();

    let before = truncations();
    for round in 0..50 {
        churn(&conn, round, 200);
    }
    let after = truncations();
    assert!(
        after.skipped - before.skipped >= 50,
        "every commit truncated the cache: {before:?} → {after:?}"
    );
    assert_eq!(
        after.passed_on, before.passed_on,
        "no commit had pages past the database's end"
    );

    // A transaction that grows the file and rolls back leaves pages past its end: those
    // must go, or the next transaction would find them.
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..2_000 {
        tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(2000))", [-i - 1])
            .unwrap();
    }
    tx.rollback().unwrap();
    assert!(
        truncations().passed_on > after.passed_on,
        "the rollback's truncation went to SQLite's cache"
    );
    churn(&conn, 1_000, 200);
    let now: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let kept: i64 = conn
        .query_row("SELECT count(*) FROM t WHERE k < 0", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0, "nothing of the rolled-back transaction");
    assert!(now > rows, "the later commit's rows are there");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
