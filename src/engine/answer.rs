//! Answers the engine gives without a handler (its own `400`, `408`,
//! `413`, `431`, `503`, ..., and the server's refusals during shutdown):
//! each counted and logged like a handler's, with a request id.

use std::time::Instant;

use super::parts::Head;
use super::wire::{self, Persistence};
use crate::access::{self, RequestIds};
use crate::response::Response;
use crate::stats::Counters;

/// Counts and logs an answer given without a handler (by the engine itself,
/// or by the server's refuser during shutdown), and gives it a request id:
/// the client's `X-Request-Id` when a head was read and it is sane, else a
/// new one.
///
/// Architecture invariant: every answer is counted and logged: here, or in
/// `server::worker::handle` for the requests handlers see.
pub(crate) fn answered_unhandled(
    counters: &Counters,
    ids: &RequestIds,
    head: Option<&Head>,
    response: &mut Response,
    started: std::time::Instant,
) {
    let request_id = ids.for_request(head.and_then(|h| h.headers.get("X-Request-Id")));
    response
        .headers_mut()
        .set("X-Request-Id".into(), request_id.to_string().into());
    let status = response.status();
    counters.responding(status);
    match head {
        Some(head) => access::log(&head.method, &head.target, status, started, &request_id, 0),
        None => access::log(&"-", "-", status, started, &request_id, 0),
    }
}

/// `response`, an answer the engine gives itself and closes the connection
/// after, counted and logged (with what was read of the request's head), as
/// the bytes to send.
pub(crate) fn closing_answer(
    counters: &Counters,
    ids: &RequestIds,
    mut response: Response,
    head: Option<&Head>,
    now: Instant,
) -> Vec<u8> {
    answered_unhandled(counters, ids, head, &mut response, now);
    let (status, headers, body) = response.into_wire();
    let mut out = Vec::new();
    wire::serialize(&mut out, status, &headers, &body, true, Persistence::Close);
    out
}
