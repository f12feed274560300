//! The transparency counters on Redis: per channel (tenant, source, target) a gauge hash
//! (`sb:{t}:g:src:tgt`), minute and hour flow hashes (`sb:{t}:m:…`, `sb:{t}:h:…`, fields
//! `<bucket start>:<flow>`) and the open deliveries by creation time (`sb:{t}:oo:…`), all
//! changed by the same scripts as the deliveries they count. Reads here touch counters only,
//! never deliveries (except stats by type, which reads the events in its time range).

use std::collections::{BTreeMap, HashMap};

use redis::aio::ConnectionManager;
use switchboard_core::histogram::Histogram;
use switchboard_core::{AppId, TenantId, Timestamp};

use super::codec::{self, Hash};
use super::write::invoke;
use super::{RedisStore, keys, unavailable};
use crate::{
    AlertChange, AlertState, AppActivity, ChannelQuery, ChannelStats, GroupBy, NewEvent, Published,
    Result, StatsQuery, StatsRow, StoreError,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// (tenant tag, source, target)
type Channel = (String, String, String);

fn channel_key(c: &Channel, kind: &str) -> String {
    format!("sb:{{{}}}:{kind}:{}:{}", c.0, c.1, c.2)
}

fn floor(ms: i64, period: i64) -> i64 {
    ms - ms.rem_euclid(period)
}

/// The flows of a window hash (`<start>:<flow>` → count) from `from` (inclusive) to `until`
/// (exclusive), summed per flow name.
fn flows(h: &Hash, from: i64, until: i64) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for (field, value) in h {
        let Some((start, name)) = field.split_once(':') else {
            continue;
        };
        let (Ok(start), Ok(value)) = (start.parse::<i64>(), value.parse::<i64>()) else {
            continue;
        };
        if start >= from && start < until {
            *out.entry(name.to_owned()).or_default() += value;
        }
    }
    out
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

fn int(h: &Hash, field: &str) -> i64 {
    h.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn alert_field(a: &AlertState) -> String {
    // Tabs cannot occur in tenants or app ids.
    format!("{}\t{}\t{}\t{}", a.tenant, a.source, a.target, a.rule)
}

fn alert_json(a: &AlertState) -> String {
    serde_json::json!({
        "tenant": a.tenant.as_str(),
        "source": a.source.as_str(),
        "target": a.target.as_str(),
        "rule": a.rule,
        "raised_at": a.raised_at.millis(),
    })
    .to_string()
}

fn alert_from_json(json: &str) -> Result<AlertState> {
    let bad = || StoreError::Internal(format!("stored alert is invalid: {json}"));
    let v: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let text = |k: &str| v[k].as_str().ok_or_else(bad);
    Ok(AlertState {
        tenant: TenantId::parse(text("tenant")?).map_err(|_| bad())?,
        source: codec::app_id(text("source")?)?,
        target: codec::app_id(text("target")?)?,
        rule: text("rule")?.to_owned(),
        raised_at: Timestamp(v["raised_at"].as_i64().ok_or_else(bad)?),
    })
}

impl RedisStore {
    /// The channels of a tenant, or of every tenant.
    async fn channel_list(
        &self,
        conn: &mut ConnectionManager,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<Channel>> {
        let (key, tag) = match tenant {
            Some(t) => {
                let tag = keys::tenant_tag(t);
                (format!("sb:{{{tag}}}:channels"), Some(tag))
            }
            None => ("sb:channels".to_owned(), None),
        };
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        let mut out: Vec<Channel> = members
            .iter()
            .filter_map(|m| {
                let parts: Vec<&str> = m.split(' ').collect();
                match (&tag, parts.as_slice()) {
                    (Some(tag), [src, tgt]) => {
                        Some((tag.clone(), (*src).to_owned(), (*tgt).to_owned()))
                    }
                    (None, [tag, src, tgt]) => {
                        Some(((*tag).to_owned(), (*src).to_owned(), (*tgt).to_owned()))
                    }
                    _ => None,
                }
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub(super) async fn do_channels(&self, q: ChannelQuery) -> Result<Vec<ChannelStats>> {
        let mut conn = self.conn()?;
        let channels = self.channel_list(&mut conn, q.tenant.as_ref()).await?;
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in &channels {
            pipe.cmd("HGETALL").arg(channel_key(c, "g"));
            pipe.cmd("HGETALL").arg(channel_key(c, "m"));
            pipe.cmd("HGETALL").arg(channel_key(c, "h"));
            pipe.cmd("ZRANGE")
                .arg(channel_key(c, "oo"))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let window = q.now.since(q.since) as i64;
        let by_minute = window <= 2 * HOUR;
        let period = if by_minute { MINUTE } else { HOUR };
        let from = floor(q.since.millis(), period);
        let end = i64::MAX;
        let hour_ago = floor(q.now.millis() - HOUR, MINUTE);
        let mut out = Vec::with_capacity(channels.len());
        let mut replies = replies.into_iter();
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| StoreError::Internal("short reply".into()))
        };
        for c in &channels {
            let gauges: Hash = redis::from_redis_value(next()?).map_err(|e| internal(&e))?;
            let minutes: Hash = redis::from_redis_value(next()?).map_err(|e| internal(&e))?;
            let hours: Hash = redis::from_redis_value(next()?).map_err(|e| internal(&e))?;
            let oldest: Vec<(String, i64)> =
                redis::from_redis_value(next()?).map_err(|e| internal(&e))?;
            let window = flows(if by_minute { &minutes } else { &hours }, from, end);
            let recent = flows(&minutes, hour_ago, end);
            let get = |m: &HashMap<String, i64>, k: &str| count(*m.get(k).unwrap_or(&0));
            let mut latency = Histogram::default();
            for (name, n) in &window {
                if let Some(bucket) = name.strip_prefix('b').and_then(|b| b.parse().ok()) {
                    latency.add(bucket, count(*n));
                }
            }
            let pending = count(int(&gauges, "p"));
            let in_flight = count(int(&gauges, "i"));
            out.push(ChannelStats {
                tenant: tenant_of(&c.0)?,
                source: codec::app_id(&c.1)?,
                target: codec::app_id(&c.2)?,
                published: get(&window, "p"),
                acknowledged: get(&window, "a"),
                failed_attempts: get(&window, "f"),
                died: get(&window, "x"),
                failures_last_hour: get(&recent, "f") + get(&recent, "x"),
                pending,
                in_flight,
                failing: count(int(&gauges, "f")),
                dead: count(int(&gauges, "d")),
                oldest_open_at: match pending + in_flight {
                    0 => None,
                    _ => oldest.first().map(|(_, at)| Timestamp(*at)),
                },
                latency,
            });
        }
        out.sort_by(|a, b| {
            (&a.tenant, &a.source, &a.target).cmp(&(&b.tenant, &b.source, &b.target))
        });
        Ok(out)
    }

    pub(super) async fn do_app_activity(&self) -> Result<Vec<AppActivity>> {
        let mut conn = self.conn()?;
        let (apps, consumed, load): (Vec<String>, Hash, Hash) = redis::pipe()
            .cmd("HKEYS")
            .arg(keys::APPS)
            .cmd("HGETALL")
            .arg("sb:consumed")
            .cmd("HGETALL")
            .arg("sb:load")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = apps
            .iter()
            .map(|app| {
                Ok(AppActivity {
                    app: codec::app_id(app)?,
                    last_consumed_at: consumed
                        .get(app)
                        .and_then(|v| v.parse().ok())
                        .map(Timestamp),
                    pending: count(int(&load, &format!("{app}:p"))),
                    in_flight: count(int(&load, &format!("{app}:i"))),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.app.cmp(&b.app));
        Ok(out)
    }

    pub(super) async fn do_stats(&self, q: StatsQuery) -> Result<Vec<StatsRow>> {
        let mut conn = self.conn()?;
        if q.group_by == GroupBy::Type {
            let key = match &q.tenant {
                Some(t) => format!("sb:{{{}}}:ixt", keys::tenant_tag(t)),
                None => "sb:ixt".to_owned(),
            };
            let mut inv = self.scripts.stats_by_type.prepare_invoke();
            inv.arg(key)
                .arg(q.since.millis())
                .arg(q.until.millis())
                .arg(q.visible_to.as_ref().map(AppId::as_str).unwrap_or(""));
            let rows: Vec<(String, i64, i64, i64, i64)> = invoke(&mut conn, &inv).await?;
            let mut out: Vec<StatsRow> = rows
                .into_iter()
                .map(|(key, published, acknowledged, failed, dead)| StatsRow {
                    key,
                    published: count(published),
                    acknowledged: count(acknowledged),
                    failed_attempts: count(failed),
                    dead: count(dead),
                })
                .collect();
            out.sort_by(|a, b| a.key.cmp(&b.key));
            return Ok(out);
        }
        let channels: Vec<Channel> = self
            .channel_list(&mut conn, q.tenant.as_ref())
            .await?
            .into_iter()
            .filter(|c| {
                q.visible_to
                    .as_ref()
                    .is_none_or(|a| c.1 == a.as_str() || c.2 == a.as_str())
            })
            .collect();
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in &channels {
            pipe.cmd("HGETALL").arg(channel_key(c, "h"));
        }
        let hours: Vec<Hash> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let from = floor(q.since.millis(), HOUR);
        // Keyed by (sort key, shown key).
        let mut groups: BTreeMap<(i64, String), [i64; 4]> = BTreeMap::new();
        for (c, h) in channels.iter().zip(&hours) {
            for (field, value) in h {
                let Some((start, name)) = field.split_once(':') else {
                    continue;
                };
                let (Ok(start), Ok(value)) = (start.parse::<i64>(), value.parse::<i64>()) else {
                    continue;
                };
                if start < from || start >= q.until.millis() {
                    continue;
                }
                let slot = match name {
                    "p" => 0,
                    "a" => 1,
                    "f" => 2,
                    "x" => 3,
                    _ => continue,
                };
                let key = match q.group_by {
                    GroupBy::Source => (0, c.1.clone()),
                    GroupBy::Target => (0, c.2.clone()),
                    _ => (start, Timestamp(start).to_string()),
                };
                groups.entry(key).or_default()[slot] += value;
            }
        }
        Ok(groups
            .into_iter()
            .map(|((_, key), [p, a, f, x])| StatsRow {
                key,
                published: count(p),
                acknowledged: count(a),
                failed_attempts: count(f),
                dead: count(x),
            })
            .collect())
    }

    pub(super) async fn do_prune_stats(
        &self,
        minutes_before: Timestamp,
        hours_before: Timestamp,
    ) -> Result<usize> {
        let mut conn = self.conn()?;
        let mut removed = 0;
        for c in self.channel_list(&mut conn, None).await? {
            let mut inv = self.scripts.prune.prepare_invoke();
            inv.arg(channel_key(&c, "m"))
                .arg(channel_key(&c, "h"))
                .arg(minutes_before.millis())
                .arg(hours_before.millis());
            let n: usize = invoke(&mut conn, &inv).await?;
            removed += n;
        }
        Ok(removed)
    }

    pub(super) async fn do_alerts(&self) -> Result<Vec<AlertState>> {
        let mut conn = self.conn()?;
        let all: Vec<String> = redis::cmd("HVALS")
            .arg("sb:alerts")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = all
            .iter()
            .map(|j| alert_from_json(j))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| {
            (&a.tenant, &a.source, &a.target, &a.rule)
                .cmp(&(&b.tenant, &b.source, &b.target, &b.rule))
        });
        Ok(out)
    }

    pub(super) async fn do_record_alert(
        &self,
        change: AlertChange,
        event: NewEvent,
        now: Timestamp,
    ) -> Result<Published> {
        let alert = match &change {
            AlertChange::Raised(a) => ("set", alert_field(a), alert_json(a)),
            AlertChange::Cleared(a) => ("del", alert_field(a), String::new()),
        };
        let mut published = self.publish_with(vec![event], now, Some(alert)).await?;
        Ok(published.remove(0))
    }
}

fn internal(e: &redis::ParsingError) -> StoreError {
    StoreError::Internal(format!("unexpected redis reply: {e}"))
}

/// The tenant behind a tag (undoing [`keys::tenant_tag`]'s percent-encoding).
fn tenant_of(tag: &str) -> Result<TenantId> {
    let bytes = tag.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = tag.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out)
        .map_err(|_| StoreError::Internal(format!("bad tenant tag {tag}")))?;
    TenantId::parse(&s).map_err(|_| StoreError::Internal(format!("bad tenant tag {tag}")))
}
