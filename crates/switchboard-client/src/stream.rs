//! A reader of the server-sent events of `GET /v1/stream`. Parses `event:` and `data:` lines
//! into [`StreamChange`]s; it must not reconnect or filter (the caller decides).

use crate::error::Error;
use crate::transparency::StreamChange;
use crate::transport::Streaming;

/// An open live stream; call [`ChangeStream::next`] until it returns `None` (server closed).
pub struct ChangeStream {
    body: Streaming,
    buffer: Vec<u8>,
}

impl ChangeStream {
    pub(crate) fn new(body: Streaming) -> ChangeStream {
        ChangeStream {
            body,
            buffer: Vec::new(),
        }
    }

    /// The next change, skipping keep-alives and notices; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<StreamChange, Error>> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end).collect();
                if let Some(data) = data_of(&block) {
                    return Some(
                        serde_json::from_str(&data).map_err(|e| Error::Decode(e.to_string())),
                    );
                }
                continue;
            }
            match self.body.chunk().await? {
                Ok(bytes) => self.buffer.extend_from_slice(&bytes),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The end (exclusive, including the blank line) of the first complete event block.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The joined `data:` lines of a block whose `event:` is a change (not `lagged`), if any.
fn data_of(block: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(block);
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(kind) = line.strip_prefix("event:")
            && kind.trim() == "lagged"
        {
            return None;
        }
        if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
        }
    }
    (!data.is_empty()).then(|| data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_data() {
        let buf = b": keep-alive\n\nevent: delivery.leased\ndata: {\"a\":1}\n\nrest";
        let first = find_blank_line(buf).unwrap();
        assert_eq!(data_of(&buf[..first]), None);
        let second = first + find_blank_line(&buf[first..]).unwrap();
        assert_eq!(data_of(&buf[first..second]).as_deref(), Some("{\"a\":1}"));
        assert_eq!(find_blank_line(&buf[second..]), None);
        assert_eq!(data_of(b"event: lagged\ndata: {\"missed\":3}\n\n"), None);
    }
}
