//! Cheap reads of top-level fields of onlychat's server frames, without parsing the JSON: a
//! resuming receiver looks at every frame (thousands a second per worker) for its type, room,
//! position and `client_id`. Safe because inside a JSON string every `"` is escaped, so the
//! pattern `"key":` can only be a key, and onlychat's frames are flat with unique keys.
//! Only for values without escapes (types, rooms, codes, client ids, epochs, numbers).

use memchr::memmem;

fn value_after<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let at = memmem::find(frame.as_bytes(), pattern.as_bytes())?;
    Some(&frame[at + pattern.len()..])
}

/// A string field's value (`None` if absent, not a string, or holding an escape).
pub fn str_field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let rest = value_after(frame, key)?.strip_prefix('"')?;
    let value = &rest[..rest.find('"')?];
    (!value.contains('\\')).then_some(value)
}

/// An unsigned integer field's value.
pub fn u64_field(frame: &str, key: &str) -> Option<u64> {
    let rest = value_after(frame, key)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A boolean field's value.
pub fn bool_field(frame: &str, key: &str) -> Option<bool> {
    let rest = value_after(frame, key)?;
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// The frame's `type`.
pub fn frame_type(frame: &str) -> Option<&str> {
    str_field(frame, "type")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The body comes first here, so a fake key inside it would be found first if it could match.
    const MESSAGE: &str = r#"{"type":"message","body":"say \"position\":7 \"room\":\"x\"","room":"lg1-0","id":"0197","position":42,"epoch":"t-p12","from":"u","from_name":"n","ts":"2026-01-01T00:00:00Z","client_id":"3-9"}"#;

    #[test]
    fn fields_of_a_message_frame_are_read_and_a_body_cannot_fake_them() {
        assert_eq!(frame_type(MESSAGE), Some("message"));
        assert_eq!(str_field(MESSAGE, "room"), Some("lg1-0"));
        assert_eq!(u64_field(MESSAGE, "position"), Some(42));
        assert_eq!(str_field(MESSAGE, "client_id"), Some("3-9"));
        assert_eq!(str_field(MESSAGE, "ref"), None);
    }

    #[test]
    fn joined_and_error_frames_give_their_fields() {
        let joined = r#"{"type":"joined","ref":"j","room":"r","epoch":"t-p3","position":0,"recovered":false,"online":[]}"#;
        assert_eq!(u64_field(joined, "position"), Some(0));
        assert_eq!(bool_field(joined, "recovered"), Some(false));
        assert_eq!(str_field(joined, "epoch"), Some("t-p3"));
        let error = r#"{"type":"error","code":"unavailable","message":"try \"again\"","room":"r","client_id":"1-2"}"#;
        assert_eq!(str_field(error, "code"), Some("unavailable"));
        assert_eq!(str_field(error, "client_id"), Some("1-2"));
        assert_eq!(u64_field(error, "code"), None);
    }
}
