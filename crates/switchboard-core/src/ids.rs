//! Validated identifiers: apps, tenants, event types, event and delivery ids.
//! A value of these types is always well-formed; parsing is the only way in.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Why a value was refused, phrased as what to fix. The caller adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Shared text: a clone is a reference count, not a copy (ids are cloned into every
        /// delivery, change and reply that names them).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An application: `crm`, `hr`, `orders`. Lowercase letters, digits, `-` and `_`,
    /// starting with a letter, at most 64 characters.
    AppId
);
string_id!(
    /// A customer of the suite. Any printable text without whitespace, 1 to 128 characters.
    TenantId
);
string_id!(
    /// `segment.segment[.segment...]`, lowercase letters, digits, `_` and `-`.
    EventType
);
string_id!(
    /// The id switchboard gives an event (`evt_` + a time-ordered base32 value).
    EventId
);
/// The id of one (event, target app) delivery; its format belongs to the store.
///
/// Kept inline up to [`INLINE_ID_LEN`] bytes (every `dlv_` and number the stores make), in
/// a shared text beyond: an id is made for every delivery leased, acked and described, and
/// the allocation and free of each were a tenth of the HTTP workers' instructions in the full
/// cycle.
#[derive(Clone)]
pub struct DeliveryId(DeliveryIdText);

/// Up to this many bytes, a delivery id is kept inline.
pub const INLINE_ID_LEN: usize = 24;

/// Inline exactly when it fits, so two equal ids always have the same representation.
#[derive(Clone)]
enum DeliveryIdText {
    Inline { len: u8, bytes: [u8; INLINE_ID_LEN] },
    Shared(Arc<str>),
}

impl DeliveryId {
    /// An id of text already checked.
    fn of_text(s: &str) -> DeliveryId {
        match s.len() <= INLINE_ID_LEN {
            true => {
                let mut bytes = [0u8; INLINE_ID_LEN];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                DeliveryId(DeliveryIdText::Inline {
                    len: s.len() as u8,
                    bytes,
                })
            }
            false => DeliveryId(DeliveryIdText::Shared(s.into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            DeliveryIdText::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize])
                .expect("an inline id is the text it was made of"),
            DeliveryIdText::Shared(text) => text,
        }
    }
}

impl PartialEq for DeliveryId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for DeliveryId {}

impl std::hash::Hash for DeliveryId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for DeliveryId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DeliveryId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeliveryId").field(&self.as_str()).finish()
    }
}

impl Serialize for DeliveryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for DeliveryId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

pub const MAX_APP_ID_LEN: usize = 64;
pub const MAX_TENANT_LEN: usize = 128;
pub const MAX_TYPE_LEN: usize = 128;
pub const MAX_ID_LEN: usize = 128;

impl AppId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let mut chars = s.chars();
        let Some(first) = chars.next() else {
            return Err(invalid("must not be empty: use a short app id like `crm`"));
        };
        if s.len() > MAX_APP_ID_LEN {
            return Err(invalid(format!(
                "is {} characters long; the limit is {MAX_APP_ID_LEN}",
                s.len()
            )));
        }
        if !first.is_ascii_lowercase() {
            return Err(invalid(format!(
                "`{s}` must start with a lowercase letter (a-z)"
            )));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            return Err(invalid(format!(
                "`{s}` may only contain lowercase letters, digits, `-` and `_`"
            )));
        }
        Ok(AppId(s.into()))
    }
}

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() {
            return Err(invalid(
                "must not be empty: every event belongs to one tenant",
            ));
        }
        if s.len() > MAX_TENANT_LEN {
            return Err(invalid(format!(
                "is {} bytes long; the limit is {MAX_TENANT_LEN}",
                s.len()
            )));
        }
        if has_space_or_control(s) {
            return Err(invalid("must not contain whitespace or control characters"));
        }
        Ok(TenantId(s.into()))
    }
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

impl EventType {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        const FIX: &str = "use lowercase `segment.segment`, like `user.created`";
        if s.len() > MAX_TYPE_LEN {
            return Err(invalid(format!(
                "is {} bytes long; the limit is {MAX_TYPE_LEN}",
                s.len()
            )));
        }
        if !s.contains('.') {
            return Err(invalid(format!("`{s}` has no `.`: {FIX}")));
        }
        for segment in s.split('.') {
            if segment.is_empty() {
                return Err(invalid(format!("`{s}` has an empty segment: {FIX}")));
            }
            if !segment.bytes().all(is_segment_byte) {
                return Err(invalid(format!(
                    "`{s}` may only contain a-z, 0-9, `_` and `-` between dots: {FIX}"
                )));
            }
        }
        Ok(EventType(s.into()))
    }
}

/// Whether `s` holds whitespace or a control character; ASCII text (every id switchboard makes)
/// is checked byte by byte.
fn has_space_or_control(s: &str) -> bool {
    match s.is_ascii() {
        true => s.bytes().any(|b| b <= b' ' || b == 0x7f),
        false => s.chars().any(|c| c.is_whitespace() || c.is_control()),
    }
}

