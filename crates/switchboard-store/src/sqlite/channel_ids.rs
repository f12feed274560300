//! The integer id of each channel (tenant, source, target), which the index of open
//! deliveries is keyed on (schema migration 9): a delivery's insert and its ack each descend
//! that index comparing one integer instead of three strings. Kept in the writer's memory,
//! loaded from `channels` on open.
//!
//! What holds: an id, once given, always names the same channel, and no two channels share
//! one. The writer gives a new channel the next id as it first meets it, and writes it with
//! the channel's counters row (see counters.rs), in the same transaction as the channel's
//! first deliveries. A group rolled back after giving an id leaves it given, here only: the
//! channel keeps it, and its row gets it with its next counters. Must not write the database.

use std::collections::HashMap;

use super::inflight::ByText;
use rusqlite::Connection;

/// A channel's tenant, source and target.
type Names = (Box<str>, Box<str>, Box<str>);

/// Channel ids by channel, with the next one to give.
#[derive(Debug, Default)]
pub struct ChannelIds {
    /// By `tenant \x1f source \x1f target` (ids and app names have no control characters).
    ids: HashMap<String, i64, ByText>,
    next: i64,
    /// The key being looked up, reused so that a lookup allocates nothing.
    key: String,
    /// The last channel looked up, and its id: most lookups in a row are for the same one.
    last: (String, i64),
    /// Each id's channel, by id.
    channels: Vec<Option<Names>>,
}

impl ChannelIds {
    /// The ids the `channels` table holds.
    pub fn load(conn: &Connection) -> rusqlite::Result<ChannelIds> {
        let mut ids = ChannelIds::default();
        let mut stmt = conn.prepare("SELECT tenant, source, target, id FROM channels")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (tenant, source, target): (String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            let id: i64 = r.get(3)?;
            ids.next = ids.next.max(id + 1);
            ids.ids.insert(key(&tenant, &source, &target), id);
            ids.name(id, &tenant, &source, &target);
        }
        ids.next = ids.next.max(1);
        Ok(ids)
    }

    /// The channel's id; a channel met for the first time gets the next one.
    pub fn id(&mut self, tenant: &str, source: &str, target: &str) -> i64 {
        self.key.clear();
        push_key(&mut self.key, tenant, source, target);
        if self.key == self.last.0 {
            return self.last.1;
        }
        let id = match self.ids.get(self.key.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.next;
                self.next += 1;
                self.ids.insert(self.key.clone(), id);
                self.name(id, tenant, source, target);
                id
            }
        };
        self.last.0.clone_from(&self.key);
        self.last.1 = id;
        id
    }
}

impl ChannelIds {
    /// The channel (tenant, source, target) of `id`, if it has one.
    pub fn channel(&self, id: i64) -> Option<(&str, &str, &str)> {
        let at = usize::try_from(id).ok()?;
        let (tenant, source, target) = self.channels.get(at)?.as_ref()?;
        Some((tenant, source, target))
    }

    fn name(&mut self, id: i64, tenant: &str, source: &str, target: &str) {
        let Ok(at) = usize::try_from(id) else {
            return;
        };
        if self.channels.len() <= at {
            self.channels.resize(at + 1, None);
        }
        self.channels[at] = Some((tenant.into(), source.into(), target.into()));
    }
}

fn key(tenant: &str, source: &str, target: &str) -> String {
    let mut key = String::with_capacity(tenant.len() + source.len() + target.len() + 2);
    push_key(&mut key, tenant, source, target);
    key
}

fn push_key(key: &mut String, tenant: &str, source: &str, target: &str) {
    key.push_str(tenant);
    key.push('\u{1f}');
    key.push_str(source);
    key.push('\u{1f}');
    key.push_str(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_keeps_its_id_and_a_new_one_gets_the_next() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE channels (tenant TEXT, source TEXT, target TEXT, id INTEGER);
             INSERT INTO channels VALUES ('acme', 'crm', 'hr', 3), ('acme', 'crm', 'billing', 7);",
        )
        .expect("fill");
        let mut ids = ChannelIds::load(&conn).expect("load");
        assert_eq!(ids.id("acme", "crm", "hr"), 3);
        assert_eq!(ids.id("acme", "crm", "hr"), 3);
        assert_eq!(ids.id("acme", "crm", "billing"), 7);
        // Names that run together differently are different channels.
        assert_eq!(ids.id("acme", "crmh", "r"), 8);
        assert_eq!(ids.id("acme", "crm", "hr"), 3);
        assert_eq!(ids.id("acme", "crmh", "r"), 8);
        assert_eq!(ids.id("globex", "crm", "hr"), 9);
        assert_eq!(ids.channel(3), Some(("acme", "crm", "hr")));
        assert_eq!(ids.channel(8), Some(("acme", "crmh", "r")));
        assert_eq!(ids.channel(4), None);
        assert_eq!(ids.channel(-1), None);
        let empty = Connection::open_in_memory().expect("open");
        empty
            .execute_batch(
                "CREATE TABLE channels (tenant TEXT, source TEXT, target TEXT, id INTEGER);",
            )
            .expect("schema");
        assert_eq!(ChannelIds::load(&empty).expect("load").id("a", "b", "c"), 1);
    }
}
