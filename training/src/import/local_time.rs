//! Local wall-clock times to UTC, with the daylight-saving rules every adapter shares.
//!
//! Sources write local times without an offset, so twice a year a time is ambiguous (the hour
//! repeated at the autumn fall-back) or does not exist (the hour skipped in spring). A logger that
//! writes chronologically repeats the ambiguous hour: the first pass is the earlier offset, the
//! second pass comes after the first and so must take the later one. Times in the gap can only come
//! from a clock that did not change yet, so they are read with the offset before the change, which
//! shifts them forward by the gap.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// How a local time mapped to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalTimeKind {
    /// One instant has this local time.
    Unique,
    /// Two instants have it; the rule picked one.
    Ambiguous,
    /// No instant has it; it was shifted forward by the gap.
    Gap,
}

/// A local time resolved to an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResolvedTime {
    /// The instant.
    pub(crate) utc: DateTime<Utc>,
    /// How it was found.
    pub(crate) kind: LocalTimeKind,
}

/// Step and reach of the search for the offset before a gap; real gaps are at most a day (Samoa 2011).
const GAP_SEARCH_STEP_MINUTES: i64 = 15;
const GAP_SEARCH_STEPS: i64 = 4 * 49;

/// The instant of a local time in `timezone`. An ambiguous time takes the earlier offset unless that
/// instant is not after `previous` (the same lot's previous reading), then the later offset; a time
/// in a gap is read with the offset in force before the gap. `None` only if no offset is found
/// within two days before a gap, which no real time zone has.
pub(crate) fn resolve_local_time(
    timezone: Tz,
    local: NaiveDateTime,
    previous: Option<DateTime<Utc>>,
) -> Option<ResolvedTime> {
    match timezone.from_local_datetime(&local) {
        LocalResult::Single(instant) => Some(ResolvedTime {
            utc: instant.with_timezone(&Utc),
            kind: LocalTimeKind::Unique,
        }),
        LocalResult::Ambiguous(earlier, later) => {
            let earlier_utc = earlier.with_timezone(&Utc);
            let take_later = previous.is_some_and(|previous| earlier_utc <= previous);
            let utc = if take_later {
                later.with_timezone(&Utc)
            } else {
                earlier_utc
            };
            Some(ResolvedTime {
                utc,
                kind: LocalTimeKind::Ambiguous,
            })
        }
        LocalResult::None => {
            let offset_seconds = offset_before_gap(timezone, local)?;
            let utc = (local - Duration::seconds(i64::from(offset_seconds))).and_utc();
            Some(ResolvedTime {
                utc,
                kind: LocalTimeKind::Gap,
            })
        }
    }
}

/// The UTC offset, in seconds, of the last valid local time before `local`.
fn offset_before_gap(timezone: Tz, local: NaiveDateTime) -> Option<i32> {
    (1..=GAP_SEARCH_STEPS).find_map(|step| {
        let earlier = local - Duration::minutes(step * GAP_SEARCH_STEP_MINUTES);
        match timezone.from_local_datetime(&earlier) {
            LocalResult::Single(instant) => Some(instant.offset().fix().local_minus_utc()),
            // The latest instant with that local time is the one just before the gap.
            LocalResult::Ambiguous(_, later) => Some(later.offset().fix().local_minus_utc()),
            LocalResult::None => None,
        }
    })
}

/// The instant of local midnight starting `date` (shifted forward if midnight is in a gap).
pub(crate) fn local_midnight(timezone: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    resolve_local_time(timezone, date.and_time(chrono::NaiveTime::MIN), None)
        .map(|resolved| resolved.utc)
}

/// Counts of the daylight-saving rules, kept by an adapter while it resolves times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DstCounts {
    /// Ambiguous local times read (either offset).
    pub(crate) ambiguous: u64,
    /// Local times in a gap, shifted.
    pub(crate) gap: u64,
}

impl DstCounts {
    /// Counts one resolved time.
    pub(crate) fn record(&mut self, kind: LocalTimeKind) {
        match kind {
            LocalTimeKind::Unique => {}
            LocalTimeKind::Ambiguous => self.ambiguous += 1,
            LocalTimeKind::Gap => self.gap += 1,
        }
    }
}

/// Parses `YYYY-MM-DD HH:MM[:SS[.fff]]` (a `T` may replace the space) without allocating; the
/// Málaga file has 1.6 million of these.
pub(crate) fn parse_naive_datetime(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 16
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b' ' | b'T')
        || bytes[13] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0_u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)?;
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let rest = &bytes[16..];
    let (second, nanosecond) = match rest {
        [] => (0, 0),
        [b':', seconds @ ..] if seconds.len() >= 2 => {
            let second = number(17..19)?;
            let fraction = &seconds[2..];
            let nanosecond = match fraction {
                [] => 0,
                [b'.', digits @ ..] if !digits.is_empty() && digits.len() <= 9 => {
                    let value = number(20..20 + digits.len())?;
                    value * 10_u32.pow(9 - digits.len() as u32)
                }
                _ => return None,
            };
            (second, nanosecond)
        }
        _ => return None,
    };
    date.and_hms_nano_opt(hour, minute, second, nanosecond)
}

