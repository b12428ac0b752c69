//! Reconnect delays: exponential, capped, with jitter so that clients dropped together (a server
//! restart) do not all come back in the same instant.

use std::time::Duration;

/// Exponential backoff between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The base delay of the first retry.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry): a random point in the
    /// upper half of `min * 2^(attempt-1)`, capped at `max` ("equal jitter": never near zero, so
    /// a flapping server is not hammered, yet spread out).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        let ceiling = self.min.saturating_mul(doubling).min(self.max);
        let half = ceiling / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 { 0 } else { random_u64() % nanos };
        half + Duration::from_nanos(jitter)
    }
}

/// A random number from the operating system. Falls back to the clock when the OS has none to
/// give: jitter and id prefixes need variety, not secrecy.
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    /// Delays grow by doubling, stay within [ceiling/2, ceiling] and never pass max.
    #[test]
    fn delays_double_with_jitter_and_cap() {
        let backoff = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff.delay(40);
            assert!(late >= Duration::from_secs(1) && late <= Duration::from_secs(2));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff.delay(5)).collect();
        assert!(spread.len() > 1, "jitter must vary the delay");
    }
}
