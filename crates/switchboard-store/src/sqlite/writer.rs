//! Group commit: one thread owns the only write connection. Jobs run as they arrive, each
//! inside its own savepoint of the open transaction; the transaction commits once the syncer
//! is free (and, under steady load, once it has run [`MAX_GROUP_AGE`], not when the queue
//! empties). The commit itself does not fsync (`synchronous = NORMAL`): the group's answers go
//! to the syncer thread, which fsyncs the WAL file and only then answers each job. While it
//! does, the writer already runs the next jobs in a new transaction, and commits them when the
//! fsync is done. So no job is answered before its commit is on disk, execution overlaps the
//! fsync, and each fsync covers one commit holding everything that arrived meanwhile (each
//! page written once per group, not once per tiny group). When nothing is waiting and the
//! syncer is idle, the writer fsyncs the group itself: two thread hand-offs fewer on every
//! write of a lightly loaded server (p99 at 1,000 events/s −35%, single publishes +10–30%).
//! For the same reason a lightly loaded writer polls its queue a moment before it sleeps
//! (`idle.rs`).
//! The one exception, [`Answer::AtCommit`] (leases), is answered at its commit. A job that
//! fails rolls back its savepoint alone, or, for a job that promises to fail only before its
//! first change ([`Undo::Group`]), there is nothing to roll back. Once a group is durable,
//! the consumers its publishes handed deliveries to are answered first (handoff.rs), and
//! such an answer may queue a follow-up write nobody waits for ([`FollowUp`]). Nothing here
//! knows what the jobs do.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use switchboard_core::Timestamp;

use super::borrowed::Borrowed;
use super::channel_ids::ChannelIds;
use super::checkpoint::{self, WalProgress};
use super::counters::{Counters, Pending};
use super::deadlines::{Changes, Deadlines};
use super::handoff;
use super::idle;
use super::inflight::{self, ByText, InFlight};
use super::open_mark::Mark;
use super::ready::{self, Ready};
use super::unwritten::Unwritten;
use crate::StoreError;

/// At most this many jobs share one transaction.
const MAX_GROUP: usize = 1024;
/// Once the syncer is free, a group that has run this long takes no more jobs and commits.
/// While the syncer is busy a group takes everything that arrives (its commit would wait
/// anyway); but under steady load the queue never empties, and a group that waited for an
/// empty queue ran ~13 ms, holding every job in it that long (interleaved A/B: full cycle
/// +12%, +15–20% with the lease reading its events off the writer; batches of 100 +9–13%;
/// single publishes and latency unchanged; committing after every job whenever the syncer is
/// free cost single publishes 10%).
pub const MAX_GROUP_AGE: std::time::Duration = std::time::Duration::from_micros(500);

/// How the writer paces its groups and its waits.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Once the syncer is free, a group that has run this long commits: [`MAX_GROUP_AGE`]
    /// but in tests (`SqliteOptions::max_group_age`).
    pub max_group_age: std::time::Duration,
    /// How long a lightly loaded writer polls its queue before it sleeps (see idle.rs).
    pub spin: std::time::Duration,
}

/// What the writer keeps in memory of the database, read from it on open (see `load_open` in
/// mod.rs).
#[derive(Debug, Default)]
pub struct Memory {
    /// The deadlines of the leases in the database.
    pub deadlines: Deadlines,
    /// Its leasable deliveries.
    pub ready: Ready,
    pub channel_ids: ChannelIds,
    /// What an ack needs of its deliveries in flight.
    pub in_flight: InFlight,
    /// The leases whose rows are not written (none: the log is replayed on open).
    pub unwritten: Unwritten,
    /// Up to which delivery `open_deliveries` records the open ones.
    pub open_mark: Mark,
}

