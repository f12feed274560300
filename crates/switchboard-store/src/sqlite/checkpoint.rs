//! WAL checkpoints off the commit path, and a WAL that does not grow without bound.
//!
//! SQLite's automatic checkpoint would run inside a group commit (copying pages and fsyncing
//! the database file while every waiting request waits). Instead the writer never
//! checkpoints on commit, and this module's thread runs a PASSIVE checkpoint, which never
//! blocks the writer or readers, every few hundred milliseconds (at once again while it is
//! behind). Under sustained writes a passive checkpoint never finds the WAL idle, so SQLite
//! never starts it over from the beginning: it would grow for as long as the load lasts, and
//! every fsync of a growing file also commits its new size and blocks (about twice the cost
//! of overwriting). So the writer, between two groups, restarts the WAL itself once it is
//! long and the checkpointer has copied nearly all of it ([`restart_if_due`]): a short
//! RESTART checkpoint of the remaining frames, after which new frames overwrite the old ones.
//! The first round would still grow the file, one fsync'd size change per commit: so the
//! store opens with the WAL already as long as a round ([`presize_wal`]).
//! Owned by the store and stopped on close; must never wait for readers.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// The pause between passive checkpoints when the last one had caught up.
const EVERY: Duration = Duration::from_millis(250);
/// The pause while the checkpointer is behind the writer.
const BEHIND: Duration = Duration::from_millis(20);
/// The WAL is restarted once it holds this many frames (pages): 16 MiB of 4 KiB pages.
const RESTART_AT: i64 = 4096;
/// ...when at most this many of them are not yet copied into the database file,
const LEFT_AT_MOST: i64 = 512;
/// ...or at any rate once it is this long, whatever the copy of the rest costs.
const RESTART_ANYWAY_AT: i64 = 4 * RESTART_AT;

/// Makes the WAL file at least as long as the WAL gets before the writer restarts it
/// ([`RESTART_AT`] frames of `page_size`), writing zeros past its end, and makes that
/// durable. Every commit of the first round then overwrites blocks the file already has,
/// as every later round does: an fdatasync that also commits a new file size took two to
/// three times as long (`switchboard-bench`, latency at 1,000 events/s: the first half
/// second after a start held half of the run's slowest 1%).
///
/// Only for a WAL no connection is writing: zeros go past the end of what SQLite wrote,
/// which it reads as the end of the log (a frame is valid only with its log's salt and
/// checksum), as it does the old frames past the end after a restart.
///
/// The zeros go one page per write: the kernel caches a file in folios as large as the
/// writes that made them, and a commit's few small writes dirty whole folios, which the
/// fdatasync then writes out. Written 1 MiB at a time, the WAL cost 530 KB of disk writes
/// per event at 1,000 events/s (`/proc/PID/io`, `write_bytes`) instead of 47 KB.
pub fn presize_wal(wal: &File, page_size: u64) -> std::io::Result<()> {
    const HEADER: u64 = 32;
    const FRAME_HEADER: u64 = 24;
    let target = HEADER + RESTART_AT as u64 * (FRAME_HEADER + page_size);
    let len = wal.metadata()?.len();
    if len >= target {
        return Ok(());
    }
    let mut file = wal;
    file.seek(SeekFrom::Start(len))?;
    let zeros = vec![0u8; page_size as usize];
    let mut at = len;
    while at < target {
        let n = (target - at).min(zeros.len() as u64);
        file.write_all(&zeros[..n as usize])?;
        at += n;
    }
    file.sync_all()
}

/// How long the WAL is and how much of it the checkpointer has copied, as of its last run.
#[derive(Debug, Default)]
pub struct WalProgress {
    frames: AtomicI64,
    copied: AtomicI64,
}

pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub fn spawn(path: &Path, progress: Arc<WalProgress>) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(100))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("switchboard-checkpoint".into())
            .spawn(move || {
                let mut pause = EVERY;
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(pause);
                    pause = match checkpoint(&conn, "PASSIVE") {
                        Ok(Checkpoint { frames, copied, .. }) => {
                            progress.frames.store(frames, Ordering::Relaxed);
                            progress.copied.store(copied, Ordering::Relaxed);
                            if frames - copied > LEFT_AT_MOST {
                                BEHIND
                            } else {
                                EVERY
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "passive checkpoint skipped");
                            EVERY
                        }
                    };
                }
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer { stop, thread })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// What a checkpoint reported.
struct Checkpoint {
    /// It could not finish: a reader (or, for RESTART, a reader of the old frames) held on.
    busy: bool,
    /// Frames in the WAL.
    frames: i64,
    /// Frames of them copied into the database file.
    copied: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpoint> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

/// Called by the writer between groups, outside any transaction: restarts the WAL when it is
/// due (see the module comment). Never waits for a reader: if one still reads the old frames,
/// the restart is left for a later call.
pub fn restart_if_due(conn: &Connection, progress: &WalProgress) {
    let frames = progress.frames.load(Ordering::Relaxed);
    let left = frames - progress.copied.load(Ordering::Relaxed);
    let due = frames >= RESTART_ANYWAY_AT || (frames >= RESTART_AT && left <= LEFT_AT_MOST);
    if !due {
        return;
    }
    let started = std::time::Instant::now();
    // RESTART would wait for readers through the busy handler: not on the writer's time.
    let restarted = conn
        .busy_timeout(Duration::ZERO)
        .and_then(|()| checkpoint(conn, "RESTART"));
    if let Err(e) = conn.busy_timeout(super::BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore the writer's busy timeout");
    }
    // Whatever happened, the next try waits for the checkpointer's next report, so a reader
    // holding old frames for long costs one try per checkpointer run, not one per group.
    progress.frames.store(0, Ordering::Relaxed);
    progress.copied.store(0, Ordering::Relaxed);
    match restarted {
        Ok(Checkpoint { busy: false, .. }) => {
            metrics::histogram!("switchboard_store_wal_restart_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        Ok(Checkpoint { busy: true, .. }) => {
            tracing::debug!("WAL restart left for later: a reader still reads old frames");
        }
        Err(e) => tracing::debug!(error = %e, "WAL restart left for later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("t.db-wal")).map_or(0, |m| m.len())
    }

    /// A connection like the writer's: WAL, no automatic checkpoints.
    fn writer_like(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("t.db")).expect("open");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no autocheckpoint");
        conn.execute_batch("CREATE TABLE t (v BLOB)")
            .expect("table");
        conn
    }

    fn write_pages(conn: &Connection, n: usize) {
        for _ in 0..n {
            conn.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .expect("insert");
        }
    }

    /// The WAL's length before and after 20 more pages, when the writer is offered a
    /// restart with the checkpointer reporting `frames` of which none copied; and the frames
    /// the progress reports afterwards.
    fn wal_around_a_restart(frames: i64) -> (u64, u64, i64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = writer_like(dir.path());
        write_pages(&conn, 200);
        let long = wal_len(dir.path());
        let progress = WalProgress::default();
        progress.frames.store(frames, Ordering::Relaxed);
        restart_if_due(&conn, &progress);
        write_pages(&conn, 20);
        (
            long,
            wal_len(dir.path()),
            progress.frames.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn presizing_lengthens_a_short_wal_and_leaves_a_long_one_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let round = 32 + RESTART_AT as u64 * (24 + 4096);
        for (len, expected) in [(0, round), (1000, round), (round + 1, round + 1)] {
            let path = dir.path().join("w");
            let wal = File::create(&path).expect("create");
            wal.set_len(len).expect("set_len");
            presize_wal(&wal, 4096).expect("presize");
            assert_eq!(
                wal.metadata().expect("metadata").len(),
                expected,
                "from {len}"
            );
        }
    }

    #[test]
    fn a_due_restart_makes_new_frames_overwrite_the_wal() {
        let (before, after, frames) = wal_around_a_restart(RESTART_ANYWAY_AT);
        assert_eq!(after, before, "the WAL started over: no growth");
        assert_eq!(frames, 0);
    }

    #[test]
    fn no_restart_before_it_is_due() {
        // Long enough, but too much of it not yet copied by the checkpointer.
        let (before, after, _) = wal_around_a_restart(RESTART_AT);
        assert!(after > before, "the WAL kept growing");
    }

    #[test]
    fn a_reader_of_old_frames_defers_the_restart_without_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = writer_like(dir.path());
        conn.busy_timeout(super::super::BUSY_TIMEOUT)
            .expect("busy timeout");
        write_pages(&conn, 200);
        // A reader in the middle of a read transaction over the current frames.
        let reader = Connection::open(dir.path().join("t.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(rows, 200);
        let progress = WalProgress::default();
        progress.frames.store(RESTART_ANYWAY_AT, Ordering::Relaxed);
        restart_if_due(&conn, &progress);
        let long = wal_len(dir.path());
        write_pages(&conn, 20);
        assert!(wal_len(dir.path()) > long, "not restarted under the reader");
        assert_eq!(progress.frames.load(Ordering::Relaxed), 0, "next try waits");
        let timeout: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .expect("busy timeout");
        let expected = i64::try_from(super::super::BUSY_TIMEOUT.as_millis()).expect("ms");
        assert_eq!(timeout, expected, "the writer's busy timeout is back");
    }
}
