//! The embedded store: SQLite in WAL mode in the data directory. One writer thread commits
//! groups of requests (see `writer`); reads run on a small pool of read connections on the
//! blocking thread pool. Durable on reply: the writer's syncer fsyncs the WAL after each group
//! commit before anyone is answered (see writer.rs).

mod borrowed;
mod channel_ids;
mod checkpoint;
mod counters;
mod deadlines;
mod handoff;
mod idle;
mod inflight;
mod keys;
mod multirow;
mod open_mark;
mod pcache;
mod queue_map;
mod read;
mod ready;
mod recent;
mod rows;
mod schema;
#[cfg(test)]
mod test_rows;
mod unwritten;
mod write;
mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};
use switchboard_core::event::{App, Event};
use switchboard_core::{AppId, EventId, Timestamp};

use self::writer::{Answer, Undo, Writer};
use crate::{
    AckItem, AlertChange, AlertState, AppActivity, AppUpdate, BoxFuture, ChannelQuery,
    ChannelStats, DeadLetterQuery, DeliveryChange, DeliveryPage, EventPage, EventQuery,
    EventRecord, Expired, ExtendItem, KeyGrant, KeyHash, KeyInfo, KeyOwner, LeaseRequest, Leased,
    LeasedDelivery, NackItem, NackResult, NewApp, NewEvent, NewKey, Published, RequeueRequest,
    Requeued, Result, StatsQuery, StatsRow, Store, StoreError, UnackedQuery,
};

pub use pcache::{Truncations, install as install_page_cache, truncations};
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// The database file inside the data directory.
pub const DB_FILE: &str = "switchboard.db";

const READERS: usize = 4;

/// The most rows a lease's or an ack's describing read may touch and still run on the calling
/// thread (see `describe`): page-cache hits, microseconds for the usual small events; for
/// large ones no more than serializing the same events into the reply, which that thread does
/// next anyway.
const INLINE_READ_ROWS: usize = 16;

pub use idle::DEFAULT_SPIN as DEFAULT_WRITER_SPIN;

/// How the embedded store is tuned; [`Default`] is what `switchboard serve` uses unless told
/// otherwise.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long the writer, while lightly loaded, polls for its next job before it sleeps
    /// (see idle.rs): lower latency for CPU at light load. Zero: it sleeps at once.
    pub writer_spin: std::time::Duration,
    /// How many of the latest published events are kept in memory for leases (see
    /// recent.rs). Zero: every lease reads its events.
    pub recent_events: usize,
    /// How many of the newest deliveries the table of open deliveries may leave out (see
    /// open_mark.rs): fewer writes for acks that come soon, more rows for readers of the
    /// open deliveries to read.
    pub open_tail: u64,
    /// How long a group collects the jobs that keep arriving before it commits, once the
    /// fsync before it is done (see writer.rs).
    pub max_group_age: std::time::Duration,
    /// Whether a write yields once before it is queued when the writer has been idle a
    /// moment, so that requests that arrived together share a commit (see `together`).
    /// Tests that order writes by polling each once turn it off.
    pub together: bool,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            writer_spin: idle::DEFAULT_SPIN,
            recent_events: recent::CAPACITY,
            open_tail: open_mark::DEFAULT_TAIL,
            max_group_age: writer::MAX_GROUP_AGE,
            together: true,
        }
    }
}