/// What a job may use: the write connection and the writer's random source.
pub struct WriteCtx {
    /// The hottest statements, run through SQLite's C API (see borrowed.rs). Declared before
    /// `conn`: fields drop in order, and a connection closes only once they are finalized.
    pub borrowed: Borrowed,
    pub conn: Connection,
    pub rng: SplitMix64,
    /// Counter changes of the running job; kept only if the job succeeds.
    job_counters: Pending,
    /// Counter changes of the group's successful jobs, written just before its commit.
    group_counters: Pending,
    /// Up to which delivery `open_deliveries` records the open ones, as of the last commit
    /// (see open_mark.rs); moved just before a commit.
    pub open_mark: Mark,
    /// The committed leases' deadlines.
    pub deadlines: Deadlines,
    /// Deadline changes of the running job; kept only if the job succeeds.
    pub deadline_changes: Changes,
    /// Deadline changes of the group's successful jobs, applied once it commits.
    group_deadline_changes: Changes,
    /// The pending deliveries each app may lease, as of the last job that succeeded (the
    /// open group's included; see ready.rs).
    pub ready: Ready,
    /// Changes to `ready` of the running job; kept only if the job succeeds.
    pub ready_changes: ready::Changes,
    /// What undoes the changes to `ready` of the group's successful jobs (applied as each
    /// succeeded), should the group roll back.
    ready_undo: ready::Changes,
    /// Consumers long-polling in the writer, by target app, for a publish to hand
    /// deliveries to (see handoff.rs). Not part of any transaction.
    pub parked: HashMap<String, Vec<handoff::Parked>, ByText>,
    /// The consumers the open group's publishes hand deliveries to, answered once it is
    /// durable; a failed job's hand-offs are undone (see handoff.rs).
    pub handoffs: handoff::Handoffs,
    /// The writer's own queue, for follow-up writes nobody waits for.
    follow_up: mpsc::WeakUnboundedSender<Msg>,
    /// When each app's last consume was written, to write it at most once a second.
    pub consumed_written: HashMap<String, i64, ByText>,
    /// The checkpointer's view of the WAL, to restart it when due.
    wal_progress: Arc<WalProgress>,
    /// The highest event seq whose commit is fsynced: leases (answered before their own
    /// fsync) hand out only deliveries of events up to here, so no consumer ever sees an
    /// event a power loss could still take back.
    durable_seq: Arc<AtomicI64>,
    /// The WAL file, for the writer's own fsync when it has nothing else to do.
    wal: File,
    /// Set when a job without a savepoint failed after changing rows: the open group must
    /// be rolled back as a whole.
    poisoned: bool,
    /// The id the next published delivery gets, once read: only a publish inserts
    /// deliveries, so `max(id) + 1` is read once and then kept here. A group rolled back
    /// forgets it (`forget_group`): it is read again. It must stay the table's
    /// `max(id) + 1`: SQLite gives most ids (see `HeldBack` in write.rs), checked.
    pub next_delivery_id: Option<i64>,
    /// The seq the next published event gets, on the same terms (see `insert_events`).
    pub next_event_seq: Option<i64>,
    /// The id of each channel (see channel_ids.rs).
    pub channel_ids: ChannelIds,
    /// What an ack needs of the deliveries in flight, as of the last commit (inflight.rs).
    pub in_flight: InFlight,
    /// Changes to `in_flight` of the running job; kept for the group if the job succeeds.
    pub flight_changes: inflight::Changes,
    /// The leases whose rows are not written yet (unwritten.rs), as of the running job.
    pub unwritten: Unwritten,
}

impl WriteCtx {
    pub fn durable_seq(&self) -> i64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Records a job's counter changes; they are written with the group's commit, and
    /// dropped if the job fails.
    pub fn counted(&mut self, counters: Counters, now: Timestamp) {
        self.job_counters.absorb(counters, now);
    }

    /// A handle that queues follow-up writes from outside the writer (a completion).
    pub fn follow_up(&self) -> FollowUp {
        FollowUp(self.follow_up.clone())
    }

    /// After the open group rolled back: drops its counter and deadline changes, undoes its
    /// ready, in-flight and kept-lease changes, parks again the consumers its publishes took,
    /// and has the next seq and delivery id read again from the tables, which the
    /// rolled-back rows have left (nobody saw those: a publish is answered once durable, a
    /// lease once committed).
    fn forget_group(&mut self) {
        self.group_counters.clear();
        self.group_deadline_changes.discard();
        self.ready.undo(&mut self.ready_undo);
        self.in_flight.roll_back();
        self.unwritten.roll_back();
        self.open_mark.roll_back();
        self.handoffs.forget_group(&mut self.parked);
        self.next_event_seq = None;
        self.next_delivery_id = None;
    }

