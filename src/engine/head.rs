//! Request heads: where one ends in the bytes read so far, and parsing and
//! checking it (target form, framing, `Host`, `Expect`) into our types. Pure
//! functions over bytes: the event loop finds the end, a request worker parses.

use std::net::SocketAddr;

use super::body::{Chunk, Framing};
use super::limits::ConnectionLimits;
use super::parts::Head;
use crate::headers::Headers;
use crate::http_error::HttpError;
use crate::method::Method;

/// A request head, parsed and checked.
pub(super) struct ParsedHead {
    pub(super) head: Head,
    pub(super) framing: Framing,
    pub(super) http10: bool,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    pub(super) is_head: bool,
}

/// The length of the request head in `head` (up to and with the empty line
/// that ends it: `\n\n` or `\n\r\n`), if it is all there. `searched`:
/// how many bytes an earlier call looked at, so that a head read in pieces
/// is scanned once (the last two bytes again, as an end may straddle).
/// Reading from the socket, or from a readiness loop's buffer, only feeds it.
pub(super) fn head_end(head: &[u8], searched: usize) -> Option<usize> {
    (searched.saturating_sub(2)..head.len()).find_map(|i| {
        if head[i] != b'\n' {
            return None;
        }
        match (head.get(i + 1), head.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

/// Whether a request head may declare a body: whether a line of it starts
/// with either framing header's name, in any case. A head without one has
/// no body (RFC 9112 §6.3), so the event loop hands it to a worker
/// unparsed; a false alarm only costs a parse on the loop. (httparse
/// refuses whitespace before a field name, so a field it reads starts its
/// line.)
pub(super) fn may_have_body(head: &[u8]) -> bool {
    const NAMES: [&[u8]; 2] = [b"content-length", b"transfer-encoding"];
    head.iter().enumerate().any(|(at, &byte)| {
        byte == b'\n'
            && NAMES.iter().any(|name| {
                head.get(at + 1..at + 1 + name.len())
                    .is_some_and(|field| field.eq_ignore_ascii_case(name))
            })
    })
}

pub(super) fn parse_head(
    bytes: &[u8],
    remote_addr: Option<SocketAddr>,
    limits: &ConnectionLimits,
) -> Result<ParsedHead, Refused> {
    let bad = |detail: &str| HttpError::new(400, detail.to_owned());
    // Up to 64 fields (the default limit) on the stack, more on the heap.
    let mut on_stack = [httparse::EMPTY_HEADER; 64];
    let mut on_heap = Vec::new();
    let fields = if limits.max_headers <= on_stack.len() {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut on_heap[..]
    };
    let mut parsed = httparse::Request::new(fields);
    let unread = |error| Refused { error, head: None };
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(unread(bad("incomplete request head"))),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(unread(HttpError::new(
                431,
                format!("more than {} header fields", limits.max_headers),
            )))
        }
        Err(httparse::Error::Version) => {
            return Err(unread(HttpError::new(
                505,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            )))
        }
        Err(e) => return Err(unread(bad(&format!("malformed request head: {e}")))),
    }
    interpret(&parsed, remote_addr).map_err(|error| Refused {
        error,
        head: Some(Box::new(summary(&parsed, remote_addr))),
    })
}

/// A request refused by the engine, and what was read of its head (for the
/// access log and the client's request id).
pub(super) struct Refused {
    pub(super) error: HttpError,
    /// Boxed: refusals are rare, and the `Ok` side stays small.
    pub(super) head: Option<Box<Head>>,
}

impl From<HttpError> for Refused {
    fn from(error: HttpError) -> Refused {
        Refused { error, head: None }
    }
}

/// What the access log needs of a head that parsed but was refused: method,
/// target and the client's `X-Request-Id`.
fn summary(parsed: &httparse::Request<'_, '_>, remote_addr: Option<SocketAddr>) -> Head {
    let mut headers = Headers::new();
    let id = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("X-Request-Id"));
    if let Some(id) = id {
        headers.append(
            "X-Request-Id",
            String::from_utf8_lossy(id.value).into_owned(),
        );
    }
    Head {
        method: Method::from_token(parsed.method.unwrap_or("-")),
        target: parsed.path.unwrap_or("-").to_owned(),
        headers,
        remote_addr,
        content_length: None,
    }
}

/// Checks a parsed head (target form, framing, `Host`, `Expect`) and turns
/// it into our types.
fn interpret(
    parsed: &httparse::Request<'_, '_>,
    remote_addr: Option<SocketAddr>,
) -> Result<ParsedHead, HttpError> {
    let bad = |detail: &str| HttpError::new(400, detail.to_owned());
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("incomplete request line"));
    };
    if !target.starts_with('/') {
        return Err(bad(
            "only origin-form request targets (/path?query) are supported",
        ));
    }
    let http10 = version == 0;

    let mut headers = Headers::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut connection_tokens = String::new();
    let mut expect_continue = false;
    for field in parsed.headers.iter() {
        let value = String::from_utf8_lossy(field.value);
        let trimmed = value.trim_matches([' ', '\t']);
        if field.name.eq_ignore_ascii_case("Content-Length") {
            if content_length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("invalid Content-Length"));
            }
            content_length = Some(trimmed.parse().map_err(|_| bad("invalid Content-Length"))?);
        } else if field.name.eq_ignore_ascii_case("Transfer-Encoding") {
            // Only exactly `chunked`, once: anything else could be read
            // differently by a proxy in front of us (request smuggling).
            if chunked || !trimmed.eq_ignore_ascii_case("chunked") {
                return Err(bad(
                    "unsupported Transfer-Encoding (only a single `chunked` is)",
                ));
            }
            chunked = true;
        } else if field.name.eq_ignore_ascii_case("Connection") {
            connection_tokens.push_str(trimmed);
            connection_tokens.push(',');
        } else if field.name.eq_ignore_ascii_case("Expect") {
            if !trimmed.eq_ignore_ascii_case("100-continue") {
                return Err(HttpError::new(
                    417,
                    "only `Expect: 100-continue` is supported",
                ));
            }
            expect_continue = !http10;
        }
        headers.append_received(field.name, value.into_owned());
    }
    check_host(&headers, http10)?;
    if chunked && content_length.is_some() {
        return Err(bad("both Transfer-Encoding and Content-Length"));
    }
    if chunked && http10 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let has_token = |token: &str| {
        connection_tokens
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = if http10 {
        has_token("keep-alive")
    } else {
        !has_token("close")
    };
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked(Chunk::Size),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Done,
    };
    let method = Method::from_token(method);
    Ok(ParsedHead {
        is_head: method == Method::Head,
        head: Head {
            method,
            target: target.to_owned(),
            headers,
            remote_addr,
            content_length,
        },
        framing,
        http10,
        keep_alive,
        expect_continue: expect_continue && !matches!(framing, Framing::Done),
    })
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, an HTTP/1.0 one
/// at most one; its value is `host[:port]` (empty is allowed: a target with
/// no authority). Anything else is `400`.
pub(crate) fn check_host(headers: &Headers, http10: bool) -> Result<(), HttpError> {
    let mut hosts = headers.get_all("Host");
    let bad = |detail: &str| Err(HttpError::new(400, detail.to_owned()));
    match (hosts.next(), hosts.next()) {
        (None, _) if http10 => Ok(()),
        (None, _) => bad("an HTTP/1.1 request needs a Host header"),
        (Some(_), Some(_)) => bad("more than one Host header"),
        (Some(value), None) if is_valid_host(value.trim_matches([' ', '\t'])) => Ok(()),
        (Some(_), None) => bad("invalid Host header"),
    }
}

