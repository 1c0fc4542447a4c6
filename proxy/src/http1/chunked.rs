//! Following a chunked body (RFC 9112 §7.1) byte by byte, to know exactly where it ends.
//!
//! The fast path passes chunked response bodies through verbatim (extensions and trailers
//! included), so it never re-frames them; it only needs to know where the body ends, to
//! reuse the upstream connection, and whether the framing is broken, to close instead.

/// Follows chunked framing byte by byte (data runs are skipped whole), so the body passes
/// through verbatim — extensions and trailers included — and its end is known exactly.
#[derive(Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    trailer_bytes: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

/// Bounds on what a chunked body may carry besides data.
const MAX_CHUNK_DIGITS: u8 = 15;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Chunked {
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let n = self.size.min((data.len() - i) as u64);
                self.size -= n;
                i += n as usize;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() && self.digits < MAX_CHUNK_DIGITS => {
                    let digit = (b as char).to_digit(16).expect("hex digit");
                    self.size = self.size * 16 + u64::from(digit);
                    self.digits += 1;
                    Size
                }
                (Size, b';') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b) if b != b'\n' => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | TrailerLine, b) if b != b'\n' && b != b'\r' => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(());
                    }
                    TrailerLine
                }
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => return Ok((i, true)),
                _ => return Err(()),
            };
        }
        Ok((i, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> Result<(usize, bool), ()> {
        Chunked::default().feed(input)
    }

    #[test]
    fn chunked_body_ends_exactly_after_the_last_chunk_and_trailers() {
        let body = b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nx-checksum: 1\r\n\r\nNEXT";
        assert_eq!(chunked(body), Ok((body.len() - 4, true)));
        assert_eq!(chunked(b"0\r\n\r\n"), Ok((5, true)));
    }

    #[test]
    fn chunked_body_split_anywhere_gives_the_same_end() {
        let body = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
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
    fn bad_chunk_framing_is_an_error() {
        assert!(chunked(b"zz\r\n").is_err());
        assert!(chunked(b"\r\n").is_err());
        assert!(chunked(b"3\r\nabcX").is_err());
        assert!(chunked(b"1234567890abcdef0\r\n").is_err());
        assert!(chunked(b"3\nabc").is_err());
    }
}