    /// Ends a job's counter, deadline, ready, in-flight and kept-lease changes and its
    /// hand-offs: kept for the group if it succeeded, else dropped.
    fn end_job(&mut self, succeeded: bool) {
        self.handoffs.end_job(succeeded, &mut self.parked);
        match succeeded {
            true => {
                self.group_counters.merge(&mut self.job_counters);
                self.group_deadline_changes
                    .merge(&mut self.deadline_changes);
                self.ready
                    .apply(&mut self.ready_changes, &mut self.ready_undo);
                self.in_flight.keep(&mut self.flight_changes);
                self.unwritten.end_job(true);
                self.open_mark.end_job(true);
            }
            false => {
                self.job_counters.clear();
                self.deadline_changes.discard();
                self.ready_changes.discard();
                self.flight_changes.discard();
                self.unwritten.end_job(false);
                self.open_mark.end_job(false);
            }
        }
    }
}

pub type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx) -> Completion + Send>;

/// Queues writes that nobody waits for, from outside the writer thread; does nothing once
/// the writer is gone.
#[derive(Clone)]
pub struct FollowUp(mpsc::WeakUnboundedSender<Msg>);

impl FollowUp {
    /// One whose writes go nowhere, as once the writer is gone.
    #[cfg(test)]
    pub fn nowhere() -> FollowUp {
        let (tx, _) = mpsc::unbounded_channel();
        FollowUp(tx.downgrade())
    }

    /// Runs `f` in its own savepoint of a coming group; a failure is logged.
    pub fn write(&self, f: impl FnOnce(&mut WriteCtx) -> Result<(), StoreError> + Send + 'static) {
        let Some(tx) = self.0.upgrade() else {
            return;
        };
        let job: Job = Box::new(move |ctx| {
            if let Err(e) = in_savepoint(ctx, f) {
                tracing::warn!(error = %e, "a follow-up write failed");
            }
            Box::new(|_| {})
        });
        let _ = tx.send(Msg::Job(Answer::AtCommit, job));
    }
}

/// When a job's caller is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Once the WAL holding its commit is fsynced: the default.
    AfterFsync,
    /// As soon as it is committed, without waiting for the fsync: only for changes a crash may
    /// undo without breaking a promise (a lease: after a crash the delivery is still pending
    /// and is handed out again; at-least-once holds). Writes committed later are fsynced
    /// after it, so anything answered as durable afterwards, an ack of the lease included,
    /// makes it durable too.
    AtCommit,
}

/// How the changes of a job that fails are undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// By the job's own savepoint: it rolls back alone and the group goes on.
    Savepoint,
    /// By the whole group, for a job that returns an error only before its first change
    /// (it checks everything, then writes): it runs without a savepoint, since a savepoint
    /// copies every page the job touches that the group touched before it (a quarter of the
    /// writer's time under single-event publishes). If it fails after a change all the same
    /// (a database error), the group is rolled back and every job in it is answered as not
    /// committed.
    Group,
}

enum Msg {
    Job(Answer, Job),
    /// From the syncer: the last group handed to it is on disk.
    Synced,
    Close(oneshot::Sender<()>),
}

pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    /// Since when the writer has been waiting with nothing to do (see [`Writer::idle_for`]).
    idle: Arc<idle::IdleSince>,
}

