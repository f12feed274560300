//! Group commit: one thread owns the only write connection. It takes every job waiting in
//! its queue, runs each inside its own savepoint of one transaction and commits once. The
//! commit itself does not fsync (`synchronous = NORMAL`): the group's answers go to the
//! syncer thread, which fsyncs the WAL file (once for every group waiting) and only then
//! answers each job, while the writer already runs the next group. So no job is answered
//! before its commit is on disk, and fsync and execution overlap. A job that fails rolls back
//! its savepoint alone. Nothing here knows what the jobs do.

use std::collections::HashMap;
use std::fs::File;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use switchboard_core::Timestamp;

use super::counters::{Counters, Pending};
use crate::StoreError;

/// At most this many jobs share one transaction.
const MAX_GROUP: usize = 1024;

/// What a job may use: the write connection and the writer's random source.
pub struct WriteCtx {
    pub conn: Connection,
    pub rng: SplitMix64,
    /// Counter changes of the running job; kept only if the job succeeds.
    job_counters: Pending,
    /// Counter changes of the group's successful jobs, written just before its commit.
    group_counters: Pending,
    /// When each app's last consume was written, to write it at most once a second.
    pub consumed_written: HashMap<String, i64>,
}

impl WriteCtx {
    /// Records a job's counter changes; they are written with the group's commit, and
    /// dropped if the job fails.
    pub fn counted(&mut self, counters: Counters, now: Timestamp) {
        self.job_counters.absorb(counters, now);
    }
}

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx) -> Completion + Send>;

enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Writer {
    /// `wal` is the database's WAL file, which the syncer fsyncs.
    pub fn spawn(
        conn: Connection,
        seed: u64,
        wal: File,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = std_mpsc::channel::<Vec<Completion>>();
        let syncer = std::thread::Builder::new()
            .name("switchboard-sync".into())
            .spawn(move || sync(wal, sync_rx))?;
        let ctx = WriteCtx {
            conn,
            rng: SplitMix64(seed),
            job_counters: Pending::default(),
            group_counters: Pending::default(),
            consumed_written: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("switchboard-writer".into())
            .spawn(move || run(ctx, rx, sync_tx, syncer))?;
        Ok((Writer { tx }, handle))
    }

    /// Runs `f` in the next group transaction and answers once that transaction is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            let result = in_savepoint(ctx, f);
            Box::new(move |committed| {
                let result = match (committed, result) {
                    (true, r) => r,
                    // The job's own error stands; a failed commit turns success into failure.
                    (false, Err(e)) => Err(e),
                    (false, Ok(_)) => Err(StoreError::Unavailable(
                        "the write could not be committed".into(),
                    )),
                };
                let _ = reply.send(result);
            })
        });
        self.tx
            .send(Msg::Job(job))
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

fn in_savepoint<T>(
    ctx: &mut WriteCtx,
    f: impl FnOnce(&mut WriteCtx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    ctx.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(ctx);
    match result {
        Ok(_) => {
            ctx.conn.prepare_cached("RELEASE job")?.execute([])?;
            let WriteCtx {
                job_counters,
                group_counters,
                ..
            } = ctx;
            group_counters.merge(job_counters);
        }
        Err(_) => {
            ctx.conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            ctx.conn.prepare_cached("RELEASE job")?.execute([])?;
            ctx.job_counters.clear();
        }
    }
    result
}

/// The syncer: fsyncs the WAL for every group committed since its last fsync, then answers
/// their jobs. Ends when the writer drops its sender, after answering everything.
fn sync(wal: File, rx: std_mpsc::Receiver<Vec<Completion>>) {
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let synced = match wal.sync_data() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "fsync of the WAL failed: the writes are not answered as durable");
                false
            }
        };
        for complete in batch {
            complete(synced);
        }
    }
}

fn run(
    mut ctx: WriteCtx,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    sync_tx: std_mpsc::Sender<Vec<Completion>>,
    syncer: JoinHandle<()>,
) {
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut jobs: Vec<Job> = Vec::new();
        match first {
            Msg::Job(job) => jobs.push(job),
            Msg::Close(done) => closing = Some(done),
        }
        while closing.is_none() && jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => jobs.push(job),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            commit_group(&mut ctx, jobs, &sync_tx);
        }
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

fn commit_group(ctx: &mut WriteCtx, jobs: Vec<Job>, sync_tx: &std_mpsc::Sender<Vec<Completion>>) {
    let started = std::time::Instant::now();
    let group = jobs.len();
    if let Err(e) = ctx.conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "could not begin a write transaction");
        // Dropping a job unanswered makes its caller see `Unavailable`; nothing ran.
        drop(jobs);
        return;
    }
    let completions: Vec<Completion> = jobs.into_iter().map(|job| job(ctx)).collect();
    let flushed = ctx.group_counters.flush(&ctx.conn);
    ctx.group_counters.clear();
    let committed = match flushed {
        Ok(()) => match ctx.conn.execute_batch("COMMIT") {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                let _ = ctx.conn.execute_batch("ROLLBACK");
                false
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "writing the group's counters failed");
            let _ = ctx.conn.execute_batch("ROLLBACK");
            false
        }
    };
    metrics::histogram!("switchboard_store_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("switchboard_store_group_size").record(group as f64);
    if !committed {
        for complete in completions {
            complete(false);
        }
        return;
    }
    // Answered by the syncer once the WAL is on disk.
    if let Err(std_mpsc::SendError(completions)) = sync_tx.send(completions) {
        for complete in completions {
            complete(false);
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