/// `uri-host [ ":" port ]` (RFC 3986): an IP literal in brackets, or
/// registered-name characters; the port all digits.
fn is_valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let literal_ok = !literal.is_empty()
            && literal.bytes().all(|b| {
                b.is_ascii_hexdigit() || b":.vV".contains(&b) || is_unreserved_or_sub_delim(b)
            });
        if !literal_ok {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    let host_ok = host
        .bytes()
        .all(|b| b == b'%' || is_unreserved_or_sub_delim(b));
    host_ok && port.bytes().all(|b| b.is_ascii_digit())
}

fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::{head_end, may_have_body, parse_head};
    use crate::engine::body::Framing;
    use crate::engine::ConnectionLimits;

    #[test]
    fn a_head_that_may_have_a_body_is_one_that_names_a_framing_header() {
        let heads: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /send HTTP/1.1\r\nHost: a\r\nX-Content-Len: 5\r\n\r\n",
            b"GET /content-length HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ];
        for head in heads {
            // Never "no" for a head whose parse finds a body.
            let framing = parse_head(head, None, &ConnectionLimits::default())
                .map(|parsed| parsed.framing)
                .unwrap_or(Framing::Done);
            if framing != Framing::Done {
                assert!(may_have_body(head), "{:?}", String::from_utf8_lossy(head));
            }
        }
        assert!(may_have_body(heads[0]) && may_have_body(heads[1]));
        assert!(!may_have_body(heads[2]) && !may_have_body(heads[3]));
        assert!(
            !may_have_body(heads[4]),
            "a name in the target is not a field"
        );
    }

    /// Feeds `bytes` to `head_end` in pieces ending at `cuts`, as reads
    /// would, and returns the first end found.
    fn in_pieces(bytes: &[u8], cuts: &[usize]) -> Option<usize> {
        let mut searched = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            if let Some(end) = head_end(&bytes[..cut], searched) {
                return Some(end);
            }
            searched = cut;
        }
        None
    }

    #[test]
    fn a_head_read_in_any_pieces_ends_where_it_ends_read_whole() {
        let cases: [(&[u8], Option<usize>); 5] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"GET / HTTP/1.1\nHost: a\n\nbody", Some(24)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Some(26)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(head_end(bytes, 0), expected, "{bytes:?}");
            for cut in 0..=bytes.len() {
                assert_eq!(in_pieces(bytes, &[cut]), expected, "{bytes:?} cut at {cut}");
            }
            let every_byte: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(
                in_pieces(bytes, &every_byte),
                expected,
                "{bytes:?} byte by byte"
            );
        }
    }
}