impl Writer {
    /// `wal` is the database's WAL file, which the syncer fsyncs.
    pub fn spawn(
        mut conn: Connection,
        memory: Memory,
        seed: u64,
        wal: File,
        wal_progress: Arc<WalProgress>,
        pace: Pace,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        count_wal_pages(&mut conn)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = std_mpsc::channel::<ToSync>();
        let synced_tx = tx.clone();
        // What a crashed process left in the WAL may still be only in the OS's cache: make it
        // durable before calling every stored event durable.
        wal.sync_data()?;
        let durable_seq = Arc::new(AtomicI64::new(max_seq(&conn).unwrap_or(0)));
        let durable = durable_seq.clone();
        let own_wal = wal.try_clone()?;
        let syncer = std::thread::Builder::new()
            .name("switchboard-sync".into())
            .spawn(move || sync(wal, sync_rx, synced_tx, &durable))?;
        let Memory {
            deadlines,
            ready,
            channel_ids,
            in_flight,
            unwritten,
            open_mark,
        } = memory;
        let ctx = WriteCtx {
            borrowed: Borrowed::default(),
            conn,
            rng: SplitMix64(seed),
            job_counters: Pending::default(),
            group_counters: Pending::default(),
            open_mark,
            deadlines,
            deadline_changes: Changes::default(),
            group_deadline_changes: Changes::default(),
            ready,
            ready_changes: ready::Changes::default(),
            ready_undo: ready::Changes::default(),
            parked: HashMap::default(),
            handoffs: handoff::Handoffs::default(),
            follow_up: tx.downgrade(),
            consumed_written: HashMap::default(),
            wal_progress,
            durable_seq,
            poisoned: false,
            wal: own_wal,
            next_delivery_id: None,
            next_event_seq: None,
            channel_ids,
            in_flight,
            flight_changes: inflight::Changes::default(),
            unwritten,
        };
        let idle = Arc::new(idle::IdleSince::new(Instant::now()));
        let waiting = idle.clone();
        let handle = std::thread::Builder::new()
            .name("switchboard-writer".into())
            .spawn(move || run(ctx, rx, sync_tx, syncer, pace, &waiting))?;
        Ok((Writer { tx, idle }, handle))
    }

    /// How long the writer has been waiting for a job with no group open and no fsync under
    /// way, if it is: the next job starts a group of its own and, unless another arrives
    /// while it runs, commits and fsyncs alone.
    pub fn idle_for(&self, now: Instant) -> Option<std::time::Duration> {
        self.idle.idle_for(now)
    }

    /// Runs `f` in its own savepoint of the next group transaction and answers once that
    /// transaction is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_as(Answer::AfterFsync, Undo::Savepoint, f).await
    }

    /// Runs `f` in the next group transaction, answering and undoing it as told.
    pub async fn write_as<T, F>(&self, answer_at: Answer, undo: Undo, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let submitted = Instant::now();
        let job: Job = Box::new(move |ctx| {
            metrics::histogram!("switchboard_store_queue_seconds")
                .record(submitted.elapsed().as_secs_f64());
            let result = match undo {
                Undo::Savepoint => in_savepoint(ctx, f),
                Undo::Group => without_savepoint(ctx, f),
            };
            Box::new(move |committed| {
                let result = match (committed, result) {
                    (true, r) => r,
                    // The job's own error stands; a failed commit turns success into failure.
                    (false, Err(e)) => Err(e),
                    (false, Ok(_)) => Err(StoreError::Unavailable(
                        "the write could not be committed".into(),
                    )),
                };
                metrics::histogram!("switchboard_store_write_seconds")
                    .record(submitted.elapsed().as_secs_f64());
                let _ = reply.send(result);
            })
        });
        self.tx
            .send(Msg::Job(answer_at, job))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| {
            StoreError::Unavailable(
                "the write was not committed: the store could not begin a transaction".into(),
            )
        })?
    }

    /// Lets queued jobs finish, then stops the thread.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// Records how many pages each commit appends to the WAL
/// (`switchboard_store_commit_wal_pages`): what an fsync carries, 4 KiB a page. SQLite calls
/// the hook after each commit with the WAL's length in pages, which starts over after a
/// checkpoint restarts it. The hook replaces SQLite's automatic checkpoint, which the store
/// turns off anyway (see checkpoint.rs).
fn count_wal_pages(conn: &mut Connection) -> std::io::Result<()> {
    let mut before = 0;
    conn.wal_hook(Some(
        move |_: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
            let added = match pages >= before {
                true => pages - before,
                false => pages,
            };
            before = pages;
            metrics::histogram!("switchboard_store_commit_wal_pages").record(f64::from(added));
            Ok(())
        },
    ))
    .map_err(std::io::Error::other)
}

