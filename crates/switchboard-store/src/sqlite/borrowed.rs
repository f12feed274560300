//! Statements driven through SQLite's C API so that SQLite borrows the text they are bound
//! (`SQLITE_STATIC`) instead of copying it: rusqlite binds every text `SQLITE_TRANSIENT`, a
//! `malloc`, `memcpy` and `free` per value, and its generic binding costs more than the call
//! it makes. For the writer's hottest statements only (the publish's inserts, the ack's
//! statements); everything else goes through rusqlite. Knows nothing of the tables.
//!
//! Soundness rests on one rule: a binding lives for one [`Borrowed::execute`]. The statement
//! is reset and its bindings cleared before `execute` returns, whichever way it returns, so
//! SQLite never holds a pointer past the borrow it was given.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::{Connection, ffi};

use crate::StoreError;

/// One prepared statement, finalized when dropped.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful prepare and is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

/// The prepared statements of one connection, by their text: every `execute` must be given
/// that connection.
///
/// Must be dropped before its connection is closed (a connection with statements left
/// unfinalized fails to close): `WriteCtx` declares it before the connection, and Rust drops
/// fields in declaration order.
#[derive(Default)]
pub struct Borrowed {
    statements: Vec<(&'static str, Statement)>,
}

// SAFETY: the statements belong to one connection and are only used through `&mut self`
// together with that connection, which moves to the writer thread with them (rusqlite's
// `Connection` is `Send`); SQLite is built thread-safe.
unsafe impl Send for Borrowed {}

impl Borrowed {
    /// Runs `sql` (an `INSERT`, `UPDATE` or `DELETE` without `RETURNING`) with the parameters
    /// `bind` gives it, and returns how many rows it changed. `sql` is prepared on its first
    /// use on this connection and kept.
    pub fn execute<'p>(
        &mut self,
        conn: &Connection,
        sql: &'static str,
        bind: impl FnOnce(&mut Params<'p>),
    ) -> Result<usize, StoreError> {
        let stmt = self.statement(conn, sql)?;
        let mut params = Params {
            stmt,
            failed: ffi::SQLITE_OK,
            _borrowed: PhantomData,
        };
        // Resets and clears the statement whatever happens from here on.
        let _reset = Reset(stmt);
        bind(&mut params);
        // SAFETY: the statement is valid until it is finalized; its connection is alive, as
        // `Borrowed` is dropped before it (see the type's documentation).
        let db = unsafe { ffi::sqlite3_db_handle(stmt.as_ptr()) };
        // One `Borrowed` serves one connection.
        debug_assert_eq!(
            db,
            unsafe { conn.handle() },
            "statement of another connection"
        );
        if params.failed != ffi::SQLITE_OK {
            return Err(failure(db, params.failed));
        }
        // SAFETY: a valid statement, every parameter bound to data that outlives this call.
        match unsafe { ffi::sqlite3_step(stmt.as_ptr()) } {
            ffi::SQLITE_DONE => Ok(unsafe { ffi::sqlite3_changes64(db) } as usize),
            ffi::SQLITE_ROW => Err(StoreError::Internal(format!(
                "statement returned rows where none were expected: {sql}"
            ))),
            rc => Err(failure(db, rc)),
        }
    }

    fn statement(
        &mut self,
        conn: &Connection,
        sql: &'static str,
    ) -> Result<NonNull<ffi::sqlite3_stmt>, StoreError> {
        if let Some((_, s)) = self.statements.iter().find(|(t, _)| std::ptr::eq(*t, sql)) {
            return Ok(s.0);
        }
        let mut raw: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        // SAFETY: the connection's handle is valid while `conn` is borrowed; the text and its
        // length are a valid `&str`; `raw` receives the statement.
        let rc = unsafe {
            let db = conn.handle();
            let rc = ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                sql.len() as c_int,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut raw,
                std::ptr::null_mut(),
            );
            match rc {
                ffi::SQLITE_OK => rc,
                rc => return Err(failure(db, rc)),
            }
        };
        let stmt = NonNull::new(raw).ok_or_else(|| {
            StoreError::Internal(format!("no statement in the text (rc {rc}): {sql}"))
        })?;
        self.statements.push((sql, Statement(stmt)));
        Ok(stmt)
    }
}

/// The parameters of one execution. Text is borrowed for `'p`, which outlives the execution.
/// A binding that fails is reported by `execute`, before the statement runs.
pub struct Params<'p> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    /// The first failed binding's result code.
    failed: c_int,
    _borrowed: PhantomData<&'p str>,
}

impl<'p> Params<'p> {
    fn check(&mut self, rc: c_int) {
        if self.failed == ffi::SQLITE_OK {
            self.failed = rc;
        }
    }

    /// Parameter `i` (from 1) to `value`.
    pub fn int(&mut self, i: usize, value: i64) {
        // SAFETY: a valid statement; SQLite checks the index.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), i as c_int, value) };
        self.check(rc);
    }

    /// Parameter `i` to `value`, which SQLite reads in place until the execution ends.
    pub fn text(&mut self, i: usize, value: &'p str) {
        // SAFETY: `value` outlives the execution (`'p`), after which the binding is cleared.
        unsafe { self.bind_text(i, value, ffi::SQLITE_STATIC()) }
    }

