//! Scans of JSON text eight bytes at a time (in a `u64`, no SIMD instructions or `unsafe`):
//! counting the brackets of every published event's data and checking every string of the
//! hot replies for bytes to escape. Byte by byte they were 9% of the HTTP workers'
//! instructions in the full cycle (callgrind); these take one to two instructions a byte.
//! Must not know what the bytes mean beyond that.

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is zero, and no other bit: exact for every byte
/// (`(b & 0x7F) + 0x7F` carries into the high bit unless `b & 0x7F` is zero and never
/// beyond its byte).
fn zero_bytes(word: u64) -> u64 {
    !(((word & LOW7) + LOW7) | word) & HIGH
}

/// The high bit of each byte of `word` that is below `n` (`n` at most 0x80), and no other.
fn bytes_below(word: u64, n: u8) -> u64 {
    // `(b & 0x7F) + (0x80 - n)` sets the high bit exactly when `b & 0x7F >= n`.
    let at_least = ((word & LOW7) + ONES * u64::from(0x80 - n)) | word;
    !at_least & HIGH
}

/// Calls `marks` on each eight bytes of `bytes` as a little-endian word, the last zero-padded
/// with `pad` (a byte `marks` never marks), and adds up the marked bytes.
fn count_marked(bytes: &[u8], pad: u8, marks: impl Fn(u64) -> u64) -> usize {
    let mut words = bytes.chunks_exact(8);
    let mut n = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        n += marks(word).count_ones() as usize;
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [pad; 8];
        last[..rest.len()].copy_from_slice(rest);
        n += marks(u64::from_le_bytes(last)).count_ones() as usize;
    }
    n
}

/// How many `{` and `[` `json` holds.
pub fn opening_brackets(json: &[u8]) -> usize {
    // `{` is 0x7B and `[` 0x5B: they differ only in 0x20.
    count_marked(json, b' ', |w| {
        zero_bytes((w | (ONES * 0x20)) ^ (ONES * u64::from(b'{')))
    })
}

/// Whether JSON needs any byte of `s` escaped: a control character, `"` or `\`.
pub fn needs_escaping(s: &[u8]) -> bool {
    count_marked(s, b' ', |w| {
        bytes_below(w, 0x20)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
    }) > 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Bytes rich in the ones the scans look for and their neighbours.
    fn json_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'{'),
                Just(b'['),
                Just(b'"'),
                Just(b'\\'),
                Just(0x1F),
                Just(0x20),
                Just(0x7B ^ 0x80),
                Just(0xDB),
                any::<u8>(),
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn opening_brackets_counts_every_brace_and_bracket(bytes in json_bytes()) {
            let naive = bytes.iter().filter(|b| matches!(b, b'{' | b'[')).count();
            prop_assert_eq!(opening_brackets(&bytes), naive);
        }

        #[test]
        fn escaping_is_needed_exactly_for_controls_quotes_and_backslashes(bytes in json_bytes()) {
            let naive = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escaping(&bytes), naive);
        }
    }

    #[test]
    fn every_byte_value_is_judged_alone() {
        for b in 0..=255u8 {
            for at in 0..9 {
                let mut bytes = vec![b'a'; 9];
                bytes[at] = b;
                let brackets = usize::from(matches!(b, b'{' | b'['));
                assert_eq!(opening_brackets(&bytes), brackets, "{b:#x} at {at}");
                let escape = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escaping(&bytes), escape, "{b:#x} at {at}");
            }
        }
    }
}