/// Runs an [`Undo::Savepoint`] job: a failure rolls back its own changes and nothing else.
fn in_savepoint<T>(
    ctx: &mut WriteCtx,
    f: impl FnOnce(&mut WriteCtx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    ctx.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(ctx);
    match result {
        Ok(_) => ctx.conn.prepare_cached("RELEASE job")?.execute([])?,
        Err(_) => {
            ctx.conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            ctx.conn.prepare_cached("RELEASE job")?.execute([])?
        }
    };
    ctx.end_job(result.is_ok());
    result
}

/// Runs an [`Undo::Group`] job: no savepoint; if it fails after changing rows, the writer
/// rolls back its whole group (`poisoned`).
fn without_savepoint<T>(
    ctx: &mut WriteCtx,
    f: impl FnOnce(&mut WriteCtx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let changes = ctx.conn.total_changes();
    let result = f(ctx);
    ctx.end_job(result.is_ok());
    if result.is_err() {
        // A broken promise or a database error: only the whole group can be undone.
        ctx.poisoned = ctx.conn.total_changes() != changes || ctx.conn.is_autocommit();
    }
    result
}

/// The syncer: fsyncs the WAL for every group committed since its last fsync, tells the
/// writer it is free (the next commit overlaps the answering), then answers their jobs. Ends
/// when the writer drops its sender, after answering everything.
fn sync(
    wal: File,
    rx: std_mpsc::Receiver<ToSync>,
    writer: mpsc::UnboundedSender<Msg>,
    durable_seq: &AtomicI64,
) {
    while let Ok(first) = rx.recv() {
        let mut max_seq = first.max_seq;
        let mut batch = first.answers;
        while let Ok(more) = rx.try_recv() {
            max_seq = max_seq.max(more.max_seq);
            batch.extend(more.answers);
        }
        let synced = fsync_wal(&wal, max_seq, durable_seq);
        // The writer may commit the next group now; answering can overlap that.
        let _ = writer.send(Msg::Synced);
        for complete in batch {
            complete(synced);
        }
    }
}

/// Fsyncs the WAL and, once it is on disk, moves the durable watermark to `max_seq`.
/// Returns whether the fsync succeeded.
fn fsync_wal(wal: &File, max_seq: i64, durable_seq: &AtomicI64) -> bool {
    let started = Instant::now();
    let synced = wal.sync_data();
    metrics::histogram!("switchboard_store_fsync_seconds").record(started.elapsed().as_secs_f64());
    match synced {
        Ok(()) => {
            durable_seq.fetch_max(max_seq, Ordering::AcqRel);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "fsync of the WAL failed: the writes are not answered as durable");
            false
        }
    }
}

/// A committed group handed to the syncer.
struct ToSync {
    /// The highest event seq in the database after the commit.
    max_seq: i64,
    answers: Vec<Completion>,
}

fn max_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM events")?
        .query_row([], |r| r.get(0))
}

/// The open transaction: the completions of the jobs that ran in it.
struct Group {
    /// Answered by the syncer.
    after_fsync: Vec<Completion>,
    /// Answered right after the commit.
    at_commit: Vec<Completion>,
    began: Instant,
}

impl Group {
    fn len(&self) -> usize {
        self.after_fsync.len() + self.at_commit.len()
    }
}

fn run(
    mut ctx: WriteCtx,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    sync_tx: std_mpsc::Sender<ToSync>,
    syncer: JoinHandle<()>,
    Pace {
        max_group_age,
        spin,
    }: Pace,
    idle: &idle::IdleSince,
) {
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut group: Option<Group> = None;
    // Whether a commit is with the syncer and not yet on disk.
    let mut syncing = false;
    let mut load = idle::Load::new(Instant::now());
    loop {
        // Run what is waiting while the group is open: not full, and younger than
        // `max_group_age` unless the syncer is busy.
        let open = |g: &Group, syncing: bool| {
            g.len() < MAX_GROUP && (syncing || g.began.elapsed() < max_group_age)
        };
        while closing.is_none() && group.as_ref().is_none_or(|g| open(g, syncing)) {
            match rx.try_recv() {
                Ok(msg) => handle(&mut ctx, msg, &mut group, &mut syncing, &mut closing),
                Err(_) => break,
            }
        }
        // A group waits for the syncer only if someone in it waits for the fsync.
        let commit_now = match &group {
            Some(g) => {
                !syncing || g.after_fsync.is_empty() || closing.is_some() || g.len() >= MAX_GROUP
            }
            None => false,
        };
        if commit_now && let Some(g) = group.take() {
            // Nothing else to do meanwhile: fsync here rather than wake the syncer and be
            // woken by it (two thread hand-offs on every write of a lightly loaded server).
            let fsync_here = !syncing && rx.is_empty() && closing.is_none();
            let committing = Instant::now();
            if commit_group(&mut ctx, g, &sync_tx, fsync_here) {
                syncing = true;
            }
            if fsync_here {
                // Mostly the fsync: waiting on the disk, not work.
                let now = Instant::now();
                load.waited(now.duration_since(committing), now);
            }
            checkpoint::restart_if_due(&ctx.conn, &ctx.wal_progress);
            continue;
        }
        if closing.is_some() {
            break;
        }
        // Wait for a job, or for the syncer to be free so the open group can commit.
        let waiting_since = Instant::now();
        if group.is_none() && !syncing {
            idle.waiting(waiting_since);
        }
        let spun = match load.light() {
            true => idle::spin(spin, || rx.try_recv().ok()),
            false => None,
        };
        let next = match spun {
            Some(msg) => Some(msg),
            None => rx.blocking_recv(),
        };
        let now = Instant::now();
        idle.busy();
        load.waited(now.duration_since(waiting_since), now);
        match next {
            Some(msg) => handle(&mut ctx, msg, &mut group, &mut syncing, &mut closing),
            None => break,
        }
    }
    if let Some(g) = group.take() {
        commit_group(&mut ctx, g, &sync_tx, false);
    }
    // Let the syncer answer what is left before the files are closed.
    drop(sync_tx);
    let _ = syncer.join();
    if let Err(e) = ctx.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "checkpoint on close failed");
    }
    drop(ctx);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

