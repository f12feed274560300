//! The queries. Pages come from `query.lua`, which walks the smallest index that applies
//! and filters on the hashes; the records are then loaded with pipelined HGETALLs. Reads see
//! each hash as some script left it (every hash is written whole by one script).

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use switchboard_core::event::{App, Delivery};
use switchboard_core::{AppId, EventId, TypePattern};

use super::codec::{self, Hash};
use super::write::invoke;
use super::{RedisStore, keys, unavailable};
use crate::{
    DeadFilter, DeadLetterQuery, DeliveryPage, DeliveryRecord, EventPage, EventQuery, EventRecord,
    Result, StoreError, UnackedQuery,
};

/// Index entries one query call looks at before it returns a (possibly short) page.
const BUDGET: usize = 20_000;

/// One `query.lua` call.
struct Query {
    mode: &'static str,
    descending: bool,
    after: Option<u64>,
    limit: usize,
    candidates: Vec<String>,
    filters: Vec<(&'static str, String)>,
}

impl Query {
    fn new(mode: &'static str, descending: bool, limit: usize) -> Self {
        Query {
            mode,
            descending,
            after: None,
            limit,
            candidates: Vec::new(),
            filters: Vec::new(),
        }
    }

    fn filter(&mut self, name: &'static str, value: impl ToString) {
        self.filters.push((name, value.to_string()));
    }

    fn type_pattern(&mut self, pattern: &Option<TypePattern>) {
        match pattern {
            None | Some(TypePattern::All) => {}
            Some(TypePattern::Exact(t)) => self.filter("type_exact", t),
            Some(TypePattern::Prefix(p)) => self.filter("type_prefix", p),
        }
    }
}

fn parse_cursor(cursor: &Option<String>) -> Result<Option<u64>> {
    cursor
        .as_deref()
        .map(|c| c.parse().map_err(|_| StoreError::InvalidCursor))
        .transpose()
}

impl RedisStore {
    /// Runs a query: the members of one page and the cursor after it.
    async fn query(
        &self,
        conn: &mut ConnectionManager,
        q: &Query,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut inv = self.scripts.query.prepare_invoke();
        inv.arg(q.mode)
            .arg(if q.descending { "desc" } else { "asc" })
            .arg(q.after.map(|a| a.to_string()).unwrap_or_default())
            .arg(q.limit)
            .arg(BUDGET)
            .arg(q.candidates.len());
        for c in &q.candidates {
            inv.arg(c);
        }
        for (name, value) in &q.filters {
            inv.arg(*name).arg(value);
        }
        let (members, cursor): (Vec<String>, String) = invoke(conn, &inv).await?;
        Ok((members, Some(cursor).filter(|c| !c.is_empty())))
    }

    pub(super) async fn do_list_apps(&self) -> Result<Vec<App>> {
        let mut conn = self.conn()?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::APPS)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut apps = all
            .iter()
            .map(|(id, json)| codec::app_from_json(id, json))
            .collect::<Result<Vec<_>>>()?;
        apps.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(apps)
    }

