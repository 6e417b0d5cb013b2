//! SplitMix64: reproducible pseudo-random numbers (recipient choice, message text) from a
//! seed, so two runs with the same `--seed` send the same mail; not for anything secret.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0); the high bits scaled, so small `n` are not biased by `%`.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let a: Vec<u32> = {
            let mut r = Rng::new(7);
            (0..100).map(|_| r.below(10)).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng::new(7);
            (0..100).map(|_| r.below(10)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|&x| x < 10));
        // Every value turns up: the scaling does not skip any.
        assert!((0..10).all(|v| a.contains(&v)));
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        assert_eq!(Rng::new(1).below(1), 0);
    }
}
