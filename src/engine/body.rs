//! Request bodies: `Content-Length` and chunked framing, read on the request
//! worker that handles the request.

use std::io::{self, BufRead};

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
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// The longest chunk-size line (size and extensions) or trailer line read.
const MAX_LINE: usize = 4096;
/// The most trailer bytes read after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

impl Framing {
    /// Whether the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// Reads body bytes into `buf` from `reader`, advancing the framing.
    /// Returns 0 at the end of the body. A body cut short or malformed is an
    /// error (`UnexpectedEof`, `InvalidData`).
    pub(crate) fn read(&mut self, reader: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match *self {
                Framing::Done | Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let n = read_some(reader, buf, left)?;
                    *self = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Chunked(Chunk::Size) => {
                    let line = read_line(reader, MAX_LINE)?;
                    let size = parse_chunk_size(&line)?;
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(0)) => {
                    if !read_line(reader, MAX_LINE)?.is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let n = read_some(reader, buf, left)?;
                    *self = Framing::Chunked(Chunk::Data(left - n as u64));
                    return Ok(n);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut total = 0;
                    loop {
                        let line = read_line(reader, MAX_LINE)?;
                        if line.is_empty() {
                            break;
                        }
                        total += line.len();
                        if total > MAX_TRAILERS {
                            return Err(invalid("too many trailer bytes"));
                        }
                    }
                    *self = Framing::Done;
                }
            }
        }
    }
}

/// Reads at most `left` bytes (and at most `buf.len()`); EOF is an error.
fn read_some(reader: &mut impl BufRead, buf: &mut [u8], left: u64) -> io::Result<usize> {
    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    if want == 0 {
        return Ok(0);
    }
    let n = reader.read(&mut buf[..want])?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the end of the body",
        ));
    }
    Ok(n)
}

/// Reads one line ending in CRLF (a bare LF is refused), without the line
/// ending, refusing a line longer than `limit`.
fn read_line(reader: &mut impl BufRead, limit: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the body ended mid-line",
            ));
        }
        let (take, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if line.len() > limit + 2 {
            return Err(invalid("chunk line too long"));
        }
        if found {
            if line.len() < 2 || line[line.len() - 2] != b'\r' {
                return Err(invalid("chunk line not ended by CRLF"));
            }
            line.truncate(line.len() - 2);
            return Ok(line);
        }
    }
}

/// `1*HEXDIG [ chunk-ext ]`, without leading or trailing whitespace around the size.
fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("invalid chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("invalid chunk size"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(framing: &mut Framing, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = framing.read(&mut reader, &mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn chunked_bodies_decode_and_stop_at_their_end() {
        let mut framing = Framing::Chunked(Chunk::Size);
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";
        assert_eq!(read_all(&mut framing, input).unwrap(), b"hello world");
        assert!(framing.is_done());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for input in [
            &b"5\r\nhello\r\n"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let mut framing = Framing::Chunked(Chunk::Size);
            assert!(
                read_all(&mut framing, input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let mut framing = Framing::Length(4);
        assert_eq!(read_all(&mut framing, b"bodyGET /next").unwrap(), b"body");
        let mut short = Framing::Length(10);
        let error = read_all(&mut short, b"body").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
