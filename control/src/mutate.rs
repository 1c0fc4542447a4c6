//! Test-only: a tiny deterministic input mutator, so the parsers' "never panic on any bytes"
//! properties run in every `cargo test`, not only under cargo-fuzz (which needs nightly).

/// xorshift64*: deterministic, seedable, no dependencies.
pub struct Mutator(u64);

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `seed` with a few random edits: byte flips, inserted bytes or JSON-ish tokens, cuts.
    pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        const TOKENS: [&[u8]; 12] = [
            b"{", b"}", b"[", b"]", b"\"", b":", b",", b"-1", b"1e999", b"null", b"\"10%\"",
            b"\\u0000",
        ];
        let mut out = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(4) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] ^= 1 << self.below(8);
                }
                1 => {
                    let b = (self.next() & 0xff) as u8;
                    out.insert(at, b);
                }
                2 => {
                    let t = TOKENS[self.below(TOKENS.len())];
                    out.splice(at..at, t.iter().copied());
                }
                _ => out.truncate(at),
            }
        }
        out
    }
}