pub struct SqliteStore {
    writer: Writer,
    /// How many leases the writer keeps with their rows unwritten (see unwritten.rs).
    unwritten: Arc<AtomicUsize>,
    /// How many deliveries lie above the open deliveries' mark (see open_mark.rs).
    above_mark: Arc<std::sync::atomic::AtomicI64>,
    /// The events published lately, for leases (see recent.rs).
    recent: recent::Recent,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpoint::Checkpointer>>,
    readers: Arc<ReadPool>,
    /// `SqliteOptions::together`.
    together: bool,
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// The writer's in-memory state: the channels' ids (channel_ids.rs), and from one walk of the
/// open deliveries through their table (not the whole table of deliveries; an open delivery's
/// row is its state: no ack is folded into it, see schema migration 13) the lease deadlines of those in
/// flight (deadlines.rs) and what an ack needs of them (inflight.rs), and the pending ones
/// each app may lease (ready.rs). One walk per set made a server with 1,000,000 pending
/// deliveries answer 0.55–1.02 s after its start, against 0.51–0.76 s with this one (7
/// alternating starts).
fn load_open(conn: &Connection, open_tail: u64) -> rusqlite::Result<writer::Memory> {
    // The open deliveries above the mark have no entry: their rows say (open_mark.rs).
    let mut stmt = conn.prepare(&format!(
        "SELECT d.status, d.blocked, d.lease_expires_at, d.available_at, d.id, d.event_seq, \
         d.target, d.attempts, o.channel, d.created_at, d.failed_attempts, \
         d.order_key IS NOT NULL FROM open_deliveries o JOIN deliveries d ON d.id = o.id \
         UNION ALL \
         SELECT d.status, d.blocked, d.lease_expires_at, d.available_at, d.id, d.event_seq, \
         d.target, d.attempts, d.channel, d.created_at, d.failed_attempts, \
         d.order_key IS NOT NULL FROM deliveries d WHERE {}",
        open_mark::ABOVE_MARK
    ))?;
    let mut deadlines: Vec<(i64, i64)> = Vec::new();
    let mut flights: Vec<(i64, inflight::Flight)> = Vec::new();
    let mut leasable = ready::Loader::default();
    let mut open = stmt.query([])?;
    while let Some(r) = open.next()? {
        let state: (i64, bool, Option<i64>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let rowid: i64 = r.get(4)?;
        // What the row holds for a lease, and for an ack once leased.
        let row = ready::Pending {
            seq: r.get(5)?,
            attempts: r.get(7)?,
            channel: r.get(8)?,
            created_at: r.get(9)?,
            failing: r.get::<_, u32>(10)? > 0,
            ordered: r.get(11)?,
        };
        match state {
            (1, _, Some(deadline)) => {
                deadlines.push((deadline, rowid));
                if !row.ordered {
                    flights.push((rowid, row.leased(row.attempts, Timestamp(deadline))));
                }
            }
            (0, false, _) => leasable.add(rows::text(r, 6)?, r.get(3)?, rowid, row),
            _ => {}
        }
    }
    Ok(writer::Memory {
        deadlines: deadlines.into_iter().collect(),
        ready: leasable.finish(),
        channel_ids: channel_ids::ChannelIds::load(conn)?,
        in_flight: flights.into_iter().collect(),
        unwritten: unwritten::Unwritten::default(),
        open_mark: open_mark::Mark::load(conn, open_tail)?,
    })
}

/// SQLite's process-wide settings, made before the process's first connection or never
/// (once initialized, SQLite refuses them and keeps its defaults): no memory statistics,
/// whose mutex every allocation took (2.3% of the writer's instructions, hotpath), and the
/// page cache of pcache.rs.
fn configure_process() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        // SAFETY: takes one int; before initialization it only sets a global, after it
        // returns SQLITE_MISUSE and changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
    });
    pcache::install();
}

/// Gives the writer's connection a larger lookaside pool (SQLite's own allocator for the
/// small objects of a connection): the default 48 KB ran out in the multi-row statements,
/// whose bound values then went to malloc. 1,000 slots of 1,200 bytes: 2.7% fewer writer
/// instructions (hotpath); 4,000 slots did no better. Must run before the connection's first
/// statement: the pool cannot change while in use.
fn enlarge_lookaside(conn: &Connection) {
    const SLOT_BYTES: std::ffi::c_int = 1200;
    const SLOTS: std::ffi::c_int = 1000;
    // SAFETY: `conn` is open and has run no statement; with a null buffer SQLite allocates
    // the pool itself and frees it with the connection.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            SLOT_BYTES,
            SLOTS,
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::warn!(rc, "SQLite kept its default lookaside pool for the writer");
    }
}

/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // rusqlite caches 16 prepared statements by default; the write path alone uses more, and
    // re-preparing SQL on every call cost more than the inserts themselves.
    conn.set_prepared_statement_cache_capacity(256);
    // Without the query planner stability guarantee, SQLite (built with STAT4) re-plans a
    // cached statement whenever a rebound parameter might change its plan: the ack path's
    // join keyed by a delivery id was re-prepared on every call, 40% of the writer's time.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;",
    )
}

/// How long the writer must have been idle for a write to wait for the requests that came
/// with it (see `SqliteStore::together`).
const QUIET: std::time::Duration = std::time::Duration::from_micros(100);