#[cfg(test)]
mod tests {
    use chrono_tz::Europe::London;

    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        parse_naive_datetime(text).expect("test times should parse")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        local(text).and_utc()
    }

    #[test]
    fn unique_times_take_their_only_offset() {
        let resolved =
            resolve_local_time(London, local("2016-07-01 12:00"), None).expect("resolves");
        assert_eq!(
            resolved,
            ResolvedTime {
                utc: utc("2016-07-01 11:00"),
                kind: LocalTimeKind::Unique
            }
        );
    }

    #[test]
    fn an_ambiguous_time_takes_the_earlier_offset_first_and_the_later_when_repeated() {
        // 30 Oct 2016: 02:00 BST became 01:00 GMT, so 01:30 happened at 00:30 and 01:30 UTC.
        let first = resolve_local_time(
            London,
            local("2016-10-30 01:30"),
            Some(utc("2016-10-30 00:00")),
        )
        .expect("resolves");
        assert_eq!(first.utc, utc("2016-10-30 00:30"));
        assert_eq!(first.kind, LocalTimeKind::Ambiguous);
        let repeated = resolve_local_time(London, local("2016-10-30 01:30"), Some(first.utc))
            .expect("resolves");
        assert_eq!(repeated.utc, utc("2016-10-30 01:30"));
        assert_eq!(repeated.kind, LocalTimeKind::Ambiguous);
    }

    #[test]
    fn an_earlier_ambiguous_time_after_the_fold_is_the_second_pass() {
        // A logger writing 01:45 (BST) then 01:15: the second can only be 01:15 GMT.
        let previous = resolve_local_time(London, local("2016-10-30 01:45"), None)
            .expect("resolves")
            .utc;
        let second = resolve_local_time(London, local("2016-10-30 01:15"), Some(previous))
            .expect("resolves");
        assert_eq!(second.utc, utc("2016-10-30 01:15"));
    }

    #[test]
    fn without_a_previous_reading_the_earlier_offset_wins() {
        let resolved =
            resolve_local_time(London, local("2016-10-30 01:30"), None).expect("resolves");
        assert_eq!(resolved.utc, utc("2016-10-30 00:30"));
    }

    #[test]
    fn a_time_in_the_spring_gap_is_shifted_forward_by_the_gap() {
        // 26 Mar 2017: 01:00 GMT became 02:00 BST; 01:30 does not exist and is read as 02:30 BST.
        let resolved =
            resolve_local_time(London, local("2017-03-26 01:30"), None).expect("resolves");
        assert_eq!(
            resolved,
            ResolvedTime {
                utc: utc("2017-03-26 01:30"),
                kind: LocalTimeKind::Gap
            }
        );
        assert_eq!(
            resolved.utc.with_timezone(&London).naive_local(),
            local("2017-03-26 02:30")
        );
    }

    #[test]
    fn a_day_long_gap_is_shifted_too() {
        // Samoa skipped 30 Dec 2011 entirely (UTC-10 to UTC+14).
        let resolved =
            resolve_local_time(chrono_tz::Pacific::Apia, local("2011-12-30 12:00"), None)
                .expect("resolves");
        assert_eq!(resolved.kind, LocalTimeKind::Gap);
        assert_eq!(resolved.utc, utc("2011-12-30 22:00"));
    }

    #[test]
    fn naive_times_parse_with_optional_seconds_and_fractions() {
        assert_eq!(
            local("2016-10-04 07:59:42"),
            utc("2016-10-04 07:59:42").naive_utc()
        );
        let expected = NaiveDate::from_ymd_opt(2023, 3, 23)
            .and_then(|date| date.and_hms_milli_opt(7, 46, 0, 250));
        assert_eq!(parse_naive_datetime("2023-03-23T07:46:00.25"), expected);
        assert_eq!(
            parse_naive_datetime("2023-03-23 07:46").map(|time| time.and_utc().timestamp() % 60),
            Some(0)
        );
        for bad in [
            "2023-03-23",
            "2023-3-23 07:46",
            "2023-03-23 07:46:5",
            "2023-02-30 07:46",
            "2023-03-23 25:00",
            "x",
        ] {
            assert_eq!(parse_naive_datetime(bad), None, "{bad}");
        }
    }
}
