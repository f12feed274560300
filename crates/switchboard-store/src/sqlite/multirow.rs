//! Multi-row `INSERT`s: rows inserted up to 64 per statement, so a publish of many events
//! pays SQLite's per-statement cost (binding, cursors, halting) once per chunk instead of once
//! per row. Knows nothing of the tables it inserts into.

use rusqlite::Connection;

use super::borrowed::{Borrowed, Params};
use crate::StoreError;

/// The row counts of the statements, largest first: any number of rows is a sum of them.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// One multi-row `INSERT`: its statement text for each chunk size, written once.
pub struct MultiRow {
    sql: [String; 4],
    /// Parameters shared by every row, numbered from 1; each row's come after them.
    shared: usize,
    per_row: usize,
}

impl MultiRow {
    /// `head` is the statement up to `VALUES`; `row(first)` is one row's tuple whose own
    /// parameters are numbered from `first` (`per_row` of them). A shared parameter (`?1` to
    /// `?shared`) may appear in any row.
    pub fn new(
        head: &str,
        shared: usize,
        per_row: usize,
        row: impl Fn(usize) -> String,
    ) -> MultiRow {
        let sql = CHUNKS.map(|size| {
            let values: Vec<String> = (0..size).map(|r| row(shared + 1 + r * per_row)).collect();
            format!("{head} VALUES {}", values.join(", "))
        });
        MultiRow {
            sql,
            shared,
            per_row,
        }
    }

    /// Inserts `rows`: `bind_shared` binds the shared parameters of each statement,
    /// `bind(params, first, row)` a row's own from `first`. The statements are `statements`'
    /// (see borrowed.rs): the rows' text is bound where it lies.
    pub fn insert<'p, R>(
        &'static self,
        conn: &Connection,
        statements: &mut Borrowed,
        rows: &'p [R],
        bind_shared: impl Fn(&mut Params<'p>),
        bind: impl Fn(&mut Params<'p>, usize, &'p R),
    ) -> Result<(), StoreError> {
        let mut rest = rows;
        while !rest.is_empty() {
            let (size, sql) = CHUNKS
                .iter()
                .zip(self.sql.iter())
                .find(|(n, _)| **n <= rest.len())
                .expect("1 fits any non-empty rest");
            let (chunk, after) = rest.split_at(*size);
            statements.execute(conn, sql, |params| {
                bind_shared(params);
                for (r, row) in chunk.iter().enumerate() {
                    bind(params, self.shared + 1 + r * self.per_row, row);
                }
            })?;
            rest = after;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts `n` rows through a `MultiRow` with one shared parameter and reads them back.
    fn check_insert(n: i64) {
        static INSERT: std::sync::LazyLock<MultiRow> = std::sync::LazyLock::new(|| {
            MultiRow::new("INSERT INTO t (a, b, shared)", 1, 2, |p| {
                format!("(?{}, ?{}, ?1)", p, p + 1)
            })
        });
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, shared INTEGER)")
            .expect("create");
        let mut statements = Borrowed::default();
        let rows: Vec<(i64, String)> = (0..n).map(|i| (i, format!("row {i}"))).collect();
        INSERT
            .insert(
                &conn,
                &mut statements,
                &rows,
                |params| params.int(1, 7),
                |params, p, (a, b)| {
                    params.int(p, *a);
                    params.text(p + 1, b);
                },
            )
            .expect("insert");
        let back: Vec<(i64, String, i64)> = conn
            .prepare("SELECT a, b, shared FROM t ORDER BY rowid")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let expect: Vec<(i64, String, i64)> = rows.into_iter().map(|(a, b)| (a, b, 7)).collect();
        assert_eq!(back, expect, "{n} rows");
    }

    #[test]
    fn any_number_of_rows_goes_in_once_and_in_order() {
        for n in [0, 1, 3, 4, 5, 16, 21, 63, 64, 65, 150] {
            check_insert(n);
        }
    }
}