impl SqliteStore {
    /// Lets the requests that arrived with this one reach the writer with it: yields once, so
    /// the runtime polls its other tasks and the sockets before this write is queued.
    /// Requests that arrive together (a burst of publishes, an ack beside a publish) then
    /// share a commit and its fsync, instead of the second waiting for the first's fsync
    /// before its own, and a consumer waiting for them gets them in one answer (handoff.rs).
    /// Only once the writer has been idle for [`QUIET`]: requests that come closer together
    /// than that find it busy, and it gathers them into its next group anyway; while they
    /// do, the runtime is busy too, and the yield would hold each write behind its other
    /// tasks until the runtime next polls its sockets (single publishes from 32 publishers
    /// −10% with a yield every time).
    async fn together(&self) {
        if !self.together {
            return;
        }
        let idle = self.writer.idle_for(std::time::Instant::now());
        if idle.is_some_and(|idle| idle >= QUIET) {
            tokio::task::yield_now().await;
        }
    }

    /// A lease; with `park`, one that finds nothing leaves its consumer waiting in the writer
    /// for a publish to hand it deliveries (handoff.rs).
    ///
    /// A lease a crash undoes leaves the delivery pending: handed out again, nothing lost.
    /// The writer changes the rows; the events come from memory, or are read after its
    /// commit, off the writer (see `described`). Should that read fail, the caller gets the
    /// error and the deliveries stay leased until their lease expires: handed out again
    /// then, like any lost answer.
    async fn lease_or_park(
        &self,
        req: LeaseRequest,
        park: Option<handoff::Parked>,
    ) -> Result<Leased> {
        self.together().await;
        let leased = self
            .writer
            .write_as(Answer::AtCommit, Undo::Group, move |ctx| {
                write::lease(ctx, req, park)
            })
            .await?;
        let write::LeasedRows {
            rows,
            lease_expires_at,
            next_ready_at,
        } = leased;
        let built = move |(rowid, attempt, _): (i64, u32, i64), event| LeasedDelivery {
            id: rows::delivery_id(rowid),
            attempt,
            lease_expires_at,
            event,
        };
        let deliveries = self
            .described(
                rows,
                |&(_, _, seq)| seq,
                built,
                move |conn, missing| {
                    let events = read::events_by_seq(conn, missing.iter().map(|&(_, _, seq)| seq))?;
                    let events = events.into_iter().map(Arc::new);
                    Ok(missing
                        .into_iter()
                        .zip(events)
                        .map(|(row, e)| built(row, e))
                        .collect())
                },
            )
            .await?;
        Ok(Leased {
            deliveries,
            next_ready_at,
        })
    }

