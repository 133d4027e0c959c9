//! The one small generator the tool seeds from: SplitMix64 (Steele, Lea & Flood, "Fast
//! splittable pseudorandom number generators", 2014), as a stream ([`SplitMix64`]: the
//! bootstrap's draws) and as a mix of several words into one seed ([`mix`]: each epoch's,
//! batch's and image's own generator in training).

/// 2⁶⁴/φ, SplitMix64's increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit mix of several words, for deriving independent seeds.
pub fn mix(words: &[u64]) -> u64 {
    let mut h = GOLDEN;
    for &w in words {
        h = finalize(h ^ w.wrapping_add(GOLDEN));
    }
    h
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small, fast generator that passes BigCrush, for
/// the millions of draws a bootstrap of many images takes; seeded, so the same data give the
/// same interval.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        finalize(self.0)
    }

    /// Uniform in 0..n (n > 0), without bias (Lemire 2019's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_gives_splitmix64s_reference_values_and_the_mix_its_finaliser() {
        // The first outputs of the reference C implementation seeded with 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // One word w mixed is the stream's first output from the state GOLDEN ^ (w + GOLDEN)
        // less one increment.
        let w = 7u64;
        let mut s = SplitMix64::new((GOLDEN ^ w.wrapping_add(GOLDEN)).wrapping_sub(GOLDEN));
        assert_eq!(mix(&[w]), s.next_u64());
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
    }
}