fn handle(
    ctx: &mut WriteCtx,
    msg: Msg,
    group: &mut Option<Group>,
    syncing: &mut bool,
    closing: &mut Option<oneshot::Sender<()>>,
) {
    match msg {
        Msg::Job(answer_at, job) => {
            if group.is_none() {
                if let Err(e) = run_cached(&ctx.conn, "BEGIN IMMEDIATE") {
                    tracing::error!(error = %e, "could not begin a write transaction");
                    // Dropping a job unanswered makes its caller see `Unavailable`; nothing ran.
                    return;
                }
                *group = Some(Group {
                    after_fsync: Vec::new(),
                    at_commit: Vec::new(),
                    began: Instant::now(),
                });
            }
            if let Some(g) = group {
                let done = job(ctx);
                match answer_at {
                    Answer::AfterFsync => g.after_fsync.push(done),
                    Answer::AtCommit => g.at_commit.push(done),
                }
            }
            if std::mem::take(&mut ctx.poisoned)
                && let Some(g) = group.take()
            {
                roll_back_group(ctx, g);
            }
        }
        Msg::Synced => *syncing = false,
        Msg::Close(done) => *closing = Some(done),
    }
}

/// Runs a statement of the group's own (`BEGIN IMMEDIATE`, `COMMIT`) from the statement
/// cache: parsing both again for every group cost a lightly loaded writer ~1,200
/// instructions per commit (1.5% of its instructions, callgrind at 100 events/s).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Undoes the open group: every job in it is answered as not committed.
fn roll_back_group(ctx: &mut WriteCtx, group: Group) {
    tracing::error!(
        jobs = group.len(),
        "a write failed after changing rows: its whole group is rolled back"
    );
    if !ctx.conn.is_autocommit()
        && let Err(e) = ctx.conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "rolling back the group failed");
    }
    ctx.forget_group();
    for complete in group.after_fsync.into_iter().chain(group.at_commit) {
        complete(false);
    }
}