    /// Opens (or creates) the store in `dir`, running any pending migrations.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(dir, &SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with its tuning set.
    pub fn open_with(dir: &Path, options: &SqliteOptions) -> Result<SqliteStore> {
        configure_process();
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create the data directory: {}", e.kind()))
        })?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        enlarge_lookaside(&conn);
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!(
                "the database refused WAL mode (got {mode})"
            )));
        }
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        // Checkpoints run in their own thread (see checkpoint.rs), never inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let wal_progress = Arc::new(checkpoint::WalProgress::default());
        let checkpointer = checkpoint::Checkpointer::spawn(&path, wal_progress.clone())?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| StoreError::Internal(e.to_string()))?;
        // The writer commits without fsync; its syncer fsyncs the WAL before anyone is
        // answered (see writer.rs). SQLite creates the WAL file lazily: make sure it exists.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let wal_path = dir.join(format!("{DB_FILE}-wal"));
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal_path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open the WAL file: {}", e.kind()))
            })?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        checkpoint::presize_wal(&wal, page_size.unsigned_abs()).map_err(|e| {
            StoreError::Unavailable(format!("cannot lengthen the WAL file: {}", e.kind()))
        })?;
        let replayed = write::replay_lease_log(&mut conn)?;
        if replayed > 0 {
            tracing::info!(
                leases = replayed,
                "restored the leases held when the store last stopped"
            );
        }
        let memory = load_open(&conn, options.open_tail)?;
        let unwritten = memory.unwritten.committed();
        let above_mark = memory.open_mark.above();
        let (writer, handle) = Writer::spawn(
            conn,
            memory,
            u64::from_le_bytes(seed),
            wal,
            wal_progress,
            writer::Pace {
                max_group_age: options.max_group_age,
                spin: options.writer_spin,
            },
        )
        .map_err(|e| StoreError::Internal(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            writer,
            unwritten,
            above_mark,
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Arc::new(ReadPool {
                path,
                idle: Mutex::new(Vec::new()),
            }),
            recent: recent::Recent::new(options.recent_events),
            together: options.together,
        })
    }

    /// One `T` per row of a write, in order: built from the row's event where it is
    /// remembered (recent.rs: consumers mostly lease and ack what was just published), else
    /// by `read`, given the other rows in order, after the write's commit and off the writer.
    async fn described<R, T>(
        &self,
        rows: Vec<R>,
        seq: impl Fn(&R) -> i64,
        built: impl Fn(R, Arc<Event>) -> T,
        read: impl FnOnce(&Connection, Vec<R>) -> Result<Vec<T>> + Send + 'static,
    ) -> Result<Vec<T>>
    where
        R: Clone + Send + 'static,
        T: Send + 'static,
    {
        // An empty long-poll's lease: nothing to look up, as before the events were kept.
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let remembered = self.recent.get_all(rows.iter().map(seq));
        let missing: Vec<R> = rows
            .iter()
            .zip(&remembered)
            .filter(|(_, event)| event.is_none())
            .map(|(row, _)| row.clone())
            .collect();
        let mut read = match missing.is_empty() {
            true => Vec::new(),
            false => {
                self.describe(missing.len(), move |conn| read(conn, missing))
                    .await?
            }
        }
        .into_iter();
        // Filled in place: collected into a `Result`, the vector would not know its length
        // and grow by copies (the ack's changes, 100 at a time in the full cycle).
        let mut described = Vec::with_capacity(rows.len());
        for (row, event) in rows.into_iter().zip(remembered) {
            described.push(match event {
                Some(event) => built(row, event),
                None => read
                    .next()
                    .ok_or_else(|| StoreError::Internal("a row's event was not read".into()))?,
            });
        }
        Ok(described)
    }

    /// A read describing what a write handed back, `rows` rows of it: on the calling thread
    /// up to [`INLINE_READ_ROWS`] (handing it to the blocking pool and back costs more than it
    /// does: two thread wake-ups; at 1,000 events/s they made a lease and an ack each ~0.1 ms
    /// slower end to end), on the blocking pool beyond.
    async fn describe<T, F>(&self, rows: usize, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        match rows <= INLINE_READ_ROWS {
            true => self.readers.with(f),
            false => self.read(f).await,
        }
    }

    /// Has the writer write the leases it keeps unwritten into their rows (see
    /// unwritten.rs), if it keeps any: before a read that shows deliveries' states, and for
    /// whoever reads the database file itself. A lease committed after this call is not
    /// waited for: the read may show it as it was before.
    pub async fn settle_leases(&self) -> Result<()> {
        if self.unwritten.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        self.writer
            .write_as(
                Answer::AtCommit,
                Undo::Savepoint,
                write::write_unwritten_leases,
            )
            .await
    }

    /// Has the writer move the open deliveries' mark to the newest delivery if many lie
    /// above it (see open_mark.rs): before a read of the open deliveries, which then reads
    /// few rows besides the table's entries.
    async fn settle_open(&self) -> Result<()> {
        if self.above_mark.load(Ordering::Acquire) <= open_mark::SETTLE_ABOVE {
            return Ok(());
        }
        self.writer
            .write_as(Answer::AtCommit, Undo::Savepoint, write::settle_open_mark)
            .await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

impl ReadPool {
    /// Runs `f` on a pooled connection, on the calling thread.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.take()?;
        let result = f(&conn);
        self.put(conn);
        result
    }

    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().expect("pool lock").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}

