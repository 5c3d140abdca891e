//! Parsing of human-written rates (`10/minute`) and durations (`30s`).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use super::model::Rate;

/// Turn a spec [`Rate`] into a governor quota, or explain what is wrong.
pub fn quota(rate: &Rate) -> Result<Quota, String> {
    let (count, per) = rate.rate.split_once('/').ok_or_else(|| {
        format!(
            "`{}` is not a rate; write N/second, N/minute, N/hour or N/day",
            rate.rate
        )
    })?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{}`: the count must be a whole number ≥ 1", rate.rate))?;
    let count = NonZeroU32::new(count)
        .ok_or_else(|| format!("`{}`: the count must be at least 1", rate.rate))?;
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => {
            return Err(format!(
                "`{other}` is not a unit; use second, minute, hour or day"
            ));
        }
    };
    // One token is replenished every period/count; the bucket holds `burst`.
    let quota = Quota::with_period(period / count.get())
        .ok_or_else(|| format!("`{}` is too fast to represent", rate.rate))?;
    let burst = match rate.burst {
        None => count,
        Some(b) => NonZeroU32::new(b).ok_or_else(|| "burst must be at least 1".to_string())?,
    };
    Ok(quota.allow_burst(burst))
}

/// Parse a timeout such as `500ms`, `10s` or `2m`; must be within (0, 1h].
pub fn timeout(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 500ms, 10s or 2m"))?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!(
            "`{text}` is out of range; a timeout must be more than 0 and at most 1h"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(rate: &str, burst: Option<u32>) -> Rate {
        Rate {
            rate: rate.into(),
            burst,
        }
    }

    #[test]
    fn parses_rates() {
        let q = quota(&r("10/minute", None)).unwrap();
        assert_eq!(q.burst_size().get(), 10);
        assert_eq!(q.replenish_interval(), Duration::from_secs(6));
        let q = quota(&r("5/second", Some(1))).unwrap();
        assert_eq!(q.burst_size().get(), 1);
    }

    #[test]
    fn rejects_bad_rates() {
        assert!(
            quota(&r("ten/minute", None))
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            quota(&r("10/fortnight", None))
                .unwrap_err()
                .contains("not a unit")
        );
        assert!(
            quota(&r("0/second", None))
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(quota(&r("10", None)).unwrap_err().contains("not a rate"));
        assert!(
            quota(&r("1/second", Some(0)))
                .unwrap_err()
                .contains("burst")
        );
    }

    #[test]
    fn parses_timeouts() {
        assert_eq!(timeout("250ms").unwrap(), Duration::from_millis(250));
        assert!(timeout("0s").is_err());
        assert!(timeout("2h").is_err());
        assert!(timeout("soon").is_err());
    }
}
