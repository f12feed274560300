//! An ack request's body in the shape clients send it, read by hand:
//! `{"acks":[{"delivery_id":"…","attempt":N},…]}`, compact, without data, ids without
//! escapes. serde read each item in ~1,000 instructions (its key matching, its `Cow`s), a
//! tenth of the HTTP workers' work in the full cycle. Any other body (whitespace, data, keys
//! in another order, escapes, a number serde would refuse…) is not read here but left to
//! serde, which also names every problem: this must never accept what serde refuses, nor read
//! anything differently (the tests hold it to serde's reading).

/// One ack item as read here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub delivery_id: &'a str,
    pub attempt: Option<u32>,
}

/// The items of a body of the common shape, or `None` for serde to read it.
pub fn read(body: &[u8]) -> Option<Vec<Item<'_>>> {
    let mut rest = body.strip_prefix(br#"{"acks":["#)?;
    let mut items = Vec::new();
    if rest == b"]}" {
        return Some(items);
    }
    loop {
        rest = rest.strip_prefix(br#"{"delivery_id":""#)?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let id = &rest[..end];
        // An escape, or a byte JSON forbids raw in a string: serde's to read or refuse.
        if id.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        let delivery_id = std::str::from_utf8(id).ok()?;
        rest = &rest[end + 1..];
        let attempt = match rest.strip_prefix(br#","attempt":"#) {
            Some(number) => {
                let digits = number.iter().take_while(|b| b.is_ascii_digit()).count();
                // No digits, or a leading zero: serde refuses those.
                if digits == 0 || (digits > 1 && number[0] == b'0') {
                    return None;
                }
                let text = std::str::from_utf8(&number[..digits]).ok()?;
                rest = &number[digits..];
                // Past u32: serde's to refuse, naming it.
                Some(text.parse::<u32>().ok()?)
            }
            None => None,
        };
        rest = rest.strip_prefix(b"}")?;
        items.push(Item {
            delivery_id,
            attempt,
        });
        match rest.split_first()? {
            (b',', after) => rest = after,
            (b']', after) => return (after == b"}").then_some(items),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;

    /// The body as serde reads it, with the handler's own types' rules.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AckIn {
        acks: Vec<ItemIn>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ItemIn {
        delivery_id: String,
        attempt: Option<u32>,
        data: Option<Value>,
    }

    /// What this module reads of `body` is what serde reads, whenever it reads it.
    fn check_read(body: &[u8]) -> Option<Vec<(String, Option<u32>)>> {
        let ours = read(body)?;
        let serde: AckIn = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("read here, refused by serde ({e}): {body:?}"));
        let theirs: Vec<(String, Option<u32>, Option<Value>)> = serde
            .acks
            .into_iter()
            .map(|i| (i.delivery_id, i.attempt, i.data))
            .collect();
        let ours: Vec<(String, Option<u32>)> = ours
            .into_iter()
            .map(|i| (i.delivery_id.to_owned(), i.attempt))
            .collect();
        let expected: Vec<(String, Option<u32>)> = theirs
            .iter()
            .map(|(id, attempt, data)| {
                assert!(data.is_none(), "read here with data: {body:?}");
                (id.clone(), *attempt)
            })
            .collect();
        assert_eq!(ours, expected, "{body:?}");
        Some(ours)
    }

    #[test]
    fn the_common_shape_is_read_and_anything_else_left_to_serde() {
        let read_here = |body: &str| check_read(body.as_bytes());
        assert_eq!(read_here(r#"{"acks":[]}"#), Some(vec![]));
        assert_eq!(
            read_here(r#"{"acks":[{"delivery_id":"dlv_1","attempt":2},{"delivery_id":"dlv_3"}]}"#),
            Some(vec![("dlv_1".into(), Some(2)), ("dlv_3".into(), None)])
        );
        assert_eq!(
            read_here(r#"{"acks":[{"delivery_id":"é","attempt":0}]}"#),
            Some(vec![("é".into(), Some(0))])
        );
        for other in [
            r#"{"acks": []}"#,
            r#"{"acks":[{"delivery_id":"a","attempt":01}]}"#,
            r#"{"acks":[{"delivery_id":"a","attempt":4294967296}]}"#,
            r#"{"acks":[{"delivery_id":"a","attempt":-1}]}"#,
            r#"{"acks":[{"delivery_id":"a","attempt":1.0}]}"#,
            r#"{"acks":[{"delivery_id":"a","attempt":null}]}"#,
            r#"{"acks":[{"delivery_id":"a\"b"}]}"#,
            r#"{"acks":[{"delivery_id":"a","data":{}}]}"#,
            r#"{"acks":[{"attempt":1,"delivery_id":"a"}]}"#,
            r#"{"acks":[{"delivery_id":"a"},]}"#,
            r#"{"acks":[{"delivery_id":"a"}]} "#,
            r#"{"acks":[{"delivery_id":"a"}],"x":1}"#,
            "{\"acks\":[{\"delivery_id\":\"a\u{1}\"}]}",
        ] {
            assert_eq!(read(other.as_bytes()), None, "{other}");
        }
        assert_eq!(read(b"{\"acks\":[{\"delivery_id\":\"\xff\"}]}"), None);
    }

    /// A body as the SDK's `Ack` writes it.
    #[derive(Serialize)]
    struct ClientBody {
        acks: Vec<ClientAck>,
    }

    #[derive(Serialize)]
    struct ClientAck {
        delivery_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    }

    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            "dlv_[0-9]{1,19}",
            // Quotes, escapes, control characters and non-ASCII: serde's to read.
            "[a-z\"\\\\é\u{1}\u{7f} ]{0,8}",
        ]
    }

    proptest! {
        /// Bodies as a client writes them (compact or pretty, with or without data): what is
        /// read here is what serde reads, and every compact body without data or escapes is
        /// read here.
        #[test]
        fn what_is_read_here_is_what_serde_reads(
            items in prop::collection::vec(
                (id(), prop::option::of(any::<u32>()), prop::option::of(0u8..3)),
                0..6,
            ),
            pretty in any::<bool>(),
        ) {
            // As the SDK writes them: a struct's fields in their order.
            let body = ClientBody {
                acks: items
                    .iter()
                    .map(|(id, attempt, data)| ClientAck {
                        delivery_id: id.clone(),
                        attempt: *attempt,
                        data: data.map(|n| json!({ "n": n })),
                    })
                    .collect(),
            };
            let text = match pretty {
                true => serde_json::to_string_pretty(&body).unwrap(),
                false => serde_json::to_string(&body).unwrap(),
            };
            let got = check_read(text.as_bytes());
            // Compact, without data, and no id that serde_json escapes (DEL it writes raw).
            let common = !pretty
                && items.iter().all(|(id, _, data)| {
                    data.is_none() && !id.contains(['"', '\\', '\u{1}'])
                });
            prop_assert_eq!(got.is_some(), common, "{}", text);
        }
    }
}
