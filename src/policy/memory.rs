//! When to give freed memory back to the system ([`crate::memory`]).
//!
//! glibc's allocator keeps what a burst of work freed (a start's lists, a re-list, a wave of
//! renewals) inside the process, where the resident size still counts it. Handing it back
//! walks the heap, so it is done once a burst is over, not during one, and not for a trickle.

/// Objects and reconciles since the last release below which nothing is handed back.
pub const MIN_CHURN: u64 = 1_000;

/// Whether to release now, given the work since the last release and in the period just
/// ended: after enough work, once a period saw less than a tenth of it (the burst is over;
/// a steady stream of work still gets a release every ten periods' worth).
pub fn release(since_release: u64, last_period: u64) -> bool {
    since_release >= MIN_CHURN && last_period.saturating_mul(10) < since_release
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_once_a_burst_is_over() {
        let cases = [
            // (since the last release, in the last period, release?)
            (0, 0, false),
            (999, 0, false),          // too little to be worth a walk of the heap
            (1_000, 0, true),         // a burst, then a quiet period
            (100_000, 0, true),       // a start on 100,000, over
            (100_000, 60_000, false), // still under way
            (100_000, 9_999, true),   // its tail
            (100_000, 10_000, false),
            (1_000, 99, true),   // a trickle after a burst
            (1_000, 100, false), // a steady stream: not yet ten periods' worth
            (u64::MAX, u64::MAX, false),
        ];
        for (since, last, expected) in cases {
            assert_eq!(release(since, last), expected, "{since}, {last}");
        }
    }
}