    /// Binds text with `destructor`, SQLite's word on how long `value` lives.
    ///
    /// # Safety
    /// With `SQLITE_STATIC`, `value` must outlive the execution.
    unsafe fn bind_text(
        &mut self,
        i: usize,
        value: &str,
        destructor: ffi::sqlite3_destructor_type,
    ) {
        // SAFETY: a valid statement; the text and its length are a valid `&str`; how long it
        // must live is the caller's contract.
        let rc = unsafe {
            ffi::sqlite3_bind_text64(
                self.stmt.as_ptr(),
                i as c_int,
                value.as_ptr().cast(),
                value.len() as ffi::sqlite3_uint64,
                destructor,
                ffi::SQLITE_UTF8 as u8,
            )
        };
        self.check(rc);
    }

    /// Parameter `i` to `value`, or `NULL`.
    pub fn opt_text(&mut self, i: usize, value: Option<&'p str>) {
        match value {
            Some(v) => self.text(i, v),
            None => {
                // SAFETY: a valid statement; SQLite checks the index.
                let rc = unsafe { ffi::sqlite3_bind_null(self.stmt.as_ptr(), i as c_int) };
                self.check(rc);
            }
        }
    }

    /// Parameter `i` to a text made for this execution (SQLite copies it): for values the
    /// caller does not keep, which are rare on the hot paths.
    pub fn owned_text(&mut self, i: usize, value: &str) {
        // SAFETY: SQLITE_TRANSIENT makes SQLite copy the text before the call returns.
        unsafe { self.bind_text(i, value, ffi::SQLITE_TRANSIENT()) }
    }
}

/// Resets a statement and clears its bindings when dropped.
struct Reset(NonNull<ffi::sqlite3_stmt>);

impl Drop for Reset {
    fn drop(&mut self) {
        // SAFETY: a valid statement. `sqlite3_reset` repeats the last step's error, which
        // `execute` already reported.
        unsafe {
            ffi::sqlite3_reset(self.0.as_ptr());
            ffi::sqlite3_clear_bindings(self.0.as_ptr());
        }
    }
}

/// The connection's error for result code `rc`, as rusqlite would report it.
fn failure(db: *mut ffi::sqlite3, rc: c_int) -> StoreError {
    // SAFETY: a valid connection handle; the message is copied before anything else runs on
    // the connection.
    let (code, message) = unsafe {
        let code = match ffi::sqlite3_extended_errcode(db) {
            0 => rc,
            extended => extended,
        };
        let message = CStr::from_ptr(ffi::sqlite3_errmsg(db))
            .to_string_lossy()
            .into_owned();
        (code, message)
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c TEXT UNIQUE)")
            .expect("create");
        conn
    }

    const INSERT: &str = "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?3)";

    fn rows(conn: &Connection) -> Vec<(i64, Option<String>, Option<String>)> {
        crate::sqlite::test_rows::rows(conn, "SELECT a, b, c FROM t ORDER BY a")
    }

    #[test]
    fn borrowed_text_is_stored_as_it_was_when_the_statement_ran() {
        let conn = table();
        let mut borrowed = Borrowed::default();
        for (a, b) in [(1, "one"), (2, "two")] {
            // A text that is gone once `execute` returns: SQLite must not read it later.
            let b = format!("{b}!");
            let changed = borrowed
                .execute(&conn, INSERT, |p| {
                    p.int(1, a);
                    p.text(2, &b);
                    p.opt_text(3, None);
                })
                .expect("insert");
            assert_eq!(changed, 1);
        }
        borrowed
            .execute(&conn, INSERT, |p| {
                p.int(1, 3);
                p.owned_text(2, &String::from("three"));
                p.opt_text(3, Some("c"));
            })
            .expect("insert");
        assert_eq!(
            rows(&conn),
            vec![
                (1, Some("one!".into()), None),
                (2, Some("two!".into()), None),
                (3, Some("three".into()), Some("c".into())),
            ]
        );
        assert_eq!(borrowed.statements.len(), 1, "prepared once");
    }

    #[test]
    fn a_parameter_left_unbound_is_null_not_the_last_value() {
        let conn = table();
        let mut borrowed = Borrowed::default();
        borrowed
            .execute(&conn, INSERT, |p| {
                p.int(1, 1);
                p.text(2, "kept");
                p.text(3, "x");
            })
            .expect("insert");
        borrowed
            .execute(&conn, INSERT, |p| p.int(1, 2))
            .expect("insert");
        assert_eq!(rows(&conn)[1], (2, None, None));
    }

    #[test]
    fn failures_are_reported_and_change_nothing() {
        let conn = table();
        let mut borrowed = Borrowed::default();
        let insert = |borrowed: &mut Borrowed, a: i64| {
            borrowed.execute(&conn, INSERT, |p| {
                p.int(1, a);
                p.text(3, "same");
            })
        };
        insert(&mut borrowed, 1).expect("first");
        let err = insert(&mut borrowed, 2).expect_err("a unique column twice");
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        let err = borrowed
            .execute(&conn, INSERT, |p| p.int(4, 1))
            .expect_err("no parameter 4");
        assert!(err.to_string().contains("range"), "{err}");
        let err = borrowed
            .execute(&conn, "INSERT INTO nowhere VALUES (1)", |_| {})
            .expect_err("no such table");
        assert!(err.to_string().contains("nowhere"), "{err}");
        assert_eq!(rows(&conn).len(), 1);
        // The statement is usable again after each failure.
        insert(&mut borrowed, 5)
            .map(|_| ())
            .expect_err("still unique");
        conn.execute("DELETE FROM t", []).expect("delete");
        insert(&mut borrowed, 6).expect("after the failures");
        assert_eq!(rows(&conn), vec![(6, None, Some("same".into()))]);
    }
}
