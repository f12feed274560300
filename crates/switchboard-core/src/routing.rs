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

/// The routing rule. Named targets get the event, exactly and once each (even the source,
/// when it names itself). Without names, every app with a matching subscription gets it,
/// except the source. The result is sorted and free of duplicates.
pub fn route<'a>(
    source: &AppId,
    event_type: &EventType,
    named: Option<&[AppId]>,
    apps: impl IntoIterator<Item = (&'a AppId, &'a [TypePattern])>,
) -> Vec<AppId> {
    let mut targets: Vec<AppId> = match named {
        Some(named) => named.to_vec(),
        None => apps
            .into_iter()
            .filter(|(app, _)| *app != source)
            .filter(|(_, patterns)| patterns.iter().any(|p| p.matches(event_type)))
            .map(|(app, _)| app.clone())
            .collect(),
    };
    targets.sort();
    targets.dedup();
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppId {
        AppId::parse(s).unwrap()
    }

    fn patterns(list: &[&str]) -> Vec<TypePattern> {
        list.iter()
            .map(|p| TypePattern::parse(p).unwrap())
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
        let apps: Vec<(AppId, Vec<TypePattern>)> =
            subs.iter().map(|(a, p)| (app(a), patterns(p))).collect();
        let named: Option<Vec<AppId>> = named.map(|n| n.iter().map(|a| app(a)).collect());
        let got = route(
            &app(source),
            &EventType::parse(event_type).unwrap(),
            named.as_deref(),
            apps.iter().map(|(a, p)| (a, p.as_slice())),
        );
        let expect: Vec<AppId> = expect.iter().map(|a| app(a)).collect();
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
