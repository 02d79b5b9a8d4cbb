//! Enforces the frame and message size limit on the raw bytes of a socket, *before* the
//! WebSocket codec buffers them. actix-http's codec checks a frame's length only once the whole
//! frame has arrived, so a header announcing 10 MiB would be buffered to the end; this guard
//! reads each frame header as it passes and fails the stream the moment a frame, or a
//! fragmented message's running total, crosses the limit. The connection then closes with 1009
//! and the rest is never read.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

/// Watches frame headers in a client byte stream.
#[derive(Debug)]
pub(crate) struct FrameGuard<S> {
    inner: S,
    max: u64,
    /// The bytes of a frame header read so far (at most 14).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// Payload bytes of the current (possibly fragmented) data message so far.
    message: u64,
    tripped: bool,
}

/// `(header length, fin, opcode, payload length)` once `header` holds a whole frame header.
fn parse_header(header: &[u8]) -> Option<(usize, bool, u8, u64)> {
    let (&b0, &b1) = (header.first()?, header.get(1)?);
    let (ext, short) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let total = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
    if header.len() < total {
        return None;
    }
    let len = short.unwrap_or_else(|| {
        header[2..2 + ext]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    Some((total, b0 & 0x80 != 0, b0 & 0x0f, len))
}

impl<S> FrameGuard<S> {
    pub(crate) fn new(inner: S, max: usize) -> Self {
        Self {
            inner,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            header: Vec::with_capacity(14),
            remaining: 0,
            message: 0,
            tripped: false,
        }
    }

    /// Follows `chunk` through frame boundaries; false once the limit is crossed.
    fn admit(&mut self, chunk: &[u8]) -> bool {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((chunk.len() - at) as u64);
                self.remaining -= take;
                at += take as usize;
                continue;
            }
            self.header.push(chunk[at]);
            at += 1;
            let Some((_, fin, opcode, len)) = parse_header(&self.header) else {
                continue;
            };
            self.header.clear();
            // Data frames (continuation, text, binary) add up; control frames stand alone and
            // the codec limits them to 125 bytes itself.
            if opcode <= 0x2 {
                if opcode != 0x0 {
                    self.message = 0;
                }
                self.message = self.message.saturating_add(len);
                if len > self.max || self.message > self.max {
                    return false;
                }
                if fin {
                    self.message = 0;
                }
            }
            self.remaining = len;
        }
        true
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                if self.admit(&bytes) {
                    Poll::Ready(Some(Ok(bytes)))
                } else {
                    self.tripped = true;
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            }
            other => other,
        }
    }
}

/// Whether a stream error is this guard's overflow.
pub(crate) fn is_overflow(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<PayloadError>())
        .is_some_and(|p| matches!(p, PayloadError::Overflow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=65_535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    fn guard(max: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(futures_util::stream::empty(), max)
    }

    #[test]
    fn a_header_over_the_limit_trips_before_any_payload() {
        let mut g = guard(100);
        assert!(!g.admit(&header(true, 0x1, 10 * 1024 * 1024)));
    }

    #[test]
    fn frames_within_the_limit_pass_even_split_across_chunks() {
        let mut g = guard(100);
        let mut bytes = header(true, 0x1, 100);
        bytes.extend(vec![b'a'; 100]);
        bytes.extend(header(true, 0x9, 4));
        bytes.extend(b"ping");
        bytes.extend(header(true, 0x1, 50));
        bytes.extend(vec![b'b'; 50]);
        for chunk in bytes.chunks(7) {
            assert!(g.admit(chunk));
        }
    }

    #[test]
    fn a_fragmented_message_trips_when_its_total_crosses_the_limit() {
        let mut g = guard(100);
        let mut bytes = header(false, 0x1, 60);
        bytes.extend(vec![b'a'; 60]);
        // A ping between fragments does not count towards the message.
        bytes.extend(header(true, 0x9, 0));
        assert!(g.admit(&bytes));
        assert!(!g.admit(&header(false, 0x0, 41)));
    }

    #[test]
    fn a_finished_message_resets_the_running_total() {
        let mut g = guard(100);
        for _ in 0..5 {
            let mut bytes = header(false, 0x1, 50);
            bytes.extend(vec![b'a'; 50]);
            bytes.extend(header(true, 0x0, 50));
            bytes.extend(vec![b'a'; 50]);
            assert!(g.admit(&bytes));
        }
    }
}
