//! Routing: which apps receive an event. Subscription patterns and the routing rule.
//! Pure: the caller hands in the registered apps; nothing here looks anything up.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::ids::{AppId, EventType, InvalidValue};

/// A subscription pattern: `*` (everything), `order.*` (a prefix of whole segments) or an
/// exact type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    All,
    /// Stored with its trailing dot: `order.*` is `Prefix("order.")`.
    Prefix(String),
    Exact(EventType),
}

impl TypePattern {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s == "*" {
            return Ok(TypePattern::All);
        }
        match s.strip_suffix(".*") {
            Some(prefix) => {
                if prefix.contains('*') {
                    return Err(InvalidValue(format!(
                        "`{s}` has a `*` in the middle: only `*` or a trailing `.*` (like `order.*`) is allowed"
                    )));
                }
                // A prefix is one or more whole segments: validate it as a type with a
                // dummy last segment.
                EventType::parse(&format!("{prefix}.x"))
                    .map_err(|_| InvalidValue(format!(
                        "`{s}` is not a valid pattern: use `*`, `order.*` or an exact type like `user.created`"
                    )))?;
                Ok(TypePattern::Prefix(format!("{prefix}.")))
            }
            None if s.contains('*') => Err(InvalidValue(format!(
                "`{s}` has a `*` in the middle: only `*` or a trailing `.*` (like `order.*`) is allowed"
            ))),
            None => EventType::parse(s).map(TypePattern::Exact),
        }
    }

    pub fn matches(&self, event_type: &EventType) -> bool {
        match self {
            TypePattern::All => true,
            TypePattern::Prefix(prefix) => event_type.as_str().starts_with(prefix.as_str()),
            TypePattern::Exact(exact) => exact == event_type,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::All => f.write_str("*"),
            TypePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            TypePattern::Exact(exact) => f.write_str(exact.as_str()),
        }
    }
}

impl Serialize for TypePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One pattern an app subscribes to. An `ordered` subscription hands out the deliveries of
/// one entity (same tenant and `entity_id`) one at a time, in publish order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub pattern: TypePattern,
    pub ordered: bool,
}

impl Subscription {
    pub fn unordered(pattern: TypePattern) -> Subscription {
        Subscription {
            pattern,
            ordered: false,
        }
    }
}

/// One target chosen by routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub app: AppId,
    /// The target has an ordered subscription matching the type: its deliveries of one
    /// entity go one at a time (when the event has an `entity_id`).
    pub ordered: bool,
}

fn ordered_for(subscriptions: &[Subscription], event_type: &EventType) -> bool {
    subscriptions
        .iter()
        .any(|s| s.ordered && s.pattern.matches(event_type))
}