impl Store for SqliteStore {
    fn create_app(&self, app: NewApp) -> BoxFuture<'_, Result<App>> {
        Box::pin(self.writer.write(move |ctx| write::create_app(ctx, app)))
    }

    fn update_app(&self, update: AppUpdate) -> BoxFuture<'_, Result<App>> {
        Box::pin(self.writer.write(move |ctx| write::update_app(ctx, update)))
    }

    fn list_apps(&self) -> BoxFuture<'_, Result<Vec<App>>> {
        Box::pin(self.read(read::list_apps))
    }

    fn resolve_key(&self, hash: KeyHash) -> BoxFuture<'_, Result<Option<KeyGrant>>> {
        Box::pin(self.read(move |conn| keys::resolve(conn, hash)))
    }

    fn add_key(
        &self,
        owner: KeyOwner,
        key: NewKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<KeyInfo>> {
        Box::pin(
            self.writer
                .write(move |ctx| keys::add(ctx, &owner, key, now)),
        )
    }

    fn revoke_key(
        &self,
        owner: KeyOwner,
        key_id: String,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(
            self.writer
                .write(move |ctx| keys::revoke(ctx, &owner, key_id, now)),
        )
    }

    fn keys(&self, owner: KeyOwner) -> BoxFuture<'_, Result<Vec<KeyInfo>>> {
        Box::pin(self.read(move |conn| keys::list(conn, &owner)))
    }

    fn touch_keys(&self, used: Vec<(String, Timestamp)>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.writer.write(move |ctx| keys::touch(ctx, used)))
    }

    fn publish(
        &self,
        events: Vec<NewEvent>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<Published>>> {
        // Fails only before writing (see write::publish): no savepoint of its own. Its
        // results are built here, off the writer.
        Box::pin(async move {
            self.together().await;
            let stored = self
                .writer
                .write_as(Answer::AfterFsync, Undo::Group, move |ctx| {
                    write::publish(ctx, events, now)
                })
                .await?;
            // Answered, so committed and on disk: its events may serve leases.
            let (published, events) = stored.into_published();
            self.recent.insert(events);
            Ok(published)
        })
    }

    fn lease(&self, req: LeaseRequest) -> BoxFuture<'_, Result<Leased>> {
        Box::pin(self.lease_or_park(req, None))
    }

    fn lease_waiting<'a>(
        &'a self,
        req: LeaseRequest,
        wait: std::time::Duration,
        woken: Pin<&'a mut (dyn Future<Output = ()> + Send + 'a)>,
    ) -> BoxFuture<'a, Result<Leased>> {
        Box::pin(async move {
            if wait.is_zero() {
                return self.lease_or_park(req, None).await;
            }
            let now = req.now;
            let (reply, handed) = tokio::sync::oneshot::channel();
            let consumer = handoff::Parked {
                max: req.max,
                lease_ms: req.lease_ms,
                reply,
            };
            let leased = self.lease_or_park(req, Some(consumer)).await?;
            if !leased.deliveries.is_empty() {
                return Ok(leased);
            }
            // Parked: wait for a publish to hand deliveries over, but no longer than until a
            // retry becomes ready (the caller leases again then).
            let wait = match leased.next_ready_at {
                Some(ready) => wait.min(std::time::Duration::from_millis(ready.since(now))),
                None => wait,
            };
            let mut handed = handed;
            tokio::select! {
                biased;
                got = &mut handed => return match got {
                    Ok(deliveries) => Ok(Leased {
                        deliveries,
                        next_ready_at: None,
                    }),
                    // The publish that took this consumer failed: nothing was stored.
                    Err(_) => Ok(leased),
                },
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
            // Giving up. A publish may have handed deliveries over after `handed` was last
            // polled: dropping it would drop them with it, in flight to no one until their
            // lease expires. Closed, it refuses any later hand-off (whose publish then
            // releases what it handed), and keeps one made before.
            handed.close();
            match handed.try_recv() {
                Ok(deliveries) => Ok(Leased {
                    deliveries,
                    next_ready_at: None,
                }),
                Err(_) => Ok(leased),
            }
        })
    }

    fn ack(
        &self,
        app: AppId,
        acks: Vec<AckItem>,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Vec<DeliveryChange>>> {
        // Like a lease, the writer changes the rows and the changes are described after the
        // commit, off the writer. Should that read fail, the caller gets the error with its
        // acks stored: acking again is answered as a repeat.
        Box::pin(async move {
            let by = app.clone();
            self.together().await;
            let acked = self
                .writer
                .write_as(Answer::AfterFsync, Undo::Group, move |ctx| {
                    write::ack(ctx, by, acks, now)
                })
                .await?;
            if acked.is_empty() {
                return Ok(Vec::new());
            }
            let by = app.clone();
            self.described(
                acked,
                |row| row.event_seq,
                |row, event| read::acked_change(&by, row, read::EventKeys::of(&event)),
                move |conn, missing| read::acked_changes(conn, &app, missing),
            )
            .await
        })
    }

    fn nack(
        &self,
        app: AppId,
        nack: NackItem,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<NackResult>> {
        Box::pin(
            self.writer
                .write(move |ctx| write::nack(ctx, app, nack, now)),
        )
    }

    fn expire_leases(&self, now: Timestamp, limit: usize) -> BoxFuture<'_, Result<Expired>> {
        Box::pin(
            self.writer
                .write(move |ctx| write::expire_leases(ctx, now, limit)),
        )
    }

    fn extend_lease(
        &self,
        app: AppId,
        item: ExtendItem,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(
            self.writer
                .write(move |ctx| write::extend_lease(ctx, app, item, now)),
        )
    }

    fn dead_letters(&self, query: DeadLetterQuery) -> BoxFuture<'_, Result<DeliveryPage>> {
        Box::pin(self.read(move |conn| read::dead_letters(conn, &query)))
    }

    fn requeue(&self, req: RequeueRequest) -> BoxFuture<'_, Result<Requeued>> {
        Box::pin(self.writer.write(move |ctx| write::requeue(ctx, req)))
    }

    fn unacknowledged(&self, query: UnackedQuery) -> BoxFuture<'_, Result<DeliveryPage>> {
        Box::pin(async move {
            self.settle_leases().await?;
            self.settle_open().await?;
            self.read(move |conn| read::unacknowledged(conn, &query))
                .await
        })
    }

    fn event(&self, id: EventId) -> BoxFuture<'_, Result<Option<EventRecord>>> {
        Box::pin(async move {
            self.settle_leases().await?;
            self.read(move |conn| read::event(conn, &id)).await
        })
    }

    fn events(&self, query: EventQuery) -> BoxFuture<'_, Result<EventPage>> {
        Box::pin(async move {
            self.settle_leases().await?;
            self.read(move |conn| read::events(conn, &query)).await
        })
    }

    fn channels(&self, query: ChannelQuery) -> BoxFuture<'_, Result<Vec<ChannelStats>>> {
        Box::pin(async move {
            self.settle_open().await?;
            self.read(move |conn| read::channels(conn, &query)).await
        })
    }

    fn app_activity(&self) -> BoxFuture<'_, Result<Vec<AppActivity>>> {
        Box::pin(self.read(read::app_activity))
    }

    fn stats(&self, query: StatsQuery) -> BoxFuture<'_, Result<Vec<StatsRow>>> {
        Box::pin(self.read(move |conn| read::stats(conn, &query)))
    }

    fn prune_stats(
        &self,
        minutes_before: Timestamp,
        hours_before: Timestamp,
    ) -> BoxFuture<'_, Result<usize>> {
        Box::pin(
            self.writer
                .write(move |ctx| write::prune_stats(ctx, minutes_before, hours_before)),
        )
    }

    fn alerts(&self) -> BoxFuture<'_, Result<Vec<AlertState>>> {
        Box::pin(self.read(read::alerts))
    }

    fn record_alert(
        &self,
        change: AlertChange,
        event: NewEvent,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Published>> {
        Box::pin(
            self.writer
                .write(move |ctx| write::record_alert(ctx, change, event, now)),
        )
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // A store closed cleanly leaves its leases in their rows, its lease log empty.
            if let Err(e) = self.settle_leases().await {
                tracing::warn!(error = %e, "writing the unwritten leases on close failed");
            }
            let checkpointer = self.checkpointer.lock().expect("checkpointer lock").take();
            if let Some(c) = checkpointer {
                let _ = tokio::task::spawn_blocking(move || c.stop()).await;
            }
            self.writer.close().await;
            let handle = self.writer_thread.lock().expect("writer lock").take();
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            self.readers.idle.lock().expect("pool lock").clear();
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use rusqlite::{OptionalExtension, StatementStatus};
    use switchboard_core::DeliveryId;

    use super::*;

    /// A nack's lookup: a delivery joined to its event, keyed by a bound id.
    const HELD_LOOKUP: &str = "SELECT d.id, e.type FROM deliveries d \
        JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1";

    fn reprepares_of(conn: &Connection, sql: &str) -> i32 {
        let mut stmt = conn.prepare(sql).expect("prepare");
        for id in 1..=4_i64 {
            stmt.query_row([id], |_| Ok(())).optional().expect("query");
        }
        stmt.get_status(StatementStatus::RePrepare)
    }

    /// A store that queues each write at its first poll (`together` off), for tests that
    /// order writes by starting each in turn (`conformance::start`).
    fn in_order(dir: &Path) -> SqliteStore {
        let options = SqliteOptions {
            together: false,
            ..SqliteOptions::default()
        };
        SqliteStore::open_with(dir, &options).expect("open")
    }

    /// A store that also keeps a group open for as long as jobs are queued (its age never
    /// ends it), so that jobs queued behind a held one share its group.
    fn in_one_group(dir: &Path) -> SqliteStore {
        let options = SqliteOptions {
            max_group_age: std::time::Duration::from_secs(3600),
            together: false,
            ..SqliteOptions::default()
        };
        SqliteStore::open_with(dir, &options).expect("open")
    }

    /// A job holding the writer until `go` is sent, queued behind what is queued: `running`
    /// tells when it runs.
    async fn queue_hold(
        store: &SqliteStore,
    ) -> (
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
        futures_util::future::BoxFuture<'_, Result<()>>,
    ) {
        let (running_tx, running) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let mut hold = store
            .writer
            .write(move |_| {
                running_tx.send(()).expect("running");
                go_rx.recv().expect("go");
                Ok(())
            })
            .boxed();
        crate::conformance::start(&mut hold).await;
        (go, running, hold)
    }

    /// Holds the writer in a job of its own, running once this returns, until `go` is sent:
    /// what is queued meanwhile waits for it.
    async fn hold_writer(
        store: &SqliteStore,
    ) -> (
        std::sync::mpsc::Sender<()>,
        futures_util::future::BoxFuture<'_, Result<()>>,
    ) {
        let (go, running, hold) = queue_hold(store).await;
        running.recv().expect("the hold runs");
        (go, hold)
    }

    #[tokio::test]
    async fn deliveries_handed_to_a_consumer_that_left_go_back_to_pending() {
        use crate::conformance::{self, T0};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = in_one_group(dir.path());
        conformance::register(&store, "hr", &["*"], 8).await;
        let request = |now| LeaseRequest {
            app: conformance::app("hr"),
            max: 10,
            lease_ms: 30_000,
            now,
        };
        let never = std::pin::pin!(std::future::pending());
        let mut waiting =
            store.lease_waiting(request(T0), std::time::Duration::from_secs(10), never);
        conformance::start(&mut waiting).await;
        // The consumer is parked once the first hold runs; the publish and a second hold
        // queue behind it, in one group.
        let (go, hold) = hold_writer(&store).await;
        let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(1));
        let mut publish = conformance::publish_to(&store, ev, &["hr"]).boxed();
        conformance::start(&mut publish).await;
        let (go_again, running, hold_again) = queue_hold(&store).await;
        go.send(()).expect("go");
        // The publish took the consumer; its group waits for the second hold to commit.
        running.recv().expect("the second hold runs");
        // The consumer leaves with the deliveries already on their way to it.
        drop(waiting);
        go_again.send(()).expect("go again");
        let published = publish.await;
        hold.await.expect("hold");
        hold_again.await.expect("second hold");
        // The release was queued before the publisher was answered: a lease finds it again.
        let leased = store.lease(request(T0.plus_ms(2))).await.expect("lease");
        assert_eq!(leased.deliveries.len(), 1);
        let d = &leased.deliveries[0];
        assert_eq!(d.id, published.deliveries[0].id);
        assert_eq!(d.attempt, 1, "the handed attempt was given back");
        assert_eq!(d.lease_expires_at, T0.plus_ms(30_002));
        let record = store
            .event(published.id)
            .await
            .expect("event")
            .expect("stored");
        assert_eq!(
            record.deliveries[0].history.len(),
            1,
            "no attempt left behind"
        );
        store.close().await;
    }

    /// Publishes `count` events to hr in one group while a consumer taking up to `max` waits:
    /// returns the ids the consumer was handed, and those a lease finds pending after.
    async fn handed_in_one_group(count: usize, max: u32) -> (Vec<DeliveryId>, Vec<DeliveryId>) {
        use crate::conformance::{self, T0};
        let dir = tempfile::tempdir().expect("tempdir");
        // The hold's group takes every publish queued behind it.
        let store = in_one_group(dir.path());
        conformance::register(&store, "hr", &["*"], 8).await;
        let request = |max, now| LeaseRequest {
            app: conformance::app("hr"),
            max,
            lease_ms: 30_000,
            now,
        };
        let never = std::pin::pin!(std::future::pending());
        let mut waiting =
            store.lease_waiting(request(max, T0), std::time::Duration::from_secs(10), never);
        conformance::start(&mut waiting).await;
        // The consumer is parked once the hold runs; the publishes queue up behind it.
        let (go, hold) = hold_writer(&store).await;
        let mut publishes = Vec::new();
        for _ in 0..count {
            let ev = conformance::event("crm", "acme", "user.created", T0.plus_ms(1));
            let mut publish = conformance::publish_to(&store, ev, &["hr"]).boxed();
            conformance::start(&mut publish).await;
            publishes.push(publish);
        }
        go.send(()).expect("go");
        hold.await.expect("hold");
        let published: Vec<DeliveryId> = futures_util::future::join_all(publishes)
            .await
            .into_iter()
            .map(|p| p.deliveries[0].id.clone())
            .collect();
        let ids = |leased: Leased| -> Vec<DeliveryId> {
            leased.deliveries.into_iter().map(|d| d.id).collect()
        };
        let handed = ids(waiting.await.expect("handed"));
        let pending = ids(store
            .lease(request(100, T0.plus_ms(2)))
            .await
            .expect("lease"));
        let mut all = [handed.clone(), pending.clone()].concat();
        all.sort();
        let mut expected = published;
        expected.sort();
        assert_eq!(all, expected, "every delivery handed or pending, once");
        store.close().await;
        (handed, pending)
    }

    #[tokio::test]
    async fn publishes_that_share_a_group_reach_a_waiting_consumer_in_one_answer() {
        let (handed, pending) = handed_in_one_group(3, 10).await;
        assert_eq!((handed.len(), pending.len()), (3, 0));
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_handed_no_more_than_it_asked_for() {
        let (handed, pending) = handed_in_one_group(3, 2).await;
        assert_eq!((handed.len(), pending.len()), (2, 1));
    }

    #[tokio::test]
    async fn an_ack_in_the_group_of_its_lease_acks_the_lease_kept_unwritten() {
        // In the group that leased a delivery its in-flight entry is not used (inflight.rs):
        // an ack there reads the row, which shows the lease only with the writer's memory.
        use crate::conformance::{self, T0};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = in_order(dir.path());
        conformance::register(&store, "hr", &["*"], 8).await;
        let ev = conformance::event("crm", "acme", "user.created", T0);
        let published = conformance::publish_to(&store, ev, &["hr"]).await;
        let id = published.deliveries[0].id.clone();
        // Hold the writer, so that the lease and the ack queue up and share the next group.
        let (go, hold) = hold_writer(&store).await;
        let request = LeaseRequest {
            app: conformance::app("hr"),
            max: 1,
            lease_ms: 30_000,
            now: T0.plus_ms(1),
        };
        let mut leased = store.lease(request).boxed();
        conformance::start(&mut leased).await;
        let ack = AckItem {
            id: id.clone(),
            attempt: Some(1),
            data: None,
        };
        let mut acked = store
            .ack(conformance::app("hr"), vec![ack], T0.plus_ms(2))
            .boxed();
        conformance::start(&mut acked).await;
        go.send(()).expect("go");
        hold.await.expect("hold");
        assert_eq!(leased.await.expect("lease").deliveries[0].id, id);
        assert_eq!(acked.await.expect("ack").len(), 1);
        let record = store
            .event(published.id)
            .await
            .expect("event")
            .expect("stored");
        let d = &record.deliveries[0];
        assert_eq!(
            (d.status, d.attempts),
            (switchboard_core::DeliveryStatus::Acknowledged, 1)
        );
        store.close().await;
    }

    #[tokio::test]
    async fn leases_past_the_most_kept_unwritten_write_their_rows() {
        use crate::conformance::{self, T0};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        conformance::register(&store, "hr", &["*"], 8).await;
        let over = 8;
        let total = unwritten::MAX_KEPT + over;
        for batch in 0..total.div_ceil(1_000) {
            let events: Vec<NewEvent> = (0..1_000.min(total - batch * 1_000))
                .map(|_| NewEvent {
                    event: conformance::event("crm", "acme", "user.created", T0),
                    targets: vec![conformance::route("hr")],
                })
                .collect();
            store.publish(events, T0).await.expect("publish");
        }
        let request = LeaseRequest {
            app: conformance::app("hr"),
            max: total as u32,
            lease_ms: 30_000,
            now: T0.plus_ms(1),
        };
        let leased = store.lease(request).await.expect("lease");
        assert_eq!(leased.deliveries.len(), total);
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("open the file");
        let written: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE status = 1",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(
            written, over as i64,
            "the leases past the bound, written at once"
        );
        store.close().await;
    }

    #[test]
    fn cached_statements_keep_their_plan_when_rebound() {
        let mut conn = Connection::open_in_memory().expect("open");
        schema::migrate(&mut conn).expect("migrate");
        configure(&conn).expect("configure");
        assert_eq!(reprepares_of(&conn, HELD_LOOKUP), 0);
    }

    #[test]
    fn without_the_stability_guarantee_the_lookup_is_replanned() {
        // Shows the test above can fail: the same statement on an unconfigured connection.
        let mut conn = Connection::open_in_memory().expect("open");
        schema::migrate(&mut conn).expect("migrate");
        assert!(reprepares_of(&conn, HELD_LOOKUP) > 0);
    }
}
