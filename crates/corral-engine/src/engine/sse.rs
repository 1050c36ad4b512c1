//! Server-sent events counted as a `text/event-stream` body arrives: how many events carried
//! data, and when the first one did — time to first token for an LLM's streamed answer, which
//! a body's total latency hides. Only what the count needs is kept (the start of the current
//! line), whatever the chunks' sizes and wherever they split a line.

use std::time::Instant;

/// The events of a stream so far.
#[derive(Debug, Default)]
pub(super) struct Events {
    /// Events with data, ended by their blank line.
    pub(super) count: u64,
    /// When the first of them ended.
    pub(super) first: Option<Instant>,
    /// The current line's first bytes (enough to tell a `data` field).
    line: [u8; 5],
    /// Bytes of the current line so far.
    len: usize,
    /// The current event has a `data` field.
    data: bool,
}

impl Events {
    /// The next bytes of the stream, arrived `now`.
    pub(super) fn feed(&mut self, bytes: &[u8], now: Instant) {
        for &b in bytes {
            match b {
                b'\n' => {
                    if self.len == 0 {
                        // A blank line dispatches the event (an event without data is none).
                        if self.data {
                            self.count += 1;
                            self.first.get_or_insert(now);
                        }
                        self.data = false;
                    } else {
                        let seen = &self.line[..self.len.min(5)];
                        // `data` alone, `data:`, or `data: ...` (RFC: a field named "data").
                        if seen == b"data:" || (self.len == 4 && seen == b"data") {
                            self.data = true;
                        }
                    }
                    self.len = 0;
                }
                b'\r' => {}
                _ => {
                    if self.len < 5 {
                        self.line[self.len] = b;
                    }
                    self.len += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_with_data_are_counted_however_the_chunks_split_them() {
        let stream = b": comment\n\ndata: {\"t\":\"he\"}\n\nevent: ping\n\ndata: a\r\ndata: b\r\n\r\ndata\n\nda";
        let now = Instant::now();
        let whole = {
            let mut e = Events::default();
            e.feed(stream, now);
            e
        };
        assert_eq!(
            whole.count, 3,
            "two data events and a bare `data`; no comment, no ping"
        );
        for split in 1..stream.len() {
            let mut e = Events::default();
            e.feed(&stream[..split], now);
            e.feed(&stream[split..], now);
            assert_eq!(e.count, 3, "split at {split}");
        }
        let mut e = Events::default();
        e.feed(b"data: x\n", now);
        assert!(e.first.is_none(), "not dispatched before its blank line");
        e.feed(b"\n", now);
        assert_eq!(e.first, Some(now));
    }
}
