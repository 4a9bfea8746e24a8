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

/// `seed` with 1 to `max_edits` random edits: a byte replaced, removed or inserted, the new
/// bytes drawn from `alphabet` (bytes that matter to the grammar under test).
pub fn mutate(
    seed: &[u8],
    max_edits: usize,
    alphabet: &[u8],
    rand: &mut impl FnMut(usize) -> usize,
) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..1 + rand(max_edits) {
        let at = rand(input.len() + 1);
        let byte = alphabet[rand(alphabet.len())];
        match rand(3) {
            0 if at < input.len() => input[at] = byte,
            1 if at < input.len() => {
                input.remove(at);
            }
            _ => input.insert(at, byte),
        }
    }
    input
}
