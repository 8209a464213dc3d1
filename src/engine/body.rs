//! Request bodies: `Content-Length` and chunked framing, decoded as the bytes
//! arrive (the event loop reads every body whole before a request worker
//! sees the request), and the memory they hold, reserved from one budget.
//!
//! Decoding is a pure function over the bytes read so far: fed any prefix of
//! the rest of the connection's input, it takes what it can, and the bytes
//! it leaves (a line not yet whole, the next request) stay for the next call.

use std::sync::Arc;

use crate::stats::Counters;

/// How much of the body is left, by framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length`: this many bytes still to read (0: done).
    Length(u64),
    /// `Transfer-Encoding: chunked`, in this state.
    Chunked(Chunk),
    /// Read to the end (or there was none).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many data bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; this many
    /// trailer bytes so far.
    Trailers(usize),
}

/// Why a body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Malformed framing (`400`).
    Invalid(&'static str),
    /// More data than the limit (`413`).
    TooLarge,
}

/// The longest chunk-size line (size and extensions) or trailer line read.
pub(crate) const MAX_LINE: usize = 4096;
/// The most trailer bytes read after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

impl Framing {
    /// Whether the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// Decodes what `input` holds of the body: appends its data to `out` (at
    /// most `limit` bytes in `out` in all) and returns how many bytes of
    /// `input` it used. It stops at the end of the body (what follows is the
    /// next request), or where it needs more bytes (a line not yet whole).
    pub(crate) fn decode(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, BodyError> {
        let start = input.len();
        loop {
            match *self {
                Framing::Done | Framing::Length(0) => {
                    *self = Framing::Done;
                    break;
                }
                Framing::Length(left) => {
                    let n = take(left, input.len());
                    if out.len() + n > limit {
                        return Err(BodyError::TooLarge);
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *self = Framing::Length(left - n as u64);
                    if !self.is_done() {
                        break;
                    }
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some((line, rest)) = line(input)? else {
                        break;
                    };
                    let size = parse_chunk_size(line)?;
                    if out.len() as u64 + size > limit as u64 {
                        return Err(BodyError::TooLarge);
                    }
                    input = rest;
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = take(left, input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    *self = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    if left > 0 {
                        break;
                    }
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    let Some((line, rest)) = line(input)? else {
                        break;
                    };
                    if !line.is_empty() {
                        return Err(BodyError::Invalid("chunk data longer than its size"));
                    }
                    input = rest;
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers(total)) => {
                    let Some((line, rest)) = line(input)? else {
                        break;
                    };
                    input = rest;
                    if line.is_empty() {
                        *self = Framing::Done;
                        continue;
                    }
                    let total = total + line.len();
                    if total > MAX_TRAILERS {
                        return Err(BodyError::Invalid("too many trailer bytes"));
                    }
                    *self = Framing::Chunked(Chunk::Trailers(total));
                }
            }
        }
        Ok(start - input.len())
    }
}

/// How many of `available` bytes to take towards `left`.
fn take(left: u64, available: usize) -> usize {
    available.min(usize::try_from(left).unwrap_or(usize::MAX))
}

/// A line without its CRLF, and what follows it.
type Line<'a> = (&'a [u8], &'a [u8]);

/// The first line of `input` without its CRLF (a bare LF is refused), and
/// what follows it; `None` while it is not whole. A line longer than
/// [`MAX_LINE`] is refused, whole or not.
fn line(input: &[u8]) -> Result<Option<Line<'_>>, BodyError> {
    let Some(lf) = input.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') else {
        if input.len() > MAX_LINE + 1 {
            return Err(BodyError::Invalid("chunk line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || input[lf - 1] != b'\r' {
        return Err(BodyError::Invalid("chunk line not ended by CRLF"));
    }
    Ok(Some((&input[..lf - 1], &input[lf + 1..])))
}

/// `1*HEXDIG [ chunk-ext ]`, without leading or trailing whitespace around the size.
fn parse_chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let invalid = BodyError::Invalid("invalid chunk size");
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid);
    }
    let text = std::str::from_utf8(digits).map_err(|_| invalid)?;
    u64::from_str_radix(text, 16).map_err(|_| invalid)
}

/// A body being received, and the part of the engine's body budget
/// (`max_body_buffer_bytes`) it holds: reserved before its memory is used
/// (all of a declared length at once; a chunked body as it grows), given
/// back when it is dropped (with its request).
pub(crate) struct Received {
    pub(crate) data: Vec<u8>,
    reserved: u64,
    counters: Arc<Counters>,
}

impl Received {
    /// A body of which `expected` bytes are reserved from `counters`' budget
    /// of `budget` bytes; `None` when the budget has no room for them.
    pub(crate) fn reserve(
        counters: &Arc<Counters>,
        expected: u64,
        budget: u64,
    ) -> Option<Received> {
        if !counters.body_reserve(expected, budget) {
            return None;
        }
        Some(Received {
            data: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            reserved: expected,
            counters: counters.clone(),
        })
    }