fn check_opaque_id(s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "is {} bytes long; the limit is {MAX_ID_LEN}",
            s.len()
        )));
    }
    if has_space_or_control(s) {
        return Err(invalid("must not contain whitespace or control characters"));
    }
    Ok(())
}

impl EventId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        check_opaque_id(s).map(|()| EventId(s.into()))
    }

    /// A new, time-ordered id: `evt_` + 26 Crockford base32 characters encoding 48 bits of
    /// milliseconds and 80 bits of entropy (the ULID layout), so ids sort by creation time.
    pub fn generate(unix_ms: i64, entropy: [u8; 10]) -> Self {
        let mut value: u128 = (unix_ms.max(0) as u128 & 0xFFFF_FFFF_FFFF) << 80;
        for (i, b) in entropy.iter().enumerate() {
            value |= (*b as u128) << (8 * (9 - i));
        }
        Self::of_value(value)
    }

    /// The id of a store's event number `seq` (48 bits): the same layout as
    /// [`generate`](Self::generate), its 80 bits after the milliseconds holding `seq` and 32
    /// bits of entropy, so a store finds the event from its id alone (see
    /// [`sequence`](Self::sequence)) and ids of one store sort by (millisecond, seq).
    pub fn sequenced(unix_ms: i64, seq: u64, entropy: u32) -> Self {
        let value: u128 = (unix_ms.max(0) as u128 & 0xFFFF_FFFF_FFFF) << 80
            | (seq as u128 & 0xFFFF_FFFF_FFFF) << 32
            | entropy as u128;
        Self::of_value(value)
    }

    /// The event number a [`sequenced`](Self::sequenced) id holds; for any other id of the
    /// same form, some number that a store must check against the id it has for it.
    pub fn sequence(&self) -> Option<u64> {
        let digits = self.0.strip_prefix("evt_")?;
        let value = base32_128(digits)?;
        Some((value >> 32 & 0xFFFF_FFFF_FFFF) as u64)
    }

    fn of_value(value: u128) -> Self {
        let mut id = [0u8; 4 + 26];
        id[..4].copy_from_slice(b"evt_");
        put_base32_128(&mut id[4..], value);
        EventId(ascii(&id).into())
    }
}

impl DeliveryId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        check_opaque_id(s).map(|()| DeliveryId::of_text(s))
    }

    /// The id of a store's delivery number `n`: `dlv_` and the number (valid by construction,
    /// so not checked: both stores make one per delivery they hand out, several per event,
    /// so without the formatting machinery, which was 6% of the HTTP workers' instructions
    /// in the full cycle).
    pub fn numbered(n: u64) -> Self {
        let mut digits = [0u8; 20];
        let digits = decimal(n, &mut digits);
        // At most 4 + 20 bytes: always inline, written in place.
        let mut bytes = [0u8; INLINE_ID_LEN];
        let len = 4 + digits.len();
        bytes[..4].copy_from_slice(b"dlv_");
        bytes[4..len].copy_from_slice(digits);
        DeliveryId(DeliveryIdText::Inline {
            len: len as u8,
            bytes,
        })
    }

    /// The number behind an id [`numbered`](Self::numbered) made; `None` for any other id.
    pub fn number(&self) -> Option<u64> {
        self.as_str()
            .strip_prefix("dlv_")
            .and_then(|n| n.parse().ok())
    }
}

/// `n` in decimal digits, written into the end of `buf` without the formatting machinery
/// (ids and replies write several numbers per delivery).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    // Two digits per division, from a table of the hundred pairs.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut start = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    match n >= 10 {
        true => {
            let pair = n as usize * 2;
            start -= 2;
            buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        false => {
            start -= 1;
            buf[start] = b'0' + n as u8;
        }
    }
    &buf[start..]
}

/// Generic opaque ids given by publishers: idempotency keys, entity, correlation and
/// causation ids.
pub fn parse_opaque(s: &str) -> Result<String, InvalidValue> {
    check_opaque_id(s).map(|()| s.to_owned())
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Writes `value` as 26 Crockford base32 characters, most significant first.
fn put_base32_128(out: &mut [u8], mut value: u128) {
    for slot in out[..26].iter_mut().rev() {
        *slot = CROCKFORD[(value & 31) as usize];
        value >>= 5;
    }
}

/// The value of 26 Crockford base32 digits as [`put_base32_128`] writes them (upper case);
/// `None` for anything else, or a value past 128 bits.
fn base32_128(digits: &str) -> Option<u128> {
    if digits.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, d) in digits.bytes().enumerate() {
        let v = CROCKFORD.iter().position(|&c| c == d)? as u128;
        // The first digit carries only the top 3 bits (26 digits are 130 bits).
        if i == 0 && v > 7 {
            return None;
        }
        value = value << 5 | v;
    }
    Some(value)
}

