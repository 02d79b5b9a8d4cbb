//! Input rules of PROTOCOL.md: room names, message bodies, client ids, usernames, passwords.

/// Longest room name, in bytes (names are ASCII).
pub const MAX_ROOM_LEN: usize = 64;
/// Longest message body, in Unicode scalar values.
pub const MAX_BODY_CHARS: usize = 4096;
/// Longest `client_id` and `ref`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

/// A room name is 1-64 of `a-z0-9_.-`.
pub fn room_name_ok(room: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&room.len()) && room.chars().all(is_name_char)
}

/// A body is 1-4096 Unicode scalar values and not only whitespace.
pub fn body_ok(body: &str) -> bool {
    let n = body.chars().count();
    (1..=MAX_BODY_CHARS).contains(&n) && !body.trim().is_empty()
}

/// A `client_id` (or `ref`) is 1-64 characters.
pub fn client_id_ok(id: &str) -> bool {
    (1..=MAX_CLIENT_ID_CHARS).contains(&id.chars().count())
}

/// A username is 3-32 of `a-z0-9_.-`.
pub fn username_ok(name: &str) -> bool {
    (3..=32).contains(&name.len()) && name.chars().all(is_name_char)
}

/// A password is 8-256 characters.
pub fn password_ok(password: &str) -> bool {
    (8..=256).contains(&password.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_contract() {
        assert!(room_name_ok("lobby"));
        assert!(room_name_ok("a.b-c_9"));
        assert!(room_name_ok(&"r".repeat(64)));
        assert!(!room_name_ok(""));
        assert!(!room_name_ok(&"r".repeat(65)));
        assert!(!room_name_ok("Lobby"));
        assert!(!room_name_ok("lob by"));
        assert!(!room_name_ok("lobby/1"));
    }

    #[test]
    fn bodies_are_counted_in_scalar_values() {
        assert!(body_ok("hi"));
        assert!(body_ok(&"é".repeat(4096)));
        assert!(!body_ok(&"é".repeat(4097)));
        assert!(!body_ok(""));
        assert!(!body_ok("   "));
    }

    #[test]
    fn usernames_and_passwords_have_bounds() {
        assert!(username_ok("alice"));
        assert!(!username_ok("al"));
        assert!(!username_ok("Alice"));
        assert!(password_ok("12345678"));
        assert!(!password_ok("1234567"));
        assert!(!password_ok(&"x".repeat(257)));
    }
}
