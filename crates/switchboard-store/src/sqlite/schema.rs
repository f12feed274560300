//! The SQLite schema and its versioned migrations, applied in order on open
//! (`PRAGMA user_version` records how far a database has come). Never edit a shipped
//! migration: add the next one.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: apps, keys, events, deliveries, attempts.
    r#"
    CREATE TABLE apps (
        id            TEXT PRIMARY KEY,
        subscriptions TEXT NOT NULL,           -- JSON array of patterns
        max_attempts  INTEGER NOT NULL,
        retry         TEXT NOT NULL,           -- RetryPolicy in its text form
        created_at    INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE app_keys (
        key_id       TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL REFERENCES apps(id),
        hash         BLOB NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        revoked_at   INTEGER
    );

    CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        tenant         TEXT NOT NULL,
        type           TEXT NOT NULL,
        source         TEXT NOT NULL,
        time           INTEGER NOT NULL,
        idem_key       TEXT,
        named_targets  TEXT,                   -- comma-separated, NULL when not named
        entity_id      TEXT,
        correlation_id TEXT,
        causation_id   TEXT,
        historical     INTEGER NOT NULL DEFAULT 0,
        data           TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_idem ON events(source, idem_key) WHERE idem_key IS NOT NULL;
    CREATE INDEX events_tenant ON events(tenant, seq);

    CREATE TABLE deliveries (
        id               INTEGER PRIMARY KEY,
        event_seq        INTEGER NOT NULL,
        target           TEXT NOT NULL,
        status           INTEGER NOT NULL,     -- DeliveryStatus::code
        attempts         INTEGER NOT NULL DEFAULT 0,
        available_at     INTEGER NOT NULL,
        lease_expires_at INTEGER,
        last_error       TEXT,
        ack_data         TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        acked_at         INTEGER
    );
    CREATE INDEX deliveries_event ON deliveries(event_seq);
    CREATE INDEX deliveries_target ON deliveries(target, event_seq);
    CREATE INDEX deliveries_ready ON deliveries(target, available_at, id) WHERE status = 0;
    CREATE INDEX deliveries_leases ON deliveries(lease_expires_at) WHERE status = 1;

    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        outcome     TEXT,
        error       TEXT,
        PRIMARY KEY (delivery_id, attempt)
    ) WITHOUT ROWID;
    "#,
    // 2: per-entity ordering, requeue with a fresh budget, tenant on deliveries for the
    // reconciliation view.
    r#"
    ALTER TABLE deliveries ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
    UPDATE deliveries SET tenant = (SELECT tenant FROM events WHERE seq = deliveries.event_seq);
    -- tenant, unit separator, entity_id; set only for ordered deliveries of an entity.
    ALTER TABLE deliveries ADD COLUMN order_key TEXT;
    -- 1 while an earlier delivery of the same order_key is still open.
    ALTER TABLE deliveries ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
    -- attempts already used when last requeued: the budget counts from here.
    ALTER TABLE deliveries ADD COLUMN budget_base INTEGER NOT NULL DEFAULT 0;
    DROP INDEX deliveries_ready;
    CREATE INDEX deliveries_ready ON deliveries(target, available_at, id)
        WHERE status = 0 AND blocked = 0;
    CREATE INDEX deliveries_order ON deliveries(target, order_key, id)
        WHERE order_key IS NOT NULL AND status IN (0, 1);
    CREATE INDEX deliveries_dead ON deliveries(id) WHERE status = 3;
    CREATE INDEX deliveries_open ON deliveries(tenant, id) WHERE status IN (0, 1);
    CREATE TABLE requeues (
        delivery_id INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        by          TEXT NOT NULL
    );
    CREATE INDEX requeues_delivery ON requeues(delivery_id);
    "#,
    // 3: transparency. Per-channel counters kept in the same transaction as each change
    // (see counters.rs), the source on deliveries, and when each app last consumed.
    r#"
    ALTER TABLE deliveries ADD COLUMN source TEXT NOT NULL DEFAULT '';
    UPDATE deliveries SET source = (SELECT source FROM events WHERE seq = deliveries.event_seq);
    ALTER TABLE deliveries ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
    UPDATE deliveries SET failed_attempts =
        (SELECT count(*) FROM attempts a WHERE a.delivery_id = deliveries.id AND a.outcome IN ('failed', 'timed_out'));
    ALTER TABLE apps ADD COLUMN last_consumed_at INTEGER;
    CREATE INDEX deliveries_channel_open ON deliveries(tenant, source, target, created_at)
        WHERE status IN (0, 1);
    CREATE TABLE channels (
        tenant TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
        pending INTEGER NOT NULL, in_flight INTEGER NOT NULL,
        failing INTEGER NOT NULL,       -- open deliveries with at least one failed attempt
        dead INTEGER NOT NULL,          -- in the dead letters now
        published INTEGER NOT NULL, acknowledged INTEGER NOT NULL,   -- all time
        PRIMARY KEY (tenant, source, target)
    ) WITHOUT ROWID;
    INSERT INTO channels
        SELECT tenant, source, target, sum(status = 0), sum(status = 1),
               sum(status IN (0, 1) AND failed_attempts > 0), sum(status = 3), count(*), sum(status = 2)
        FROM deliveries GROUP BY tenant, source, target;
    CREATE TABLE channel_stats (
        tenant TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
        period INTEGER NOT NULL,        -- 60000 (minute) or 3600000 (hour)
        start INTEGER NOT NULL,
        published INTEGER NOT NULL, acknowledged INTEGER NOT NULL,
        failed INTEGER NOT NULL,        -- failed attempts (nacks and timeouts)
        died INTEGER NOT NULL,
        latency_sum INTEGER NOT NULL,
        PRIMARY KEY (tenant, source, target, period, start)
    ) WITHOUT ROWID;
    CREATE INDEX channel_stats_period ON channel_stats(period, start);
    CREATE TABLE channel_latency (
        tenant TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL,
        period INTEGER NOT NULL, start INTEGER NOT NULL,
        bucket INTEGER NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (tenant, source, target, period, start, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX channel_latency_period ON channel_latency(period, start);
    CREATE TABLE alerts (
        tenant TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, rule TEXT NOT NULL,
        raised_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, source, target, rule)
    ) WITHOUT ROWID;
    "#,
    // 4: several live keys per app (rotation), tenant reader keys (`app_id` '' and the
    // tenant set), and when each key was last used.
    r#"
    ALTER TABLE app_keys ADD COLUMN tenant TEXT;
    ALTER TABLE app_keys ADD COLUMN last_used_at INTEGER;
    CREATE INDEX app_keys_owner ON app_keys(app_id, tenant) WHERE revoked_at IS NULL;
    "#,
    // 5: fewer B-tree writes per delivery. The current attempt lives in the delivery row
    // (`leased_at`; an acknowledged attempt ends at `acked_at`), so `attempts` holds only
    // attempts that failed: a lease and an ack no longer write it. The two "open" indexes
    // are keyed on `finished_at` (set when a delivery is acknowledged or dies, cleared by a
    // requeue), which a lease does not change, so a lease no longer rewrites them.
    r#"
    ALTER TABLE deliveries ADD COLUMN leased_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN finished_at INTEGER;
    UPDATE deliveries SET leased_at = coalesce(
        (SELECT started_at FROM attempts a WHERE a.delivery_id = deliveries.id AND a.attempt = deliveries.attempts),
        updated_at)
        WHERE status IN (1, 2);
    UPDATE deliveries SET finished_at = coalesce(acked_at, updated_at) WHERE status IN (2, 3);
    DELETE FROM attempts WHERE outcome IS NULL OR outcome = 'acknowledged';
    DROP INDEX deliveries_open;
    DROP INDEX deliveries_channel_open;
    CREATE INDEX deliveries_open ON deliveries(tenant, id) WHERE finished_at IS NULL;
    CREATE INDEX deliveries_channel_open ON deliveries(tenant, source, target, created_at)
        WHERE finished_at IS NULL;
    "#,
    // 6: two indexes fewer for every delivery to keep up. One index of open deliveries, per
    // channel and in publish order: the matrix seeks each channel's oldest, the tenant's
    // unacknowledged view merges its channels' first pages. And no (target, event_seq)
    // index: listing events by target goes through `deliveries_event`, and the planner
    // preferred it to `deliveries_dead` for dead letters by target, scanning every delivery
    // the target ever had.
    r#"
    DROP INDEX deliveries_open;
    DROP INDEX deliveries_channel_open;
    DROP INDEX deliveries_target;
    CREATE INDEX deliveries_channel_open ON deliveries(tenant, source, target, id)
        WHERE finished_at IS NULL;
    "#,
    // 7: lease deadlines live in the writer's memory (see deadlines.rs), loaded on open from
    // the open deliveries: a lease and an ack each change one index fewer.
    r#"
    DROP INDEX deliveries_leases;
    "#,
    // 8: the pending deliveries each app may lease live in the writer's memory too (see
    // ready.rs), loaded on open from the open deliveries: a publish and a lease each change
    // one index fewer per delivery.
    r#"
    DROP INDEX deliveries_ready;
    "#,
    // 9: the index of open deliveries keyed on an integer per channel (see channel_ids.rs)
    // instead of its three names: a publish inserts into it and an ack deletes from it, each
    // descending it with string comparisons. Every delivery written from here on has its
    // channel; of those before, the open ones (the index holds only them) and the dead ones
    // (a requeue opens them again).
    r#"
    ALTER TABLE channels ADD COLUMN id INTEGER;
    UPDATE channels SET id = n.id FROM
        (SELECT tenant, source, target, row_number() OVER (ORDER BY tenant, source, target) AS id
         FROM channels) AS n
        WHERE n.tenant = channels.tenant AND n.source = channels.source AND n.target = channels.target;
    CREATE UNIQUE INDEX channels_id ON channels(id);
    ALTER TABLE deliveries ADD COLUMN channel INTEGER;
    UPDATE deliveries SET channel = (SELECT c.id FROM channels c WHERE c.tenant = deliveries.tenant
        AND c.source = deliveries.source AND c.target = deliveries.target)
        WHERE finished_at IS NULL;
    UPDATE deliveries SET channel = (SELECT c.id FROM channels c WHERE c.tenant = deliveries.tenant
        AND c.source = deliveries.source AND c.target = deliveries.target)
        WHERE status = 3;
    DROP INDEX deliveries_channel_open;
    CREATE INDEX deliveries_channel_open ON deliveries(channel, id) WHERE finished_at IS NULL;
    "#,
    // 10: a lease of an unordered delivery is kept in the writer's memory until something
    // needs its row (see unwritten.rs); this log keeps such leases across a crash: a row per
    // lease job, replayed into the deliveries on open.
    r#"
    CREATE TABLE lease_log (
        id         INTEGER PRIMARY KEY,
        leased_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rows       BLOB NOT NULL        -- (delivery id, attempt) pairs, unwritten::pack
    );
    "#,
    // 11: the dead-letter and per-entity order indexes keyed on columns of their own, which
    // only a death, a requeue and an ordered delivery's end change: an index whose columns
    // and condition a statement leaves alone is one SQLite does not open, and the old ones
    // tested `status`, so every lease and ack opened and checked both.
    r#"
    -- when the delivery died; NULL unless it is dead now.
    ALTER TABLE deliveries ADD COLUMN dead_at INTEGER;
    UPDATE deliveries SET dead_at = coalesce(finished_at, updated_at) WHERE status = 3;
    -- order_key while the delivery is open (pending or in flight), else NULL.
    ALTER TABLE deliveries ADD COLUMN open_order TEXT;
    UPDATE deliveries SET open_order = order_key WHERE order_key IS NOT NULL AND status IN (0, 1);
    DROP INDEX deliveries_dead;
    DROP INDEX deliveries_order;
    CREATE INDEX deliveries_dead ON deliveries(id) WHERE dead_at IS NOT NULL;
    CREATE INDEX deliveries_order ON deliveries(target, open_order, id)
        WHERE open_order IS NOT NULL;
    "#,
    // 12: an event's deliveries found by their ids, not by an index on `event_seq`: a
    // publish gives an event's deliveries consecutive ids, which the event row now records
    // (`first_delivery` to `last_delivery`, an empty range when it has none), so every
    // delivery a publish writes inserts into one B-tree fewer. Reads still check `event_seq`
    // within the range, so a range that spans another event's rows (none is written so) is
    // harmless.
    r#"
    ALTER TABLE events ADD COLUMN first_delivery INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE events ADD COLUMN last_delivery INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET first_delivery = r.first, last_delivery = r.last
        FROM (SELECT event_seq, min(id) AS first, max(id) AS last FROM deliveries
              GROUP BY event_seq) AS r
        WHERE r.event_seq = events.seq;
    DROP INDEX deliveries_event;
    "#,
    // 13: an unordered delivery's ack writes a narrow row of its own instead of rewriting the
    // delivery's (the `UPDATE` read and wrote all 23 columns back: 12.7k instructions, 4.6k of
    // them the interpreter, against 8.7k for the narrow insert and the delete below, callgrind).
    // `acks` holds those acks; a delivery with one is acknowledged whatever its row says, and
    // `delivery_rows` is the deliveries as they are, each row with its ack folded in: every
    // read of a delivery's state goes through it. The open deliveries' index keyed on
    // `finished_at` became a table of its own (`open_deliveries`), which a publish inserts
    // into and an ack, a death or a requeue change; an ack no longer changes the row.
    // An ordered delivery's ack still changes its row (it ends its entity's turn).
    r#"
    CREATE TABLE acks (
        id        INTEGER PRIMARY KEY,     -- the delivery's id
        attempt   INTEGER NOT NULL,        -- the attempt acknowledged
        leased_at INTEGER,                 -- when it began, if the row does not say
        acked_at  INTEGER NOT NULL,
        data      TEXT                     -- ack data
    );
    CREATE TABLE open_deliveries (
        channel INTEGER NOT NULL,
        id      INTEGER NOT NULL,
        PRIMARY KEY (channel, id)
    ) WITHOUT ROWID;
    INSERT INTO open_deliveries SELECT channel, id FROM deliveries
        INDEXED BY deliveries_channel_open WHERE finished_at IS NULL;
    DROP INDEX deliveries_channel_open;
    CREATE VIEW delivery_rows AS SELECT
        d.id AS id, d.event_seq AS event_seq, d.target AS target,
        CASE WHEN a.id IS NULL THEN d.status ELSE 2 END AS status,
        coalesce(a.attempt, d.attempts) AS attempts,
        d.available_at AS available_at,
        CASE WHEN a.id IS NULL THEN d.lease_expires_at END AS lease_expires_at,
        d.last_error AS last_error,
        CASE WHEN a.id IS NULL THEN d.ack_data ELSE a.data END AS ack_data,
        d.created_at AS created_at,
        coalesce(a.acked_at, d.updated_at) AS updated_at,
        coalesce(a.acked_at, d.acked_at) AS acked_at,
        d.tenant AS tenant, d.order_key AS order_key, d.blocked AS blocked,
        d.budget_base AS budget_base, d.source AS source,
        d.failed_attempts AS failed_attempts,
        coalesce(a.leased_at, d.leased_at) AS leased_at,
        coalesce(a.acked_at, d.finished_at) AS finished_at,
        d.channel AS channel, d.dead_at AS dead_at, d.open_order AS open_order
        FROM deliveries d LEFT JOIN acks a ON a.id = d.id;
    "#,
    // 14: no unique index on `events.id` (2.5k of the writer's 29k instructions per event of
    // the full cycle): an event stored from here on has an id that holds its seq
    // (`EventId::sequenced`), which a lookup checks against the row; the ids of the events
    // before are kept in `event_ids`. A `UNIQUE` column's index cannot be dropped, so the
    // table is made again (a one-time copy of every event).
    r#"
    CREATE TABLE events_new (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL,
        tenant         TEXT NOT NULL,
        type           TEXT NOT NULL,
        source         TEXT NOT NULL,
        time           INTEGER NOT NULL,
        idem_key       TEXT,
        named_targets  TEXT,
        entity_id      TEXT,
        correlation_id TEXT,
        causation_id   TEXT,
        historical     INTEGER NOT NULL DEFAULT 0,
        data           TEXT NOT NULL,
        first_delivery INTEGER NOT NULL DEFAULT 1,
        last_delivery  INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO events_new (seq, id, tenant, type, source, time, idem_key, named_targets,
        entity_id, correlation_id, causation_id, historical, data, first_delivery, last_delivery)
        SELECT seq, id, tenant, type, source, time, idem_key, named_targets, entity_id,
            correlation_id, causation_id, historical, data, first_delivery, last_delivery
        FROM events;
    CREATE TABLE event_ids (
        id  TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO event_ids SELECT id, seq FROM events;
    DROP TABLE events;
    ALTER TABLE events_new RENAME TO events;
    CREATE UNIQUE INDEX events_idem ON events(source, idem_key) WHERE idem_key IS NOT NULL;
    CREATE INDEX events_tenant ON events(tenant, seq);
    "#,
    // 15: `open_deliveries` records the open deliveries up to a mark, not the newest ones
    // (see open_mark.rs): most deliveries are acknowledged before the mark passes them, and
    // never get an entry. Every delivery before has its entry: the mark starts at the newest.
    r#"
    CREATE TABLE open_mark (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        below INTEGER NOT NULL
    );
    INSERT INTO open_mark (id, below) SELECT 1, coalesce(max(id), 0) FROM deliveries;
    "#,
];

/// The schema version this build writes.
pub const CURRENT_VERSION: usize = MIGRATIONS.len();

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, CURRENT_VERSION)
}

fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = version.max(0) as usize;
    if version > CURRENT_VERSION {
        return Err(StoreError::Internal(format!(
            "the data directory has schema version {version}, newer than this build's {CURRENT_VERSION}: run a newer switchboard"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::test_rows::rows;

    /// A version-4 database with a delivery in each state and its attempts as version 4 kept
    /// them (a row per attempt, inserted at lease).
    fn version_4() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 4).expect("migrate to 4");
        conn.execute_batch(
            "INSERT INTO deliveries (id, event_seq, target, status, attempts, available_at, \
                 lease_expires_at, created_at, updated_at, acked_at) VALUES
                 (1, 1, 'a', 0, 0, 0, NULL, 0, 0, NULL),
                 (2, 1, 'b', 1, 2, 0, 900, 0, 50, NULL),
                 (3, 1, 'c', 2, 1, 0, NULL, 0, 70, 70),
                 (4, 1, 'd', 3, 1, 0, NULL, 0, 80, NULL);
             INSERT INTO attempts VALUES
                 (2, 1, 10, 20, 'failed', 'boom'),
                 (2, 2, 40, NULL, NULL, NULL),
                 (3, 1, 60, 70, 'acknowledged', NULL),
                 (4, 1, 75, 80, 'failed', 'bad');",
        )
        .expect("fill");
        conn
    }

    #[test]
    fn migration_11_keys_dead_letters_and_entity_order_on_their_own_columns() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 10).expect("migrate to 10");
        // Ordered ('k') pending, in flight, acknowledged and dead; an unordered dead one.
        conn.execute_batch(
            "INSERT INTO deliveries (id, event_seq, target, status, attempts, available_at, \
                 created_at, updated_at, order_key, finished_at) VALUES
                 (1, 1, 'a', 0, 0, 0, 0, 5, 'k', NULL),
                 (2, 1, 'a', 1, 1, 0, 0, 6, 'k', NULL),
                 (3, 1, 'a', 2, 1, 0, 0, 7, 'k', 70),
                 (4, 1, 'a', 3, 1, 0, 0, 8, 'k', 80),
                 (5, 1, 'b', 3, 8, 0, 0, 90, NULL, NULL);",
        )
        .expect("fill");
        migrate_to(&mut conn, 11).expect("migrate to 11");
        let rows: Vec<(i64, Option<i64>, Option<String>)> = rows(
            &conn,
            "SELECT id, dead_at, open_order FROM deliveries ORDER BY id",
        );
        assert_eq!(
            rows,
            vec![
                (1, None, Some("k".into())), // pending: open
                (2, None, Some("k".into())), // in flight: open
                (3, None, None),             // acknowledged
                (4, Some(80), None),         // dead since it finished
                (5, Some(90), None),         // dead, unordered, no finish time: its last change
            ]
        );
    }

    #[test]
    fn migration_12_records_each_events_deliveries_as_a_range_of_ids() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 11).expect("migrate to 11");
        // Event 1 with two deliveries, event 2 with none, event 3 with one.
        conn.execute_batch(
            "INSERT INTO events (seq, id, tenant, type, source, time, data) VALUES
                 (1, 'e1', 't', 'a.b', 's', 0, '{}'),
                 (2, 'e2', 't', 'a.b', 's', 0, '{}'),
                 (3, 'e3', 't', 'a.b', 's', 0, '{}');
             INSERT INTO deliveries (id, event_seq, target, status, available_at, created_at, \
                 updated_at) VALUES (1, 1, 'a', 0, 0, 0, 0), (2, 1, 'b', 0, 0, 0, 0),
                 (3, 3, 'a', 0, 0, 0, 0);",
        )
        .expect("fill");
        migrate_to(&mut conn, 12).expect("migrate to 12");
        let ranges: Vec<(i64, i64, i64)> = rows(
            &conn,
            "SELECT seq, first_delivery, last_delivery FROM events ORDER BY seq",
        );
        assert_eq!(ranges, vec![(1, 1, 2), (2, 1, 0), (3, 3, 3)]);
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'deliveries_event'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(index, 0, "the index on event_seq is gone");
    }

    #[test]
    fn migration_13_keeps_every_delivery_as_it_was_and_lists_the_open_ones() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 12).expect("migrate to 12");
        // Pending, in flight, acknowledged and dead, in channels 7 and 8.
        conn.execute_batch(
            "INSERT INTO deliveries (id, event_seq, target, status, attempts, available_at, \
                 created_at, updated_at, acked_at, finished_at, channel, ack_data) VALUES
                 (1, 1, 'a', 0, 0, 0, 0, 5, NULL, NULL, 7, NULL),
                 (2, 1, 'b', 1, 1, 0, 0, 6, NULL, NULL, 8, NULL),
                 (3, 2, 'a', 2, 1, 0, 0, 7, 70, 70, 7, 'ok'),
                 (4, 2, 'b', 3, 8, 0, 0, 8, NULL, 80, 8, NULL);",
        )
        .expect("fill");
        let before: Vec<(i64, i64, Option<String>)> = rows(
            &conn,
            "SELECT id, status, ack_data FROM deliveries ORDER BY id",
        );
        migrate(&mut conn).expect("migrate");
        let after: Vec<(i64, i64, Option<String>)> = rows(
            &conn,
            "SELECT id, status, ack_data FROM delivery_rows ORDER BY id",
        );
        assert_eq!(after, before, "the view shows each row as it was");
        let open: Vec<(i64, i64, i64)> = rows(
            &conn,
            "SELECT channel, id, 0 FROM open_deliveries ORDER BY channel, id",
        );
        assert_eq!(open, vec![(7, 1, 0), (8, 2, 0)]);
        // An ack of its own folds into the view: delivery 2 acknowledged on attempt 1.
        conn.execute_batch(
            "INSERT INTO acks (id, attempt, leased_at, acked_at, data) VALUES (2, 1, NULL, 90, 'done')",
        )
        .expect("ack");
        let acked: Vec<(i64, Option<i64>, Option<String>)> = rows(
            &conn,
            "SELECT status, finished_at, ack_data FROM delivery_rows WHERE id = 2",
        );
        assert_eq!(acked, vec![(2, Some(90), Some("done".into()))]);
    }

    #[test]
    fn migration_14_keeps_every_event_and_its_id_without_a_unique_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 13).expect("migrate to 13");
        conn.execute_batch(
            "INSERT INTO events (seq, id, tenant, type, source, time, idem_key, data, \
                 first_delivery, last_delivery) VALUES
                 (1, 'evt_a', 't', 'a.b', 's', 10, 'k1', '{}', 1, 2),
                 (2, 'evt_b', 't', 'a.b', 's', 20, NULL, '{\"x\":1}', 3, 2);",
        )
        .expect("fill");
        let before: Vec<(i64, String, String)> =
            rows(&conn, "SELECT seq, id, data FROM events ORDER BY seq");
        migrate(&mut conn).expect("migrate");
        let after: Vec<(i64, String, String)> =
            rows(&conn, "SELECT seq, id, data FROM events ORDER BY seq");
        assert_eq!(after, before);
        let ids: Vec<(String, i64, i64)> =
            rows(&conn, "SELECT id, seq, 0 FROM event_ids ORDER BY seq");
        assert_eq!(ids, vec![("evt_a".into(), 1, 0), ("evt_b".into(), 2, 0)]);
        let indexes: Vec<(String, i64, i64)> = rows(
            &conn,
            "SELECT name, 0, 0 FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' \
             ORDER BY name",
        );
        assert_eq!(
            indexes,
            vec![("events_idem".into(), 0, 0), ("events_tenant".into(), 0, 0)],
            "no index on the id"
        );
        // Found by their old ids; an id that names seq 2 but is not its id finds nothing.
        let find = |id: &str| {
            let id = switchboard_core::EventId::parse(id).expect("id");
            super::super::read::event(&conn, &id)
                .expect("read")
                .map(|r| r.event.time.millis())
        };
        assert_eq!((find("evt_a"), find("evt_b")), (Some(10), Some(20)));
        let posing = switchboard_core::EventId::sequenced(0, 2, 0);
        assert_eq!(find(posing.as_str()), None);
    }

    #[test]
    fn migration_15_puts_the_mark_at_the_newest_delivery_as_every_open_one_has_its_entry() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 14).expect("migrate to 14");
        migrate(&mut conn).expect("migrate an empty database");
        let empty: i64 = conn
            .query_row("SELECT below FROM open_mark", [], |r| r.get(0))
            .expect("mark");
        assert_eq!(empty, 0);

        let mut conn = Connection::open_in_memory().expect("open");
        migrate_to(&mut conn, 14).expect("migrate to 14");
        conn.execute_batch(
            "INSERT INTO deliveries (id, event_seq, target, status, attempts, available_at, \
                 created_at, updated_at, channel) VALUES
                 (1, 1, 'a', 0, 0, 0, 0, 0, 7), (2, 1, 'b', 0, 0, 0, 0, 0, 8);
             INSERT INTO open_deliveries VALUES (7, 1), (8, 2);",
        )
        .expect("fill");
        migrate(&mut conn).expect("migrate");
        let mark: Vec<(i64, i64, i64)> = rows(&conn, "SELECT id, below, 0 FROM open_mark");
        assert_eq!(mark, vec![(1, 2, 0)]);
        let open: Vec<(i64, i64, i64)> = rows(
            &conn,
            "SELECT channel, id, 0 FROM open_deliveries ORDER BY id",
        );
        assert_eq!(open, vec![(7, 1, 0), (8, 2, 0)], "entries stay");
    }

    /// The statements `UPDATE deliveries` that a lease and an ack run, and the indexes SQLite
    /// opens for each: never the dead letters' or the entity order's.
    #[test]
    fn a_lease_and_an_ack_leave_the_dead_and_order_indexes_alone() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("migrate");
        let index_root = |name: &str| -> i64 {
            conn.query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .expect("index")
        };
        let dead = index_root("deliveries_dead");
        let order = index_root("deliveries_order");
        let insert_ack = format!(
            "{} VALUES (?2, ?3, ?4, ?1, ?5)",
            super::super::write::INSERT_ACKS_HEAD
        );
        for sql in [
            super::super::write::LEASE_ROW,
            &insert_ack,
            super::super::write::CLOSE_OPEN,
        ] {
            let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).expect("explain");
            let unbound = std::iter::repeat_n(rusqlite::types::Null, explain.parameter_count());
            let opened: Vec<i64> = explain
                .query_map(rusqlite::params_from_iter(unbound), |r| {
                    Ok((r.get::<_, String>(1)?, r.get::<_, i64>(3)?))
                })
                .expect("query")
                .filter_map(|op| match op {
                    Ok((code, root)) if code == "OpenWrite" => Some(root),
                    _ => None,
                })
                .collect();
            assert!(!opened.is_empty(), "{sql}");
            assert!(
                !opened.contains(&dead) && !opened.contains(&order),
                "{sql} opens {opened:?} (dead {dead}, order {order})"
            );
        }
    }

    #[test]
    fn migration_5_moves_current_attempts_into_the_delivery_row() {
        let mut conn = version_4();
        migrate_to(&mut conn, 5).expect("migrate to 5");
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = rows(
            &conn,
            "SELECT id, leased_at, finished_at FROM deliveries ORDER BY id",
        );
        assert_eq!(
            rows,
            vec![
                (1, None, None),         // pending
                (2, Some(40), None),     // in flight since its second attempt
                (3, Some(60), Some(70)), // acknowledged
                (4, None, Some(80)),     // dead
            ]
        );
        let attempts: Vec<(i64, i64)> = conn
            .prepare("SELECT delivery_id, attempt FROM attempts ORDER BY 1, 2")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(attempts, vec![(2, 1), (4, 1)], "only failed attempts stay");
    }
}
