//! Reading rows back in the SQLite backend's unit tests. Test code only.

use rusqlite::Connection;
use rusqlite::types::FromSql;

/// The three columns of every row `sql` selects.
pub fn rows<A: FromSql, B: FromSql, C: FromSql>(conn: &Connection, sql: &str) -> Vec<(A, B, C)> {
    conn.prepare(sql)
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}
