//! The entry point of the `request_head` fuzz target: reading a request as
//! the event loop does, in pieces, against reading it whole. Built for `cargo
//! fuzz` (`--cfg fuzzing`) and for the unit tests.

use std::io;

use super::limits::ConnectionLimits;
use super::{body, buffer, head};

/// Reads `bytes` as the event loop reads a connection: in pieces into a
/// pooled [`buffer::Buffer`], blank lines before the head skipped (and
/// counted toward its limit), the head's end searched piece by piece, up to
/// the head size limit; then parses the head and decodes its body piece by
/// piece, as the loop does. What the fuzz target `request_head` drives.
/// Never panics, whatever the input, and finds what a reading of the whole
/// input at once finds.
pub(crate) fn fuzz_request(bytes: &[u8]) {
    use std::io::Read;

    /// Gives `rest` out `step` bytes at a time, as a socket might.
    struct Pieces<'a> {
        rest: &'a [u8],
        step: usize,
    }
    impl Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.rest.len());
            out[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    let limits = ConnectionLimits::default();
    let max = limits.max_header_bytes;
    let step = 1 + usize::from(bytes.first().copied().unwrap_or(0)) * 97;
    let mut source = Pieces { rest: bytes, step };
    let pool = buffer::Pool::default();
    let mut buf = buffer::Buffer::default();
    let (mut skipped, mut searched) = (0, 0);
    let end = loop {
        if searched == 0 {
            skipped += buf.skip_blank_lines();
        }
        if skipped > max {
            return;
        }
        let end = head::head_end(buf.filled(), searched);
        if end.is_some() || buf.len() > max {
            break end;
        }
        searched = buf.len();
        match buf.read_from(&mut source, &pool, max + 1) {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    // The buffer holds the input's bytes, in order, and the end found in
    // pieces is the end found in those bytes whole.
    let held = &bytes[skipped..skipped + buf.len()];
    assert_eq!(buf.filled(), held, "pieces of {step} bytes");
    assert_eq!(end, head::head_end(held, 0), "pieces of {step} bytes");
    let Some(end) = end.filter(|&end| end <= max) else {
        return;
    };
    let Ok(request) = head::parse_head(&buf.filled()[..end], None, &limits) else {
        return;
    };
    if request.framing != body::Framing::Done {
        assert!(head::may_have_body(&buf.filled()[..end]), "a body unseen");
    }
    buf.consume(end);
    let after_head = skipped + end;
    // The body decoded whole...
    let mut whole = request.framing;
    let mut expected = Vec::new();
    let whole_result = whole.decode(&bytes[after_head..], &mut expected, limits.max_body_bytes);
    // ...and in pieces, out of the same buffer as the loop's.
    let mut framing = request.framing;
    let mut decoded = Vec::new();
    let mut used = 0;
    let result = loop {
        match framing.decode(buf.filled(), &mut decoded, limits.max_body_bytes) {
            Err(error) => break Err(error),
            Ok(n) => {
                buf.consume(n);
                used += n;
            }
        }
        if framing.is_done() {
            break Ok(used);
        }
        match buf.read_from(&mut source, &pool, buffer::BUFFER_SIZE) {
            Ok(0) | Err(_) => break Ok(used),
            Ok(_) => {}
        }
    };
    match (whole_result, result) {
        (Ok(n), Ok(m)) if whole.is_done() => {
            assert!(framing.is_done(), "pieces of {step} bytes");
            assert_eq!((n, &expected), (m, &decoded), "pieces of {step} bytes");
        }
        // Cut short: the pieces got as far as the whole did.
        (Ok(_), Ok(_)) => assert_eq!(expected, decoded, "pieces of {step} bytes"),
        (Err(a), Err(b)) => assert_eq!(a, b, "pieces of {step} bytes"),
        (a, b) => panic!("whole {a:?}, pieces {b:?} (pieces of {step} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz target's property on a few inputs of each kind, so that it
    /// is compiled and holds in every test run, not only under `cargo fuzz`.
    #[test]
    fn reading_in_pieces_finds_what_reading_whole_finds() {
        let inputs: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n",
            b"\x00\xff garbage\r\n\r\n",
            b"",
        ];
        for input in inputs {
            for first in [0u8, 1, 5, 200] {
                let mut bytes = vec![first];
                bytes.extend_from_slice(input);
                super::fuzz_request(&bytes[1..]);
                super::fuzz_request(&bytes);
            }
        }
    }
}
