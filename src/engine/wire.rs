//! Writing responses: status line, framing headers, and the checks that keep
//! a handler's header from corrupting the stream.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::headers::Headers;

/// How the response ends the connection, as its `Connection` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// HTTP/1.1 default: no header.
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive: `Connection: keep-alive`.
    KeepAliveHttp10,
    /// `Connection: close`.
    Close,
}

/// A header the handler set that cannot be sent safely.
#[derive(Debug)]
pub(crate) struct InvalidHeader(pub(crate) String);

/// Checks every header a handler set: names must be tokens and values free of
/// control characters (CR and LF above all), or the stream could be split.
pub(crate) fn check_headers(headers: &Headers) -> Result<(), InvalidHeader> {
    for (name, value) in headers.iter() {
        let name_ok = !name.is_empty() && name.bytes().all(is_token_byte);
        let value_ok = value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !name_ok || !value_ok {
            return Err(InvalidHeader(format!("{name:?}: {value:?}")));
        }
    }
    Ok(())
}

/// The headers that frame a response (`Content-Length`, `Transfer-Encoding`,
/// `Connection`): always the engine's, never a handler's.
pub(crate) fn is_framing_header(name: &str) -> bool {
    ["Content-Length", "Transfer-Encoding", "Connection"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a response with `status` carries no body whatever it holds.
fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Serializes a response into `buf`, ready to write in one piece. `headers`
/// must have passed [`check_headers`]. The framing headers are ours: any
/// `Content-Length`, `Transfer-Encoding` or `Connection` the handler set is
/// replaced. A response to `HEAD` (`send_body` false) keeps its
/// `Content-Length` but not its body.
pub(crate) fn serialize(
    buf: &mut Vec<u8>,
    status: u16,
    headers: &Headers,
    body: &[u8],
    send_body: bool,
    persistence: Persistence,
) {
    let send_body = send_body && !bodyless(status);
    buf.reserve(160 + headers.len() * 32 + if send_body { body.len() } else { 0 });
    let _ = write!(buf, "HTTP/1.1 {status} {}\r\n", reason(status));
    if !headers.contains("Date") {
        DATE.with(|date| buf.extend_from_slice(date.borrow_mut().now().as_bytes()));
    }
    if !headers.contains("Server") {
        buf.extend_from_slice(b"Server: afterward\r\n");
    }
    for (name, value) in headers.iter() {
        if !is_framing_header(name) {
            let _ = write!(buf, "{name}: {value}\r\n");
        }
    }
    if !bodyless(status) {
        let _ = write!(buf, "Content-Length: {}\r\n", body.len());
    }
    match persistence {
        Persistence::KeepAlive => {}
        Persistence::KeepAliveHttp10 => buf.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persistence::Close => buf.extend_from_slice(b"Connection: close\r\n"),
    }
    buf.extend_from_slice(b"\r\n");
    if send_body {
        buf.extend_from_slice(body);
    }
}

/// The reason phrase for `status` (informative only; clients ignore it).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

thread_local! {
    /// The `Date` header line, rebuilt at most once a second per thread.
    static DATE: RefCell<DateLine> = const {
        RefCell::new(DateLine { second: u64::MAX, line: String::new() })
    };
}

struct DateLine {
    second: u64,
    line: String,
}

impl DateLine {
    fn now(&mut self) -> &str {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.line = format!("Date: {}\r\n", http_date(second));
        }
        &self.line
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(unix_seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_seconds / 86_400;
    let rest = unix_seconds % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_000_000), "Wed, 18 Nov 2026 11:06:40 GMT");
    }

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        for (name, value) in [
            ("X-Ok", "a\r\nSet-Cookie: evil=1"),
            ("X-Ok", "a\nb"),
            ("X Bad", "v"),
            ("X-Ok", "caf\u{e9}"),
            ("", "v"),
        ] {
            let mut headers = Headers::new();
            headers.insert(name, value);
            assert!(check_headers(&headers).is_err(), "{name:?}: {value:?}");
        }
        let mut headers = Headers::new();
        headers.insert("X-Ok", "plain value\twith tab");
        assert!(check_headers(&headers).is_ok());
    }

    #[test]
    fn framing_headers_are_ours() {
        let mut headers = Headers::new();
        headers.insert("Content-Length", "999");
        headers.insert("Transfer-Encoding", "chunked");
        headers.insert("X-Kept", "1");
        let mut out = Vec::new();
        serialize(&mut out, 200, &headers, b"body", false, Persistence::Close);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 4\r\n") && !text.contains("999"),
            "{text}"
        );
        assert!(!text.contains("Transfer-Encoding"), "{text}");
        assert!(text.contains("X-Kept: 1\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"));
        assert!(text.ends_with("\r\n\r\n"), "HEAD: no body: {text}");
    }
}