/// The routing rule. Named targets get the event, exactly and once each (even the source,
/// when it names itself). Without names, every app with a matching subscription gets it,
/// except the source. The result is sorted by app and free of duplicates.
pub fn route<'a>(
    source: &AppId,
    event_type: &EventType,
    named: Option<&[AppId]>,
    apps: impl IntoIterator<Item = (&'a AppId, &'a [Subscription])>,
) -> Vec<Route> {
    let apps: Vec<(&AppId, &[Subscription])> = apps.into_iter().collect();
    let mut routes: Vec<Route> = match named {
        Some(named) => named
            .iter()
            .map(|app| Route {
                app: app.clone(),
                ordered: apps
                    .iter()
                    .find(|(id, _)| *id == app)
                    .is_some_and(|(_, subs)| ordered_for(subs, event_type)),
            })
            .collect(),
        None => apps
            .iter()
            .filter(|(app, _)| *app != source)
            .filter(|(_, subs)| subs.iter().any(|s| s.pattern.matches(event_type)))
            .map(|(app, subs)| Route {
                app: (*app).clone(),
                ordered: ordered_for(subs, event_type),
            })
            .collect(),
    };
    routes.sort_by(|a, b| a.app.cmp(&b.app));
    routes.dedup_by(|a, b| a.app == b.app);
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppId {
        AppId::parse(s).unwrap()
    }

    /// `order.*` is unordered; `!order.*` is the same pattern, ordered.
    fn to_subs(list: &[&str]) -> Vec<Subscription> {
        list.iter()
            .map(|p| match p.strip_prefix('!') {
                Some(p) => Subscription {
                    pattern: TypePattern::parse(p).unwrap(),
                    ordered: true,
                },
                None => Subscription::unordered(TypePattern::parse(p).unwrap()),
            })
            .collect()
    }

    /// `subs` is (app, patterns); `expect` the targets, sorted.
    fn check_routing(
        subs: &[(&str, &[&str])],
        source: &str,
        event_type: &str,
        named: Option<&[&str]>,
        expect: &[&str],
    ) {
        let apps: Vec<(AppId, Vec<Subscription>)> =
            subs.iter().map(|(a, p)| (app(a), to_subs(p))).collect();
        let named: Option<Vec<AppId>> = named.map(|n| n.iter().map(|a| app(a)).collect());
        let got = route(
            &app(source),
            &EventType::parse(event_type).unwrap(),
            named.as_deref(),
            apps.iter().map(|(a, p)| (a, p.as_slice())),
        );
        let got: Vec<String> = got
            .iter()
            .map(|r| format!("{}{}", if r.ordered { "!" } else { "" }, r.app))
            .collect();
        assert_eq!(got, expect, "routing {event_type} from {source}");
    }

    #[test]
    fn exact_prefix_and_all() {
        let subs: &[(&str, &[&str])] = &[
            ("hr", &["user.created"]),
            ("billing", &["order.*"]),
            ("audit", &["*"]),
            ("crm", &["credit.*", "user.created"]),
        ];
        check_routing(subs, "crm", "user.created", None, &["audit", "hr"]);
        check_routing(subs, "shop", "order.created", None, &["audit", "billing"]);
        check_routing(
            subs,
            "shop",
            "order.item.added",
            None,
            &["audit", "billing"],
        );
        check_routing(subs, "shop", "orders.created", None, &["audit"]);
        check_routing(subs, "hr", "user.deleted", None, &["audit"]);
        check_routing(subs, "audit", "user.created", None, &["crm", "hr"]);
    }

    #[test]
    fn named_targets_are_exact_and_may_include_the_source() {
        let subs: &[(&str, &[&str])] = &[("hr", &["*"]), ("billing", &["*"])];
        check_routing(
            subs,
            "crm",
            "user.created",
            Some(&["billing"]),
            &["billing"],
        );
        check_routing(subs, "crm", "user.created", Some(&["crm", "crm"]), &["crm"]);
        check_routing(subs, "crm", "user.created", Some(&[]), &[]);
    }

    #[test]
    fn ordered_subscriptions_mark_their_routes() {
        let subs: &[(&str, &[&str])] = &[("hr", &["!user.*", "credit.*"]), ("audit", &["*"])];
        check_routing(subs, "crm", "user.created", None, &["audit", "!hr"]);
        check_routing(subs, "crm", "credit.added", None, &["audit", "hr"]);
        check_routing(subs, "crm", "user.created", Some(&["hr"]), &["!hr"]);
    }

    #[test]
    fn no_match_routes_nowhere() {
        check_routing(&[("hr", &["user.created"])], "crm", "x.y", None, &[]);
    }

    #[test]
    fn pattern_parsing() {
        assert_eq!(TypePattern::parse("*").unwrap(), TypePattern::All);
        assert_eq!(
            TypePattern::parse("order.*").unwrap(),
            TypePattern::Prefix("order.".into())
        );
        assert_eq!(TypePattern::parse("a.b.*").unwrap().to_string(), "a.b.*");
        for bad in [
            "*.created",
            "order*",
            "ORDER.*",
            "order.*.x",
            "",
            ".*",
            "order",
        ] {
            assert!(
                TypePattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
