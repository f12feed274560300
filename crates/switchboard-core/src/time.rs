//! Timestamps (milliseconds since the Unix epoch, UTC), RFC 3339 formatting and parsing, and
//! human durations (`250ms`, `5s`, `2m`, `1h`). No clock here: callers pass `now`.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::ids::InvalidValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms.min(i64::MAX as u64) as i64))
    }

    /// Milliseconds from `earlier` to `self`, never negative.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0).max(0) as u64
    }

    /// Accepts RFC 3339 (`2026-11-22T10:31:00Z`, `2026-11-22T10:31:00.123+01:00`) or an
    /// integer count of milliseconds since the epoch.
    pub fn parse(s: &str) -> Result<Timestamp, InvalidValue> {
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Timestamp(ms));
        }
        parse_rfc3339(s).ok_or_else(|| {
            InvalidValue(format!(
                "`{s}` is not a time: use RFC 3339 like `2026-11-22T10:31:00Z` or milliseconds since the epoch"
            ))
        })
    }
}

/// A timestamp's calendar parts in UTC: year, month, day, hour, minute, second, millisecond.
fn parts(t: Timestamp) -> (i64, u32, u32, i64, i64, i64, i64) {
    let ms = t.0.rem_euclid(1000);
    let secs = t.0.div_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    (y, m, d, sod / 3600, (sod / 60) % 60, sod % 60, ms)
}

impl Timestamp {
    /// The RFC 3339 form written into `buf` without the formatting machinery (responses
    /// carry several timestamps per delivery); `None` for a year outside 0–9999, which
    /// `Display` writes the slow way.
    pub fn rfc3339(self, buf: &mut [u8; 24]) -> Option<&str> {
        let (y, m, d, h, mi, s, ms) = parts(self);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let digits = |buf: &mut [u8; 24], at: usize, width: usize, mut v: i64| {
            for slot in buf[at..at + width].iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        *buf = *b"0000-00-00T00:00:00.000Z";
        digits(buf, 0, 4, y);
        digits(buf, 5, 2, i64::from(m));
        digits(buf, 8, 2, i64::from(d));
        digits(buf, 11, 2, h);
        digits(buf, 14, 2, mi);
        digits(buf, 17, 2, s);
        digits(buf, 20, 3, ms);
        std::str::from_utf8(buf).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.rfc3339(&mut [0; 24]) {
            return f.write_str(text);
        }
        let (y, m, d, h, mi, s, ms) = parts(*self);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339(&mut [0; 24]) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(self),
        }
    }
}

// Howard Hinnant's days <-> civil date algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &s[start..end.min(start + 3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
        i = end;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let total = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(Timestamp(secs * 1000 + ms))
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, InvalidValue> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let bad = || {
        InvalidValue(format!(
            "`{s}` is not a duration: use a number with a unit, like `250ms`, `5s`, `2m` or `1h`"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// The inverse of [`parse_duration_ms`], picking the largest exact unit.
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, factor) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= factor && ms.is_multiple_of(factor) {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_343_460_123).to_string(),
            "2026-11-22T10:31:00.123Z"
        );
    }

    #[test]
    fn parses_rfc3339_and_millis() {
        let t = Timestamp(1_795_343_460_000);
        assert_eq!(Timestamp::parse("2026-11-22T10:31:00Z").unwrap(), t);
        assert_eq!(Timestamp::parse("2026-11-22T11:31:00+01:00").unwrap(), t);
        assert_eq!(
            Timestamp::parse("2026-11-22T10:31:00.5Z").unwrap().0,
            t.0 + 500
        );
        assert_eq!(Timestamp::parse("1795343460000").unwrap(), t);
        for bad in [
            "yesterday",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T10:31:00",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("2m").unwrap(), 120_000);
        assert!(parse_duration_ms("2 weeks").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert_eq!(format_duration_ms(600_000), "10m");
        assert_eq!(format_duration_ms(1500), "1500ms");
    }

    /// The formatting machinery's form, which the fast path must equal.
    fn slow(t: Timestamp) -> String {
        let (y, m, d, h, mi, s, ms) = parts(t);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }

    #[test]
    fn years_outside_four_digits_are_written_in_full() {
        for ms in [-62_198_755_200_000, -1, 253_402_300_800_000] {
            assert_eq!(Timestamp(ms).to_string(), slow(Timestamp(ms)));
        }
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert!(
            Timestamp(253_402_300_800_000)
                .to_string()
                .starts_with("10000-01-01T")
        );
    }

    proptest! {
        #[test]
        fn the_fast_form_equals_the_formatted_one(ms in prop_oneof![
            -62_167_219_200_000i64..253_402_300_800_000,
            any::<i64>().prop_map(|v| v / 1000),
        ]) {
            let t = Timestamp(ms);
            prop_assert_eq!(t.to_string(), slow(t));
        }

        #[test]
        fn rfc3339_round_trips(ms in -62_000_000_000_000i64..253_000_000_000_000i64) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }
}
