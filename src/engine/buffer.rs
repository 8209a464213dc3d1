//! Read buffers: what a connection has read and not yet used, and the pool
//! they return to while their connection is idle, so that an idle connection
//! holds no buffer at all.

use std::io::{self, Read};

use crossbeam_channel::{Receiver, Sender};

/// The size a buffer starts at; it grows (up to the head limit) only for a
/// head that does not fit.
pub(super) const BUFFER_SIZE: usize = 8 * 1024;
/// Buffers kept for reuse; more are freed.
const POOLED: usize = 256;

/// Bytes read from a connection: `data[start..end]` not yet used.
#[derive(Default)]
pub(super) struct Buffer {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// The bytes read and not yet consumed.
    pub(super) fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes (at most those filled) as used.
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Consumes the empty lines a client may send before a request (RFC 9112
    /// §2.2): every CR and LF at the start; how many.
    pub(super) fn skip_blank_lines(&mut self) -> usize {
        let blank = self
            .filled()
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.consume(blank);
        blank
    }

    /// One read from `source` after the bytes held, growing the buffer up to
    /// `limit` bytes held when it is full. `Ok(0)`: the source ended, or the
    /// buffer holds `limit` bytes already.
    pub(super) fn read_from(
        &mut self,
        source: &mut impl Read,
        pool: &Pool,
        limit: usize,
    ) -> io::Result<usize> {
        if self.data.is_empty() {
            self.data = pool.take();
        }
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.data.len() {
            let held = self.len();
            if held >= limit {
                return Ok(0);
            }
            let mut grown = vec![0; (self.data.len() * 2).min(limit).max(held + 1)];
            grown[..held].copy_from_slice(self.filled());
            (self.data, self.start, self.end) = (grown.into_boxed_slice(), 0, held);
        }
        let n = source.read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Whether a read could put more in it (the last one did not fill it).
    pub(super) fn has_room(&self) -> bool {
        self.end < self.data.len()
    }

    /// Gives the memory back to `pool` if nothing is held.
    pub(super) fn release_if_empty(&mut self, pool: &Pool) {
        if self.is_empty() && !self.data.is_empty() {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

/// Buffers of [`BUFFER_SIZE`] waiting for a connection to read into.
pub(super) struct Pool {
    give: Sender<Box<[u8]>>,
    take: Receiver<Box<[u8]>>,
}

impl Default for Pool {
    fn default() -> Pool {
        let (give, take) = crossbeam_channel::bounded(POOLED);
        Pool { give, take }
    }
}

impl Pool {
    fn take(&self) -> Box<[u8]> {
        self.take
            .try_recv()
            .unwrap_or_else(|_| vec![0; BUFFER_SIZE].into_boxed_slice())
    }

    fn give(&self, data: Box<[u8]>) {
        if data.len() == BUFFER_SIZE {
            // A full pool frees it.
            let _ = self.give.try_send(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grows_to_its_limit_and_keeps_unconsumed_bytes_in_order() {
        let pool = Pool::default();
        let input: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut source = &input[..];
        let mut buffer = Buffer::default();
        while buffer.read_from(&mut source, &pool, 12_000).unwrap() > 0 {}
        assert_eq!(buffer.filled(), &input[..12_000], "stops at the limit");
        buffer.consume(11_000);
        while buffer.read_from(&mut source, &pool, 12_000).unwrap() > 0 {}
        assert_eq!(buffer.filled(), &input[11_000..]);
        buffer.consume(usize::MAX);
        assert!(buffer.is_empty());
        buffer.release_if_empty(&pool);
        assert!(
            buffer.data.is_empty(),
            "an empty buffer gives its memory back"
        );
    }
}
