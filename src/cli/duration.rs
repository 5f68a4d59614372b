//! Durations on the command line (`--horizons 15m,1h,24h`, `query --in 45m`), read by one maintained
//! parser (humantime: `90s`, `45m`, `1h30m`, `2h 30m`, `1.5h`, `7d`, `1w`), with the two shapes the flags need.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A positive duration: `45m`, `2h`, `90s`, `1h30m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let trimmed = text.trim();
    let duration = humantime::parse_duration(trimmed).with_context(|| {
        format!("{text:?} is not a duration: write e.g. 45m, 2h, 90s, 1h30m or 7d")
    })?;
    if duration.is_zero() {
        bail!("{text:?} is zero; give a positive duration");
    }
    Ok(duration)
}

/// A positive whole number of minutes: a duration (`15m`, `2h`, `7d`) or a bare number of minutes
/// (`45`).
pub fn parse_minutes(text: &str) -> Result<u32> {
    let trimmed = text.trim();
    let duration = match trimmed.parse::<u64>() {
        Ok(minutes) => Duration::from_secs(minutes.saturating_mul(60)),
        Err(_) => parse_duration(trimmed)?,
    };
    if duration.is_zero() || duration.subsec_nanos() != 0 || duration.as_secs() % 60 != 0 {
        bail!("{text:?} is not a positive whole number of minutes");
    }
    u32::try_from(duration.as_secs() / 60).with_context(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        let cases = [
            ("45m", 45 * 60),
            ("2h", 7_200),
            ("90s", 90),
            ("1h30m", 5_400),
            ("1h 0m 5s", 3_605),
            (" 10m ", 600),
            ("1d", 86_400),
            ("1.5h", 5_400),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text).expect("a valid duration"),
                Duration::from_secs(seconds),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_are_errors_not_panics() {
        for text in [
            "",
            "45",
            "m",
            "-5m",
            "0m",
            "1,5h",
            "99999999999999999999s",
            "9999999999999999999999h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn minutes_take_units_or_a_bare_number() {
        assert_eq!(parse_minutes("15m").ok(), Some(15));
        assert_eq!(parse_minutes("2h").ok(), Some(120));
        assert_eq!(parse_minutes("7d").ok(), Some(10_080));
        assert_eq!(parse_minutes("1w").ok(), Some(10_080));
        assert_eq!(parse_minutes("45").ok(), Some(45));
        for text in ["h", "0", "90s", "30s", "", "99999999999999"] {
            assert!(parse_minutes(text).is_err(), "{text:?} should be refused");
        }
    }
}
