//! Percent-encoding of URL path segments and of the `GET /v1/events` query string.
//! Pure string building: it must not parse URLs or know about HTTP.

use std::fmt::Write as _;

use crate::types::EventsQuery;

/// Percent-encodes `value` for use as a query value or path segment: everything except the
/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` of its UTF-8 bytes.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    push_encoded(&mut out, value, unreserved);
    out
}

/// Appends `text` to `out`, every byte that `keep` (true only for ASCII bytes) refuses as
/// `%XX`.
pub(crate) fn push_encoded(out: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
    for byte in text.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// `?name=value&...` for the pairs that have a value, or empty when none has.
pub(crate) fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        let Some(value) = value else { continue };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// The query string for `query`, including the leading `?`, or empty when no filter is set.
pub(crate) fn events_query_string(query: &EventsQuery) -> String {
    let limit = query.limit.map(|n| n.to_string());
    let pairs = [
        ("tenant", query.tenant.as_deref()),
        ("type", query.event_type.as_deref()),
        ("source", query.source.as_deref()),
        ("target", query.target.as_deref()),
        ("status", query.status.map(|s| s.as_str())),
        ("since", query.since.as_deref()),
        ("until", query.until.as_deref()),
        ("limit", limit.as_deref()),
        ("cursor", query.cursor.as_deref()),
    ];
    query_string(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::DeliveryStatus;

    #[test]
    fn unreserved_characters_pass_through() {
        assert_eq!(encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn reserved_and_special_characters_are_escaped() {
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("a+b"), "a%2Bb");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
        assert_eq!(encode("x/y?z#w%"), "x%2Fy%3Fz%23w%25");
        assert_eq!(encode("credit.*"), "credit.%2A");
    }

    #[test]
    fn non_ascii_is_utf8_escaped() {
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("日"), "%E6%97%A5");
    }

    #[test]
    fn rfc3339_offsets_keep_their_plus_sign() {
        assert_eq!(
            encode("2024-05-01T10:00:00+02:00"),
            "2024-05-01T10%3A00%3A00%2B02%3A00"
        );
    }

    #[test]
    fn empty_query_has_no_question_mark() {
        assert_eq!(events_query_string(&EventsQuery::default()), "");
    }

    #[test]
    fn full_query_in_fixed_order() {
        let query = EventsQuery {
            tenant: Some("acme corp".into()),
            event_type: Some("user.created".into()),
            source: Some("hr".into()),
            target: Some("billing".into()),
            status: Some(DeliveryStatus::InFlight),
            since: Some("2024-01-01T00:00:00Z".into()),
            until: Some("2024-02-01T00:00:00+01:00".into()),
            limit: Some(50),
            cursor: Some("abc/def=".into()),
        };
        assert_eq!(
            events_query_string(&query),
            "?tenant=acme%20corp&type=user.created&source=hr&target=billing&status=in_flight\
             &since=2024-01-01T00%3A00%3A00Z&until=2024-02-01T00%3A00%3A00%2B01%3A00&limit=50\
             &cursor=abc%2Fdef%3D"
        );
    }

    #[test]
    fn only_set_fields_are_sent() {
        let query = EventsQuery {
            status: Some(DeliveryStatus::Dead),
            limit: Some(1),
            ..EventsQuery::default()
        };
        assert_eq!(events_query_string(&query), "?status=dead&limit=1");
    }
}
