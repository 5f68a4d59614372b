//! A small seeded generator (SplitMix64): bagging, feature sampling and the bin sample need
//! reproducible draws, not cryptographic ones, and a dependency for that is not worth it.

pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, bound), bound > 0.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        // The modulo bias is below 2^-40 for every bound this crate uses.
        (self.next_u64() % bound as u64) as usize
    }

    /// Exactly `wanted` of `0..total`, ascending (selection sampling, Knuth's algorithm S).
    pub(crate) fn sample_sorted(&mut self, total: usize, wanted: usize) -> Vec<u32> {
        let mut chosen = Vec::with_capacity(wanted);
        let mut needed = wanted.min(total);
        for index in 0..total {
            if needed == 0 {
                break;
            }
            let left = total - index;
            if self.next_f64() * (left as f64) < needed as f64 {
                // Row indices are checked to fit u32 before a fit starts.
                chosen.push(index as u32);
                needed -= 1;
            }
        }
        chosen
    }

    /// `wanted` distinct values of `0..total` in draw order (partial Fisher-Yates).
    pub(crate) fn choose(&mut self, total: usize, wanted: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..total).collect();
        let wanted = wanted.min(total);
        for position in 0..wanted {
            let pick = position + self.below(total - position);
            pool.swap(position, pick);
        }
        pool.truncate(wanted);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_sampling_takes_exactly_the_count_in_order() {
        let mut rng = SplitMix64::new(3);
        for (total, wanted) in [(10, 0), (10, 10), (1_000, 337), (5, 2)] {
            let sample = rng.sample_sorted(total, wanted);
            assert_eq!(sample.len(), wanted);
            assert!(sample.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(sample.iter().all(|&row| (row as usize) < total));
        }
        let mut chosen = rng.choose(20, 7);
        chosen.sort_unstable();
        chosen.dedup();
        assert_eq!(chosen.len(), 7);
    }
}