    /// Reserves what the data holds beyond the reservation; `false` when the
    /// budget has no room left.
    pub(crate) fn cover(&mut self, budget: u64) -> bool {
        let held = self.data.capacity() as u64;
        if held <= self.reserved {
            return true;
        }
        if !self.counters.body_reserve(held - self.reserved, budget) {
            return false;
        }
        self.reserved = held;
        true
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        self.counters.body_release(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes, as reads would bring
    /// it; returns the body and how many bytes of `input` it used.
    fn in_pieces(
        framing: &mut Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut out = Vec::new();
        let (mut buffered, mut used, mut fed) = (Vec::new(), 0, 0);
        while !framing.is_done() && fed < input.len() {
            let end = (fed + step).min(input.len());
            buffered.extend_from_slice(&input[fed..end]);
            fed = end;
            let n = framing.decode(&buffered, &mut out, 1 << 20)?;
            buffered.drain(..n);
            used += n;
        }
        Ok((out, used))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces_and_stop_at_their_end() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        for step in 1..=input.len() {
            let mut framing = Framing::Chunked(Chunk::Size);
            let (body, used) = in_pieces(&mut framing, input, step).unwrap();
            assert_eq!(body, b"hello world", "pieces of {step}");
            assert!(framing.is_done());
            assert_eq!(&input[used..], b"GET /next", "pieces of {step}");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let mut framing = Framing::Chunked(Chunk::Size);
            assert!(
                matches!(
                    in_pieces(&mut framing, input, 1),
                    Err(BodyError::Invalid(_))
                ),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = vec![b'1'; MAX_LINE + 2];
        let mut framing = Framing::Chunked(Chunk::Size);
        let error = framing
            .decode(&long_line, &mut Vec::new(), 100)
            .unwrap_err();
        assert_eq!(error, BodyError::Invalid("chunk line too long"));
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_waits_for_the_rest() {
        let mut framing = Framing::Length(4);
        let mut out = Vec::new();
        assert_eq!(framing.decode(b"bodyGET /next", &mut out, 10), Ok(4));
        assert_eq!((out.as_slice(), framing.is_done()), (&b"body"[..], true));
        let mut short = Framing::Length(10);
        let mut out = Vec::new();
        assert_eq!(short.decode(b"body", &mut out, 10), Ok(4));
        assert_eq!(short, Framing::Length(6), "the rest is still to come");
    }

    #[test]
    fn a_body_over_the_limit_is_refused_before_it_is_kept() {
        let mut chunked = Framing::Chunked(Chunk::Size);
        let mut out = b"12345".to_vec();
        let error = chunked.decode(b"6\r\n", &mut out, 10).unwrap_err();
        assert_eq!((error, out.len()), (BodyError::TooLarge, 5));
        let mut length = Framing::Length(11);
        assert_eq!(
            length.decode(b"hello world", &mut Vec::new(), 10),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn a_received_body_holds_its_reservation_until_dropped() {
        let counters = Arc::new(Counters::default());
        let mut body = Received::reserve(&counters, 10, 16).unwrap();
        assert!(Received::reserve(&counters, 7, 16).is_none(), "over budget");
        assert_eq!(counters.snapshot().body_bytes_buffered, 10);
        body.data.reserve_exact(20);
        assert!(!body.cover(16), "its growth does not fit");
        drop(body);
        assert_eq!(counters.snapshot().body_bytes_buffered, 0);
    }
}