    /// Loads deliveries by number, with their history; missing ones are left out.
    async fn load_deliveries(
        &self,
        conn: &mut ConnectionManager,
        ns: &[u64],
    ) -> Result<Vec<(u64, Hash, Delivery)>> {
        if ns.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in ns {
            pipe.cmd("HGETALL").arg(keys::delivery(*n));
        }
        let hashes: Vec<Hash> = pipe.query_async(conn).await.map_err(unavailable)?;
        ns.iter()
            .zip(hashes)
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| {
                let d = codec::delivery_from_hash(*n, &h)?;
                Ok((*n, h, d))
            })
            .collect()
    }

    /// Full records of events, in the order of `ids`; events gone missing are left out.
    async fn records(
        &self,
        conn: &mut ConnectionManager,
        ids: &[String],
    ) -> Result<Vec<EventRecord>> {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut events = self.load_events(conn, &refs).await?;
        let all: Vec<u64> = events.values().flat_map(|(_, dl)| dl.clone()).collect();
        let mut deliveries: HashMap<u64, Delivery> = self
            .load_deliveries(conn, &all)
            .await?
            .into_iter()
            .map(|(n, _, d)| (n, d))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((event, dl)) = events.remove(id) else {
                continue;
            };
            let mut ds: Vec<Delivery> = dl.iter().filter_map(|n| deliveries.remove(n)).collect();
            ds.sort_by(|a, b| a.target.cmp(&b.target));
            out.push(EventRecord {
                event,
                deliveries: ds,
            });
        }
        Ok(out)
    }

    /// Delivery records (delivery and its event) for delivery numbers, in that order.
    async fn delivery_records(
        &self,
        conn: &mut ConnectionManager,
        ns: &[u64],
    ) -> Result<Vec<DeliveryRecord>> {
        let loaded = self.load_deliveries(conn, ns).await?;
        let ids: Vec<&str> = loaded
            .iter()
            .filter_map(|(_, h, _)| h.get("e").map(String::as_str))
            .collect();
        let events = self.load_events(conn, &ids).await?;
        loaded
            .into_iter()
            .map(|(n, h, delivery)| {
                let event_id = h.get("e").map(String::as_str).unwrap_or("");
                let (event, _) = events.get(event_id).ok_or_else(|| {
                    StoreError::Internal(format!("delivery {n} has no event {event_id}"))
                })?;
                Ok(DeliveryRecord {
                    event: event.clone(),
                    delivery,
                })
            })
            .collect()
    }

    pub(super) async fn do_event(&self, id: EventId) -> Result<Option<EventRecord>> {
        let mut conn = self.conn()?;
        let mut found = self.records(&mut conn, &[id.to_string()]).await?;
        Ok(found.pop())
    }

    pub(super) async fn do_events(&self, q: EventQuery) -> Result<EventPage> {
        let mut conn = self.conn()?;
        let mut query = Query::new("events", true, q.limit.max(1) as usize);
        query.after = parse_cursor(&q.cursor)?;
        if let Some(tenant) = &q.tenant {
            query
                .candidates
                .push(keys::tenant_events(&keys::tenant_tag(tenant)));
            query.filter("tenant", tenant);
        }
        if let Some(source) = &q.source {
            query.candidates.push(keys::source_events(source));
            query.filter("source", source);
        }
        if let Some(target) = &q.target {
            query.candidates.push(keys::target_events(target));
            query.filter("target", target);
        }
        if let Some(app) = &q.visible_to {
            query.candidates.push(keys::visible_events(app));
            query.filter("visible", app);
        }
        if query.candidates.is_empty() {
            query.candidates.push(keys::EVENTS.to_owned());
        }
        query.type_pattern(&q.event_type);
        if let Some(status) = q.status {
            query.filter("status", status.code());
        }
        if let Some(since) = q.since {
            query.filter("since", since.millis());
        }
        if let Some(until) = q.until {
            query.filter("before", until.millis());
        }
        let (ids, next_cursor) = self.query(&mut conn, &query).await?;
        let events = self.records(&mut conn, &ids).await?;
        Ok(EventPage {
            events,
            next_cursor,
        })
    }

    /// The dead-letter query for a filter; `owner` narrows to deliveries sent to that app.
    fn dead_query(
        filter: &DeadFilter,
        owner: Option<&AppId>,
        descending: bool,
        limit: usize,
    ) -> Query {
        let mut query = Query::new("dead", descending, limit);
        if let Some(tenant) = &filter.tenant {
            query
                .candidates
                .push(keys::tenant_dead(&keys::tenant_tag(tenant)));
            query.filter("tenant", tenant);
        }
        if let Some(target) = &filter.target {
            query.candidates.push(keys::target_dead(target));
            query.filter("target", target);
        }
        if let Some(app) = &filter.visible_to {
            query.candidates.push(keys::visible_dead(app));
            query.filter("visible", app);
        }
        if let Some(app) = owner {
            query.candidates.push(keys::target_dead(app));
            query.filter("owner", app);
        }
        if query.candidates.is_empty() {
            query.candidates.push(keys::DEAD.to_owned());
        }
        query.type_pattern(&filter.event_type);
        if let Some(since) = filter.since {
            query.filter("since", since.millis());
        }
        if let Some(until) = filter.until {
            query.filter("before", until.millis());
        }
        query
    }

    pub(super) async fn do_dead_letters(&self, q: DeadLetterQuery) -> Result<DeliveryPage> {
        let mut conn = self.conn()?;
        let mut query = Self::dead_query(&q.filter, None, true, q.limit.max(1) as usize);
        query.after = parse_cursor(&q.cursor)?;
        let (ns, next_cursor) = self.query(&mut conn, &query).await?;
        let ns = numbers(&ns)?;
        let items = self.delivery_records(&mut conn, &ns).await?;
        Ok(DeliveryPage { items, next_cursor })
    }

    /// Up to `limit` dead deliveries matching `filter` (and sent to `owner`), oldest first.
    pub(super) async fn dead_matching(
        &self,
        conn: &mut ConnectionManager,
        filter: &DeadFilter,
        owner: Option<&AppId>,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let mut found = Vec::new();
        let mut query = Self::dead_query(filter, owner, false, limit);
        while found.len() < limit {
            query.limit = limit - found.len();
            let (ns, next) = self.query(conn, &query).await?;
            found.extend(numbers(&ns)?);
            match next {
                Some(next) => query.after = Some(next.parse().map_err(|_| cursor_bug(&next))?),
                None => break,
            }
        }
        Ok(found)
    }

    pub(super) async fn do_unacknowledged(&self, q: UnackedQuery) -> Result<DeliveryPage> {
        let mut conn = self.conn()?;
        let mut query = Query::new("unacked", false, q.limit.max(1) as usize);
        query.after = parse_cursor(&q.cursor)?;
        query
            .candidates
            .push(keys::tenant_open(&keys::tenant_tag(&q.tenant)));
        query.filter("created_before", q.created_before.millis());
        if let Some(app) = &q.visible_to {
            query.filter("visible", app);
        }
        let (ns, next_cursor) = self.query(&mut conn, &query).await?;
        let ns = numbers(&ns)?;
        let items = self.delivery_records(&mut conn, &ns).await?;
        Ok(DeliveryPage { items, next_cursor })
    }
}

fn cursor_bug(c: &str) -> StoreError {
    StoreError::Internal(format!("query returned a bad cursor: {c}"))
}

fn numbers(ns: &[String]) -> Result<Vec<u64>> {
    ns.iter()
        .map(|n| n.parse().map_err(|_| cursor_bug(n)))
        .collect()
}