/// Text made here of ASCII bytes only.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("ids are made of ASCII")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_sequenced_id_gives_back_its_number_and_sorts_by_time_then_number(
            ms in 0i64..(1 << 48), seq in 0u64..(1 << 48), entropy in any::<u32>(),
            later in 1u64..1000,
        ) {
            let id = EventId::sequenced(ms, seq, entropy);
            prop_assert_eq!(id.sequence(), Some(seq));
            prop_assert!(EventId::parse(id.as_str()).is_ok());
            let next = EventId::sequenced(ms, (seq + later) & 0xFFFF_FFFF_FFFF, entropy);
            if seq + later < 1 << 48 {
                prop_assert!(next.as_str() > id.as_str());
            }
            let generated = EventId::generate(ms, entropy.to_be_bytes().repeat(3)[..10].try_into().unwrap());
            prop_assert_eq!(&generated.as_str()[..14], &id.as_str()[..14], "the same milliseconds");
        }

        #[test]
        fn numbers_are_written_as_format_writes_them(n in prop_oneof![0u64..1000, any::<u64>()]) {
            let mut buf = [0; 20];
            let expected = n.to_string();
            prop_assert_eq!(decimal(n, &mut buf), expected.as_bytes());
            let id = DeliveryId::numbered(n);
            prop_assert_eq!(id.as_str(), format!("dlv_{n}"));
            prop_assert_eq!(id.number(), Some(n));
        }
    }

    #[test]
    fn app_ids() {
        assert!(AppId::parse("crm").is_ok());
        assert!(AppId::parse("order-service_2").is_ok());
        for bad in ["", "CRM", "1crm", "crm app", "crm.app", &"a".repeat(65)] {
            assert!(AppId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn event_types() {
        for good in [
            "user.created",
            "order.item.added",
            "a.b",
            "credit_v2.allocated",
        ] {
            assert!(EventType::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "user",
            "User.Created",
            "user..created",
            ".user",
            "user.",
            "user created.x",
            "usér.created",
            "",
        ] {
            let err = EventType::parse(bad).unwrap_err();
            assert!(err.0.contains("segment"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn only_ids_of_the_generated_form_have_a_sequence() {
        let id = EventId::sequenced(1_765_000_000_000, 42, 7);
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(id.sequence(), Some(42));
        for other in [
            "evt_",
            "evt_0123",
            "dlv_01KC0000000000000000000000",
            "evt_81KC0000000000000000000000", // past 128 bits
            "evt_01kc0000000000000000000000", // lower case: not ours
            "evt_01KC00000000000000000000IL", // not Crockford
            "order-42",
        ] {
            assert_eq!(EventId::parse(other).unwrap().sequence(), None, "{other}");
        }
    }

    #[test]
    fn tenants() {
        assert!(TenantId::parse("acme-42").is_ok());
        assert!(TenantId::parse("b0a6e370-c1e5-43d1-94e0-55ed792274c4").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a b").is_err());
    }

    #[test]
    fn ids_refuse_whitespace_and_control_characters_ascii_or_not() {
        for bad in [
            "a b", "a\tb", "a\nb", "a\x1fb", "a\x7fb", "a\u{a0}b", "a\u{85}b", "\u{3000}",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["acme", "été-2026", "a~b!c", "東京"] {
            assert!(TenantId::parse(good).is_ok(), "{good:?}");
            assert!(EventId::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn numbered_delivery_ids_give_their_number_back() {
        let id = DeliveryId::numbered(42);
        assert_eq!(id.as_str(), "dlv_42");
        assert_eq!(id.number(), Some(42));
        for n in [0, 7, 10, 1_000_000, u64::MAX] {
            let id = DeliveryId::numbered(n);
            assert_eq!(id.as_str(), format!("dlv_{n}"));
            assert_eq!(id.number(), Some(n));
        }
        for other in ["dlv_x", "dlv_", "dlv_-1", "evt_42", "42"] {
            assert_eq!(DeliveryId::parse(other).unwrap().number(), None, "{other}");
        }
    }

    proptest! {
        /// Inline or shared, a delivery id is its text: the same text back, and equal,
        /// ordered and hashed as the text is (ids either side of the inline length).
        #[test]
        fn delivery_ids_behave_as_their_text(
            a in "[!-~]{1,40}",
            b in "[!-~]{1,40}",
            cut in 0usize..40,
        ) {
            use std::hash::{BuildHasher, RandomState};
            let hasher = RandomState::new();
            // A prefix of `a` gives pairs that share text across the inline length.
            let b = match cut % 2 {
                0 => b,
                _ => a[..cut.min(a.len()).max(1)].to_owned(),
            };
            let (x, y) = (DeliveryId::parse(&a).unwrap(), DeliveryId::parse(&b).unwrap());
            prop_assert_eq!(x.as_str(), a.as_str());
            prop_assert_eq!(x.to_string(), a.clone());
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(hasher.hash_one(&x), hasher.hash_one(a.as_str()));
            prop_assert_eq!(&x.clone(), &x);
        }
    }

    #[test]
    fn event_ids_sort_by_time() {
        let a = EventId::generate(1_700_000_000_000, [255; 10]);
        let b = EventId::generate(1_700_000_000_001, [0; 10]);
        assert!(a < b);
        assert_eq!(a.as_str().len(), 4 + 26);
    }
}
