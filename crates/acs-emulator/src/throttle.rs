//! ACS throttling: each operation may be called a limited number of times per fixed window;
//! calls over the limit are refused with 429 and a `Retry-After` of the seconds left in the
//! window. Time is passed in, so the windows are tested without sleeping.
//!
//! The defaults are the limits Microsoft publishes for the Identity API in the ACS
//! service-limits documentation
//! (<https://learn.microsoft.com/azure/communication-services/concepts/service-limits>), kept in
//! [`acs_client::Operation::acs_limit`]: per 30 s, 1000 creates, 1000 creates with a first
//! token (the page's `createUserAndToken`), 1000 token issues, 500 revocations and 500
//! deletes, each operation counted on its own. The page does not say whether a limit is per
//! resource or per subscription; the emulator is one resource, so its limits are its own.

use super::operation::Operation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Limits per operation and window; `enabled: false` lets everything through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleConfig {
    pub enabled: bool,
    pub window_seconds: u64,
    /// Calls allowed per window, by operation name.
    pub limits: BTreeMap<String, u32>,
}

impl Default for ThrottleConfig {
    /// The service's documented limits.
    fn default() -> Self {
        Self {
            enabled: true,
            window_seconds: DEFAULT_WINDOW.as_secs(),
            limits: Operation::ALL
                .into_iter()
                .map(|op| (op.as_str().to_string(), op.acs_limit()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleConfigError {
    #[error("throttle limit `{0}` is not of the form operation=count")]
    NotAPair(String),
    #[error(transparent)]
    UnknownOperation(#[from] super::operation::UnknownOperation),
    #[error("throttle limit for `{0}` is not a non-negative integer")]
    BadCount(String),
    #[error("throttle window must be at least one second")]
    ZeroWindow,
}

impl ThrottleConfig {
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// `off`, `default`, or `op=n,op=n` (operations not named keep their default limit).
    pub fn parse(spec: &str) -> Result<Self, ThrottleConfigError> {
        match spec.trim() {
            "off" => return Ok(Self::off()),
            "default" | "" => return Ok(Self::default()),
            _ => {}
        }
        let mut config = Self::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, count) = pair
                .split_once('=')
                .ok_or_else(|| ThrottleConfigError::NotAPair(pair.to_string()))?;
            let op = super::operation::parse(name)?;
            let count = count
                .trim()
                .parse()
                .map_err(|_| ThrottleConfigError::BadCount(op.as_str().to_string()))?;
            config.limits.insert(op.as_str().to_string(), count);
        }
        Ok(config)
    }

    /// Checks names and the window; fills in defaults for operations not named.
    pub(super) fn normalized(mut self) -> Result<Self, ThrottleConfigError> {
        if self.window_seconds == 0 {
            return Err(ThrottleConfigError::ZeroWindow);
        }
        let mut limits = Self::default().limits;
        for (name, count) in self.limits {
            let op = super::operation::parse(&name)?;
            limits.insert(op.as_str().to_string(), count);
        }
        self.limits = limits;
        Ok(self)
    }

    fn limit(&self, op: Operation) -> u32 {
        self.limits
            .get(op.as_str())
            .copied()
            .unwrap_or_else(|| op.acs_limit())
    }
}

/// Whether the emulator serves a call or answers it 429. Unlike the client's
/// [`acs_client::Admission`], nothing waits: a throttled call is refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleDecision {
    Admitted,
    Throttled { retry_after: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u32,
}

/// Fixed-window counters, one per operation.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    windows: HashMap<Operation, Window>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            windows: HashMap::new(),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Replaces the limits and starts fresh windows.
    pub fn reconfigure(&mut self, config: ThrottleConfig) {
        self.config = config;
        self.windows.clear();
    }

    /// Counts one call of `op` at `now`, or refuses it.
    pub fn admit(&mut self, op: Operation, now: Instant) -> ThrottleDecision {
        if !self.config.enabled {
            return ThrottleDecision::Admitted;
        }
        let length = Duration::from_secs(self.config.window_seconds.max(1));
        let limit = self.config.limit(op);
        let window = self.windows.entry(op).or_insert(Window {
            start: now,
            used: 0,
        });
        let elapsed = now.saturating_duration_since(window.start);
        if elapsed >= length {
            *window = Window {
                start: now,
                used: 0,
            };
        }
        if window.used < limit {
            window.used += 1;
            return ThrottleDecision::Admitted;
        }
        let left = length.saturating_sub(now.saturating_duration_since(window.start));
        ThrottleDecision::Throttled { retry_after: left }
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub fn retry_after_seconds(left: Duration) -> u64 {
    let whole = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(spec: &str) -> Throttle {
        Throttle::new(ThrottleConfig::parse(spec).unwrap())
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_with_time_left() {
        let mut throttle = limited("issueToken=3");
        let t0 = Instant::now();
        for i in 0..3 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(
                throttle.admit(Operation::IssueToken, at),
                ThrottleDecision::Admitted
            );
        }
        let at = t0 + Duration::from_millis(10_500);
        assert_eq!(
            throttle.admit(Operation::IssueToken, at),
            ThrottleDecision::Throttled {
                retry_after: Duration::from_millis(19_500)
            }
        );
    }

    #[test]
    fn a_new_window_starts_after_thirty_seconds() {
        let mut throttle = limited("revokeTokens=1");
        let t0 = Instant::now();
        assert_eq!(
            throttle.admit(Operation::RevokeTokens, t0),
            ThrottleDecision::Admitted
        );
        let almost = t0 + Duration::from_millis(29_999);
        assert!(matches!(
            throttle.admit(Operation::RevokeTokens, almost),
            ThrottleDecision::Throttled { .. }
        ));
        let next = t0 + DEFAULT_WINDOW;
        assert_eq!(
            throttle.admit(Operation::RevokeTokens, next),
            ThrottleDecision::Admitted
        );
    }

    #[test]
    fn operations_have_separate_windows() {
        let mut throttle = limited("createIdentity=1,createIdentityWithToken=1");
        let t0 = Instant::now();
        assert_eq!(
            throttle.admit(Operation::CreateIdentity, t0),
            ThrottleDecision::Admitted
        );
        assert_eq!(
            throttle.admit(Operation::CreateIdentityWithToken, t0),
            ThrottleDecision::Admitted
        );
        assert!(matches!(
            throttle.admit(Operation::CreateIdentity, t0),
            ThrottleDecision::Throttled { .. }
        ));
        assert_eq!(
            throttle.admit(Operation::IssueToken, t0),
            ThrottleDecision::Admitted
        );
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let mut throttle = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        let admitted = (0..1200)
            .filter(|_| throttle.admit(Operation::DeleteIdentity, t0) == ThrottleDecision::Admitted)
            .count();
        assert_eq!(admitted, 500);
        let admitted = (0..1200)
            .filter(|_| throttle.admit(Operation::IssueToken, t0) == ThrottleDecision::Admitted)
            .count();
        assert_eq!(admitted, 1000);
    }

    #[test]
    fn off_admits_everything_and_reconfigure_resets() {
        let mut throttle = limited("issueToken=0");
        let t0 = Instant::now();
        assert!(matches!(
            throttle.admit(Operation::IssueToken, t0),
            ThrottleDecision::Throttled { .. }
        ));
        throttle.reconfigure(ThrottleConfig::off());
        for _ in 0..5000 {
            assert_eq!(
                throttle.admit(Operation::IssueToken, t0),
                ThrottleDecision::Admitted
            );
        }
    }

    #[test]
    fn parse_rejects_nonsense() {
        assert!(ThrottleConfig::parse("issueToken").is_err());
        assert!(ThrottleConfig::parse("issue=3").is_err());
        assert!(ThrottleConfig::parse("issueToken=-1").is_err());
        assert_eq!(ThrottleConfig::parse("off").unwrap(), ThrottleConfig::off());
        assert_eq!(
            ThrottleConfig::parse("default").unwrap(),
            ThrottleConfig::default()
        );
        let config = ThrottleConfig {
            window_seconds: 0,
            ..ThrottleConfig::default()
        };
        assert_eq!(config.normalized(), Err(ThrottleConfigError::ZeroWindow));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(19_500)), 20);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
