//! The stamp every published body carries, `lg|<publisher>|<seq>|<unix ns>|` plus padding:
//! enough for a receiver to compute send-to-deliver latency and spot losses and duplicates,
//! whatever envelope the server wraps it in (it has no quotes or backslashes, so it survives
//! being JSON-encoded inside a JSON string, as Pusher does).

use std::time::{SystemTime, UNIX_EPOCH};

use memchr::memmem;

const MARK: &[u8] = b"lg|";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A body of at least `size` bytes stamped now.
pub fn body(publisher: u32, seq: u64, size: usize) -> String {
    let mut body = format!("lg|{publisher}|{seq}|{}|", now_ns());
    while body.len() < size {
        body.push('x');
    }
    body
}

/// Every stamp in a frame (Centrifugo may batch several pushes in one frame).
pub fn find_all(frame: &str, mut each: impl FnMut(Stamp)) {
    let bytes = frame.as_bytes();
    for at in memmem::find_iter(bytes, MARK) {
        if let Some(stamp) = parse(&bytes[at + MARK.len()..]) {
            each(stamp);
        }
    }
}

fn parse(rest: &[u8]) -> Option<Stamp> {
    let mut fields = rest.splitn(4, |b| *b == b'|');
    let publisher = number(fields.next()?)?;
    let seq = number(fields.next()?)?;
    let sent_ns = number(fields.next()?)?;
    fields.next()?;
    Some(Stamp {
        publisher: u32::try_from(publisher).ok()?,
        seq,
        sent_ns,
    })
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_found_inside_any_envelope_even_escaped_twice() {
        let body = body(7, 42, 64);
        assert_eq!(body.len(), 64);
        let frames = [
            format!(r#"{{"type":"message","room":"r","body":"{body}"}}"#),
            serde_json::to_string(&serde_json::json!({"event": "client-msg", "data": format!(r#"{{"body":"{body}"}}"#)})).unwrap_or_default(),
            format!("{{\"push\":{{\"pub\":{{\"data\":{{\"body\":\"{body}\"}}}}}}}}\n{{\"push\":{{\"pub\":{{\"data\":{{\"body\":\"{body}\"}}}}}}}}"),
        ];
        let mut found = Vec::new();
        for frame in &frames {
            find_all(frame, |s| found.push((s.publisher, s.seq)));
        }
        assert_eq!(found, vec![(7, 42), (7, 42), (7, 42), (7, 42)]);
    }

    #[test]
    fn a_truncated_or_garbled_stamp_is_ignored() {
        let mut found = 0;
        find_all("lg|1|2|", |_| found += 1);
        find_all("lg|x|2|3|", |_| found += 1);
        find_all("lg|1|2|99999999999999999999999|", |_| found += 1);
        assert_eq!(found, 0);
    }
}
