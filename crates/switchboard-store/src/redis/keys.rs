//! Redis key names. Everything switchboard keeps lives under `sb:`; keys scoped to one tenant
//! carry the tenant, percent-encoded, as a `{hash tag}`. The Lua scripts build the same
//! names from the parts passed to them; this file and `lua/prelude.lua` must agree.

use switchboard_core::{AppId, TenantId};

/// Registered apps: app id → app JSON.
pub const APPS: &str = "sb:apps";
/// Every lease in flight: delivery number scored by its deadline.
pub const LEASES: &str = "sb:leases";
/// The pub/sub channel carrying app ids whose deliveries became ready.
pub const WAKE_CHANNEL: &str = "sb:wake";
/// Every event, scored by seq.
pub const EVENTS: &str = "sb:ix";
/// Every dead delivery, scored by delivery number.
pub const DEAD: &str = "sb:dead";

/// A tenant as it appears inside key names: bytes outside `[A-Za-z0-9._~@+=-]` become `%XX`,
/// so no tenant can reach into another's keys or break a `{hash tag}`.
pub fn tenant_tag(tenant: &TenantId) -> String {
    encode(tenant.as_str())
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let safe = b.is_ascii_alphanumeric() || b"._~@+=-".contains(&b);
        if safe {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A key's owner as stored in its hash: `app:<id>` or `tenant:<tenant>`.
pub fn key_owner(owner: &crate::KeyOwner) -> String {
    match owner {
        crate::KeyOwner::App(app) => format!("app:{app}"),
        crate::KeyOwner::TenantReader(tenant) => format!("tenant:{tenant}"),
    }
}

/// The set of an owner's live key ids.
pub fn owner_keys(owner: &crate::KeyOwner) -> String {
    match owner {
        crate::KeyOwner::App(app) => format!("sb:ko:app:{app}"),
        crate::KeyOwner::TenantReader(tenant) => format!("sb:ko:tenant:{}", tenant_tag(tenant)),
    }
}

/// A key's hash: owner `o`, key hash `h` (hex; `sb:keys` maps it back to the id), created
/// `c`, last used `u`.
pub fn key(key_id: &str) -> String {
    format!("sb:key:{key_id}")
}

pub fn event(id: &str) -> String {
    format!("sb:e:{id}")
}

pub fn delivery(n: u64) -> String {
    format!("sb:d:{n}")
}

/// The open deliveries of one ordered entity for one target, scored by delivery number.
pub fn order_set(tag: &str, target: &AppId, entity: &str) -> String {
    format!("sb:{{{tag}}}:ord:{target}:{}", encode(entity))
}

/// The first event published with an idempotency key by `source`.
pub fn idempotency(source: &AppId, key: &str) -> String {
    format!("sb:idem:{source}:{key}")
}

pub fn tenant_events(tag: &str) -> String {
    format!("sb:{{{tag}}}:ix")
}

pub fn source_events(app: &AppId) -> String {
    format!("sb:ix:s:{app}")
}

pub fn target_events(app: &AppId) -> String {
    format!("sb:ix:t:{app}")
}

/// Events `app` published or received.
pub fn visible_events(app: &AppId) -> String {
    format!("sb:ix:v:{app}")
}

pub fn tenant_dead(tag: &str) -> String {
    format!("sb:{{{tag}}}:dead")
}

pub fn target_dead(app: &AppId) -> String {
    format!("sb:dead:t:{app}")
}

/// Dead deliveries to `app` or of events it published.
pub fn visible_dead(app: &AppId) -> String {
    format!("sb:dead:v:{app}")
}

/// A tenant's deliveries neither acknowledged nor dead.
pub fn tenant_open(tag: &str) -> String {
    format!("sb:{{{tag}}}:open")
}

pub fn delivery_id(n: u64) -> switchboard_core::DeliveryId {
    switchboard_core::DeliveryId::numbered(n)
}

/// The delivery number behind an id; `None` for an id this store never made.
pub fn delivery_number(id: &switchboard_core::DeliveryId) -> Option<u64> {
    id.number().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_cannot_break_hash_tags_or_collide() {
        let t = |s: &str| tenant_tag(&TenantId::parse(s).unwrap());
        assert_eq!(t("acme"), "acme");
        assert_eq!(t("a}b:{c"), "a%7Db%3A%7Bc");
        assert_ne!(t("a%7D"), t("a}"));
        assert_eq!(t("é"), "%C3%A9");
    }

    #[test]
    fn delivery_ids_round_trip() {
        assert_eq!(delivery_number(&delivery_id(42)), Some(42));
        let bad = switchboard_core::DeliveryId::parse("dlv_x").unwrap();
        assert_eq!(delivery_number(&bad), None);
    }
}
