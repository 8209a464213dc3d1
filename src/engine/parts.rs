//! What an engine hands the rest of the crate for one request: its head in
//! our types, and its body.

use std::io::Read;
use std::net::SocketAddr;

use crate::headers::Headers;
use crate::method::Method;

/// The parts of a request that are read before its body.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    /// The request target as sent: path and optional `?query`, still percent-encoded.
    pub(crate) target: String,
    pub(crate) headers: Headers,
    pub(crate) remote_addr: Option<SocketAddr>,
    /// The declared body length, when the client sent `Content-Length`.
    pub(crate) content_length: Option<u64>,
}

/// A request's body as its engine gives it.
#[cfg_attr(not(feature = "tiny-http"), allow(dead_code))]
pub(crate) enum BodySource<'a> {
    /// Read whole, and checked against the body limit.
    Bytes(Vec<u8>),
    /// To read (once, up to the limit).
    Reader(&'a mut dyn Read),
}
