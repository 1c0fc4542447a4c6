//! The one chunked-body decoder (RFC 9112 §7.1): where a chunked body ends, and whether its
//! framing is broken — with hyper's rules, so the proxy never reads a body's end differently
//! from the parser behind it.
//!
//! Three readers use it: the request-smuggling scanner ([`crate::framing`]) follows client
//! bodies in front of hyper, the fast path ([`crate::http1`]) passes chunked response bodies
//! through verbatim (extensions and trailers included) and needs to know where they end to
//! reuse the upstream connection, and the HTTP/2 server ([`crate::http2`]) takes the chunk
//! data and trailers out of them ([`Chunked::decode`]) to send as DATA and trailer frames.
//! Data runs are skipped whole; only the framing bytes are looked at, one by one. The bounds
//! are hyper's: 16 KiB of chunk extensions per body, 16 KiB of trailers, a size that fits in
//! 64 bits.

/// Chunk extensions allowed per body (hyper's `CHUNKED_EXTENSIONS_LIMIT`).
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;
/// Trailer bytes allowed per body (hyper's `TRAILER_LIMIT`).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// The framing is broken: the body's end cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadChunk;

/// Where a chunked body's decoder is.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: State,
    /// Bytes left in the current chunk (while reading its size: the size so far).
    size: u64,
    extension_bytes: u64,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first hex digit of a chunk size.
    #[default]
    Start,
    Size,
    /// Spaces or tabs after the size.
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    /// After the last chunk, or after a trailer line: CR ends the body, anything else is a
    /// trailer line.
    EndCr,
    EndLf,
    Done,
}

impl Chunked {
    /// Takes the next bytes of the body: how many of `data` belong to it, and whether it has
    /// ended (then the rest of `data` is whatever follows the body).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), BadChunk> {
        self.decode(data, |_| {}, None)
    }

    /// As [`Chunked::feed`], and also hands over the body for a reader that re-frames it
    /// (HTTP/2): `payload` gets each run of chunk data (ranges into `data`), `trailers` (if
    /// given) collects the trailer lines, each with its CRLF.
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
        mut payload: impl FnMut(std::ops::Range<usize>),
        mut trailers: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok((i, true)),
                State::Data => {
                    let n = self.size.min((data.len() - i) as u64);
                    self.size -= n;
                    payload(i..i + n as usize);
                    i += n as usize;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                state => {
                    let next = self.byte(state, data[i])?;
                    if let Some(t) = trailers.as_deref_mut() {
                        // A trailer line's bytes, its CR, and (leaving TrailerLf) its LF.
                        if matches!(next, State::Trailer | State::TrailerLf)
                            || state == State::TrailerLf
                        {
                            t.push(data[i]);
                        }
                    }
                    self.state = next;
                    i += 1;
                }
            }
        }
        Ok((i, self.state == State::Done))
    }

    /// One framing byte, with the transitions of hyper's decoder (`proto/h1/decode.rs`).
    fn byte(&mut self, state: State, b: u8) -> Result<State, BadChunk> {
        use State::*;
        let hex = (b as char).to_digit(16).map(u64::from);
        Ok(match (state, b) {
            (Start, _) => {
                self.size = hex.ok_or(BadChunk)?;
                Size
            }
            (Size, _) if hex.is_some() => {
                let digit = hex.expect("checked");
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(BadChunk)?;
                Size
            }
            (Size | SizeLws, b'\t' | b' ') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws, b'\r') => SizeLf,
            (Extension, b'\r') => SizeLf,
            (Extension, b'\n') => return Err(BadChunk),
            (Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err(BadChunk);
                }
                Extension
            }
            (SizeLf, b'\n') if self.size == 0 => EndCr,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (Trailer, b'\r') => TrailerLf,
            (EndCr | Trailer, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(BadChunk);
                }
                Trailer
            }
            (TrailerLf, b'\n') => EndCr,
            (EndLf, b'\n') => Done,
            _ => return Err(BadChunk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        Chunked::default().feed(input)
    }

    #[test]
    fn a_body_ends_exactly_after_the_last_chunk_and_trailers() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nx-checksum: 1\r\n\r\nNEXT";
        assert_eq!(chunked(body), Ok((body.len() - 4, true)));
        assert_eq!(chunked(b"0\r\n\r\n"), Ok((5, true)));
        assert_eq!(chunked(b"3 ;x\r\nabc\r\n0\r\n\r\n"), Ok((16, true)));
    }

    #[test]
    fn a_body_split_anywhere_gives_the_same_end() {
        let body = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\nt: 1\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let (a, done_a) = c.feed(&body[..cut]).unwrap();
            assert_eq!(a, cut);
            assert!(!done_a || cut == body.len());
            let (b, done_b) = c.feed(&body[cut..]).unwrap();
            assert_eq!(a + b, body.len(), "cut at {cut}");
            assert!(done_b, "cut at {cut}");
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"1234567890abcdef0\r\n",
            b"3\nabc",
            b"1;a\nb\r\n",
            b"5\r\nhelloXX",
            b"3 x\r\n",
        ] {
            assert_eq!(
                chunked(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', 17 * 1024));
        assert_eq!(chunked(&long), Err(BadChunk));
        let mut trailers = b"0\r\nx: ".to_vec();
        trailers.extend(std::iter::repeat_n(b'y', 17 * 1024));
        assert_eq!(chunked(&trailers), Err(BadChunk));
    }
}
