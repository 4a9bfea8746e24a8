//! Helpers for the protocol layer's property tests.

/// A small xorshift64 generator: reproducible property tests without extra crates.
/// `rand(n)` returns a number in `0..n`.
pub fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    }
}