/// Commits the open group; returns whether it handed answers to the syncer.
fn commit_group(
    ctx: &mut WriteCtx,
    group: Group,
    sync_tx: &std_mpsc::Sender<ToSync>,
    fsync_here: bool,
) -> bool {
    let size = group.len();
    let Group {
        after_fsync: answers,
        at_commit,
        began,
    } = group;
    let started = Instant::now();
    // The mark moves before the counters are written, in the same transaction.
    let moved_to = ctx
        .next_delivery_id
        .and_then(|next| ctx.open_mark.due(next - 1));
    let flushed = match moved_to {
        Some(to) => ctx.open_mark.advance(&ctx.conn, to),
        None => Ok(()),
    }
    .and_then(|()| ctx.group_counters.flush(&ctx.conn, &mut ctx.channel_ids));
    ctx.group_counters.clear();
    let committed = match flushed {
        Ok(()) => match run_cached(&ctx.conn, "COMMIT") {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                let _ = ctx.conn.execute_batch("ROLLBACK");
                false
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "writing the group's open deliveries or counters failed");
            let _ = ctx.conn.execute_batch("ROLLBACK");
            false
        }
    };
    match committed {
        true => {
            ctx.deadlines.apply(&mut ctx.group_deadline_changes);
            ctx.ready_undo.discard();
            ctx.in_flight.commit();
            ctx.unwritten.commit();
            ctx.open_mark
                .commit(moved_to, ctx.next_delivery_id.map(|next| next - 1));
        }
        false => ctx.forget_group(),
    }
    metrics::histogram!("switchboard_store_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("switchboard_store_transaction_seconds")
        .record(began.elapsed().as_secs_f64());
    metrics::histogram!("switchboard_store_group_size").record(size as f64);
    for complete in at_commit {
        complete(committed);
    }
    // The consumers handed deliveries go first: they have them before the publishers are
    // answered (who may then wake other consumers).
    let mut after_fsync: Vec<Completion> = match committed {
        true => ctx.handoffs.answers(&ctx.follow_up()).collect(),
        false => Vec::new(),
    };
    after_fsync.extend(answers);
    if !committed || after_fsync.is_empty() {
        for complete in after_fsync {
            complete(false);
        }
        return false;
    }
    // The highest event seq in the database: the writer knows it once it has published
    // (reading it at every commit cost a lightly loaded writer 7% of its instructions,
    // `hotpath -- 2000 1 1 1`).
    let max_seq = match ctx.next_event_seq {
        Some(next) => next - 1,
        None => match max_seq(&ctx.conn) {
            Ok(seq) => seq,
            Err(e) => {
                // Only leases would wait longer: those events become leasable with a later
                // fsync.
                tracing::warn!(error = %e, "could not read the highest event seq");
                0
            }
        },
    };
    if fsync_here {
        let synced = fsync_wal(&ctx.wal, max_seq, &ctx.durable_seq);
        for complete in after_fsync {
            complete(synced);
        }
        return false;
    }
    // Answered by the syncer once the WAL is on disk.
    let to_sync = ToSync {
        max_seq,
        answers: after_fsync,
    };
    match sync_tx.send(to_sync) {
        Ok(()) => true,
        Err(std_mpsc::SendError(to_sync)) => {
            for complete in to_sync.answers {
                complete(false);
            }
            false
        }
    }
}

