//! Request ids and the access log line (target `afterward::access`), shared
//! by the request workers and the engine, which answers some requests itself.

use std::fmt::{self, Display};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Logs one answered request: method, target, status, duration, request id
/// and the number of background tasks dispatched. `-` stands for a method or
/// target the engine could not read.
///
/// Every field is printable ASCII by construction (tokens, a target without
/// control characters, a sane id), but the target is escaped all the same, so
/// that no request can forge a log line.
pub(crate) fn log(
    method: &dyn Display,
    target: &str,
    status: u16,
    started: Instant,
    request_id: &str,
    tasks: usize,
) {
    log::info!(
        target: "afterward::access",
        "{method} {} {status} {:.1}ms request_id={request_id} tasks={tasks}",
        Escaped(target),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Shows a string with control characters and non-ASCII escaped (`\n`, `\u{..}`).
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if c.is_ascii_graphic() || c == ' ' {
                write!(f, "{c}")?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

/// Request ids: the client's `X-Request-Id` when it is sane, else a new one.
pub(crate) struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        // Distinct enough across restarts of one service to tell runs apart in logs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        RequestIds {
            prefix: format!("{:08x}", seed as u32),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn for_request(&self, client_id: Option<&str>) -> Arc<str> {
        match client_id {
            Some(id) if is_sane_id(id) => id.into(),
            _ => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                // Written on the stack, then the one allocation of the
                // shared id (a `format!` then `into` would be two).
                let mut buf = [0u8; 64];
                let prefix = self.prefix.as_bytes();
                let digits = n.checked_ilog10().unwrap_or(0) as usize + 1;
                let len = prefix.len() + 1 + digits;
                if len > buf.len() {
                    return format!("{}-{n}", self.prefix).into();
                }
                buf[..prefix.len()].copy_from_slice(prefix);
                buf[prefix.len()] = b'-';
                let mut rest = n;
                for byte in buf[prefix.len() + 1..len].iter_mut().rev() {
                    *byte = b'0' + (rest % 10) as u8;
                    rest /= 10;
                }
                Arc::from(std::str::from_utf8(&buf[..len]).unwrap_or_default())
            }
        }
    }
}

/// 1 to 200 visible ASCII characters: safe to log and to echo in a header.
fn is_sane_id(id: &str) -> bool {
    (1..=200).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::{is_sane_id, Escaped, RequestIds};

    #[test]
    fn client_request_ids_are_kept_only_when_sane() {
        let ids = RequestIds::new();
        assert_eq!(&*ids.for_request(Some("abc-123")), "abc-123");
        let made = ids.for_request(Some("bad id\r\n"));
        assert!(is_sane_id(&made) && made.ends_with("-1"), "{made}");
        assert!(ids.for_request(None).ends_with("-2"));
        assert!(!is_sane_id(&"x".repeat(201)));
        for n in [0, 9, 10, 99, 100, 1_234_567_890_123, u64::MAX] {
            ids.next.store(n, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(&*ids.for_request(None), format!("{}-{n}", ids.prefix));
        }
    }

    #[test]
    fn escaped_text_cannot_break_a_log_line() {
        assert_eq!(Escaped("/a?b=c").to_string(), "/a?b=c");
        assert_eq!(
            Escaped("x\ny\r\u{1b}é").to_string(),
            "x\\ny\\r\\u{1b}\\u{e9}"
        );
    }
}
