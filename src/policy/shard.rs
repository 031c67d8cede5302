//! Splitting one cluster between several operator instances, with Kubernetes' own means: each
//! instance reconciles the AcsIdentities its label selector matches (as Flux's
//! `--watch-label-selector` does), holds its own leader Lease, and keeps to its share of every
//! ACS resource's rate limits, so that the instances together never exceed them.

/// An instance's share of an ACS limit of `limit` calls per window, at `percent` (1..=100)
/// of it: rounded down, never below one call (an instance with no budget could not work),
/// so instances whose percentages add up to at most 100 together stay within the limit
/// whenever each share is at least one call.
pub fn budget(limit: u32, percent: u8) -> u32 {
    let percent = u64::from(percent.clamp(1, 100));
    let share = u64::from(limit) * percent / 100;
    u32::try_from(share).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_down_and_never_reach_zero() {
        let cases = [
            (1000, 100, 1000),
            (1000, 50, 500),
            (500, 33, 165),
            (1000, 1, 10),
            (20, 50, 10),
            (3, 50, 1),
            (1, 1, 1),
            (1000, 0, 10),
            (1000, 200, 1000),
            (u32::MAX, 100, u32::MAX),
        ];
        for (limit, percent, want) in cases {
            assert_eq!(budget(limit, percent), want, "{limit} at {percent} %");
        }
    }

    #[test]
    fn shares_that_add_up_to_the_whole_stay_within_it() {
        for limit in [20, 500, 1000] {
            for split in [[50, 50, 0], [33, 33, 34], [70, 20, 10], [90, 9, 1]] {
                let total: u32 = split
                    .iter()
                    .filter(|p| **p > 0)
                    .map(|p| budget(limit, *p))
                    .sum();
                assert!(total <= limit, "{limit} split {split:?}: {total}");
            }
        }
    }
}