/// A small, fast random source for retry jitter (not for secrets).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;

    /// A writer whose groups close as soon as the syncer is free (no age to wait for): what
    /// shares a group is decided by what the test queues, not by the clock.
    fn writer(dir: &std::path::Path) -> (Writer, JoinHandle<()>) {
        let path = dir.join("w.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER NOT NULL);")
            .expect("schema");
        let wal = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("w.db-wal"))
            .expect("wal");
        Writer::spawn(
            conn,
            Memory::default(),
            1,
            wal,
            Arc::default(),
            Pace {
                max_group_age: std::time::Duration::ZERO,
                spin: std::time::Duration::ZERO,
            },
        )
        .expect("spawn")
    }

    fn insert(ctx: &mut WriteCtx, x: i64) -> Result<(), StoreError> {
        ctx.conn.execute("INSERT INTO t VALUES (?1)", [x])?;
        Ok(())
    }

    /// Polls a write once: enough to hand its job to the writer.
    async fn submitted<F: Future>(mut write: Pin<Box<F>>) -> Pin<Box<F>> {
        crate::conformance::start(&mut write).await;
        write
    }

    fn rows(dir: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(dir.join("w.db")).expect("open");
        conn.prepare("SELECT x FROM t ORDER BY x")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[tokio::test]
    async fn a_job_without_savepoint_that_fails_before_writing_leaves_its_group_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = writer(dir.path());
        writer.write(|ctx| insert(ctx, 1)).await.expect("first");
        let failed = writer
            .write_as(Answer::AfterFsync, Undo::Group, |_| {
                Err::<(), _>(StoreError::Internal("refused".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Internal(m)) if m == "refused"));
        writer.write(|ctx| insert(ctx, 2)).await.expect("after");
        writer.close().await;
        thread.join().expect("writer thread");
        assert_eq!(rows(dir.path()), vec![1, 2]);
    }

    /// A job that inserts `x` once released: the jobs queued meanwhile wait behind it, and its
    /// group (the syncer being free, the test writer's age limit zero) closes when it ends.
    fn gate(
        x: i64,
    ) -> (
        std::sync::mpsc::Sender<()>,
        impl FnOnce(&mut WriteCtx) -> Result<(), StoreError> + Send + 'static,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let job = move |ctx: &mut WriteCtx| {
            held.recv().expect("released");
            insert(ctx, x)
        };
        (release, job)
    }

    #[tokio::test]
    async fn a_group_that_ran_long_enough_commits_before_the_queued_jobs_run() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = writer(dir.path());
        let (release, job) = gate(1);
        let first = submitted(Box::pin(writer.write(job))).await;
        let path = dir.path().to_path_buf();
        let queued = submitted(Box::pin(writer.write(move |ctx| {
            insert(ctx, 2)?;
            Ok(rows(&path))
        })))
        .await;
        release.send(()).expect("release");
        first.await.expect("first");
        // Under steady load the queue never empties: waiting for it would keep the first
        // job's group open, and the second job would not see it committed.
        assert_eq!(queued.await.expect("queued"), vec![1], "committed before");
        writer.close().await;
        thread.join().expect("writer thread");
    }

    /// A job without savepoint that fails after inserting `x`, though it promised not to.
    fn breaking_its_promise(
        x: i64,
    ) -> impl FnOnce(&mut WriteCtx) -> Result<(), StoreError> + Send + 'static {
        move |ctx| {
            insert(ctx, x)?;
            Err(StoreError::Internal("broken promise".into()))
        }
    }

    #[tokio::test]
    async fn a_job_without_savepoint_that_fails_after_writing_undoes_its_whole_group() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = writer(dir.path());
        // The gate's group commits alone, and while the syncer fsyncs it the three jobs
        // queued behind the gate run in one group.
        let (release, job) = gate(0);
        let gated = submitted(Box::pin(writer.write(job))).await;
        let first = submitted(Box::pin(writer.write(|ctx| insert(ctx, 1)))).await;
        let second = submitted(Box::pin(writer.write(|ctx| insert(ctx, 2)))).await;
        let broken = submitted(Box::pin(writer.write_as(
            Answer::AfterFsync,
            Undo::Group,
            breaking_its_promise(3),
        )))
        .await;
        release.send(()).expect("release");
        gated.await.expect("the gate's own group");
        assert!(matches!(first.await, Err(StoreError::Unavailable(_))));
        assert!(matches!(second.await, Err(StoreError::Unavailable(_))));
        assert!(matches!(broken.await, Err(StoreError::Internal(m)) if m == "broken promise"));
        // The writer goes on with a new group.
        writer.write(|ctx| insert(ctx, 4)).await.expect("after");
        writer.close().await;
        thread.join().expect("writer thread");
        assert_eq!(rows(dir.path()), vec![0, 4]);
    }

    #[tokio::test]
    async fn a_group_rolled_back_makes_the_next_publish_read_its_seqs_and_ids_again() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = writer(dir.path());
        let (release, job) = gate(0);
        let gated = submitted(Box::pin(writer.write(job))).await;
        // In the group the gate's fsync leaves open: a publish took seqs and ids, then a job
        // broke its promise.
        let took = submitted(Box::pin(writer.write(|ctx| {
            ctx.next_event_seq = Some(7);
            ctx.next_delivery_id = Some(9);
            insert(ctx, 1)
        })))
        .await;
        let broken = submitted(Box::pin(writer.write_as(
            Answer::AfterFsync,
            Undo::Group,
            breaking_its_promise(2),
        )))
        .await;
        release.send(()).expect("release");
        gated.await.expect("the gate's own group");
        assert!(took.await.is_err(), "rolled back with its group");
        assert!(broken.await.is_err());
        let next = writer
            .write(|ctx| Ok((ctx.next_event_seq, ctx.next_delivery_id)))
            .await
            .expect("after");
        assert_eq!(next, (None, None), "read again from the tables");
        writer.close().await;
        thread.join().expect("writer thread");
    }
}
