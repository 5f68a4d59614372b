//! Local civil time in a lot's time zone, in one place: where a local day starts and ends, the local
//! date of an instant, and how a wall-clock time read from a source becomes an instant.
//!
//! Days are not 24 hours long. A daylight-saving change makes a day of 23 or 25 hours (23.5 and 24.5
//! on Lord Howe Island, whose clocks move by half an hour); some zones change at midnight, so a day
//! can start at 01:00 (Chile's spring) or its first hour can follow a repeated hour of the day before
//! (Chile's autumn); and a zone that moved across the date line skipped a whole day (Samoa's 30
//! December 2011) or repeated one. Every question about days therefore goes through
//! [`day_start`]: *a day starts at the first instant whose local date is that day or later*. That
//! one rule answers each case above, gives a skipped day zero length (its start is the next day's
//! start), and keeps day starts ordered, so `[day_start(d), day_start(d + 1))` are the instants of
//! day `d` and partition the time line.
//!
//! Sources write local times without an offset, so twice a year a time is ambiguous (the hour
//! repeated at the autumn fall-back) or does not exist (the hour skipped in spring). A logger that
//! writes chronologically repeats the ambiguous hour: the first pass is the earlier offset, the
//! second pass comes after the first and so must take the later one. Times in the gap can only come
//! from a clock that did not change yet, so they are read with the offset before the change, which
//! shifts them forward by the gap ([`resolve_local_time`]).

use chrono::{
    DateTime, Days, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Utc,
};
use chrono_tz::Tz;

/// The first instant of local day `date` in `timezone`: the earliest instant whose local date is
/// `date` or later. Local midnight where it exists once; its first occurrence where it is repeated;
/// the end of the gap where midnight is skipped (the day starts at 01:00, say); the next day's start
/// for a day the zone skipped. `None` only outside chrono's range of dates.
pub fn day_start(timezone: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = date.and_time(NaiveTime::MIN);
    if let Some(instant) = timezone.from_local_datetime(&midnight).earliest() {
        return Some(instant.with_timezone(&Utc));
    }
    // Midnight is in a gap: local time moves forward across it, so search the instants between a
    // day before and two days after midnight read as UTC (real offsets are within -12 h and +14 h,
    // and a gap lasts at most a day) for the first one whose local time is not before midnight.
    let reaches = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0)
            .is_some_and(|instant| instant.with_timezone(&timezone).naive_local() >= midnight)
    };
    let as_utc = midnight.and_utc().timestamp();
    let (mut low, mut high) = (as_utc - 86_400, as_utc + 2 * 86_400);
    if reaches(low) || !reaches(high) {
        return None;
    }
    // Invariant: `low` does not reach midnight, `high` does.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if reaches(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    DateTime::from_timestamp(high, 0)
}

/// [`day_start`] as Unix milliseconds; `i64::MIN` / `i64::MAX` for dates before / after chrono's
/// range (so ranges built from it stay ordered).
pub fn day_start_ms(timezone: Tz, date: NaiveDate) -> i64 {
    day_start(timezone, date).map_or(
        if date < NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN) {
            i64::MIN
        } else {
            i64::MAX
        },
        |instant| instant.timestamp_millis(),
    )
}

/// The first instant after local day `date` (the next day's [`day_start_ms`]).
pub fn day_end_ms(timezone: Tz, date: NaiveDate) -> i64 {
    date.checked_add_days(Days::new(1))
        .map_or(i64::MAX, |next| day_start_ms(timezone, next))
}

/// The local date of an instant (Unix milliseconds); `None` outside chrono's range.
pub fn local_date(timezone: Tz, instant_ms: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(instant_ms)
        .map(|instant| instant.with_timezone(&timezone).date_naive())
}

/// The start of the local day holding an instant (Unix milliseconds); `None` outside chrono's range.
pub fn start_of_day_ms(timezone: Tz, instant_ms: i64) -> Option<i64> {
    local_date(timezone, instant_ms).map(|date| day_start_ms(timezone, date))
}

/// How a local time mapped to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalTimeKind {
    /// One instant has this local time.
    Unique,
    /// Two instants have it; the rule picked one.
    Ambiguous,
    /// No instant has it; it was shifted forward by the gap.
    Gap,
}

/// A local time resolved to an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTime {
    /// The instant.
    pub utc: DateTime<Utc>,
    /// How it was found.
    pub kind: LocalTimeKind,
}

/// Step and reach of the search for the offset before a gap; real gaps are at most a day (Samoa 2011).
const GAP_SEARCH_STEP_MINUTES: i64 = 15;
const GAP_SEARCH_STEPS: i64 = 4 * 49;

/// The instant of a local time in `timezone`. An ambiguous time takes the earlier offset unless that
/// instant is not after `previous` (the same lot's previous reading), then the later offset; a time
/// in a gap is read with the offset in force before the gap. `None` only if no offset is found
/// within two days before a gap, which no real time zone has.
pub fn resolve_local_time(
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

/// Counts of the daylight-saving rules, kept by an adapter while it resolves times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DstCounts {
    /// Ambiguous local times read (either offset).
    pub ambiguous: u64,
    /// Local times in a gap, shifted.
    pub gap: u64,
}

impl DstCounts {
    /// Counts one resolved time.
    pub fn record(&mut self, kind: LocalTimeKind) {
        match kind {
            LocalTimeKind::Unique => {}
            LocalTimeKind::Ambiguous => self.ambiguous += 1,
            LocalTimeKind::Gap => self.gap += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;
    use chrono_tz::Europe::London;
    use proptest::prelude::*;

    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("test times should parse")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        local(text).and_utc()
    }

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
    }

    /// Length of local day `date`, hours.
    fn hours(timezone: Tz, date: NaiveDate) -> f64 {
        (day_end_ms(timezone, date) - day_start_ms(timezone, date)) as f64 / 3_600_000.0
    }

    #[test]
    fn samoa_skipped_30_december_2011_and_it_has_no_instant() {
        let apia = chrono_tz::Pacific::Apia;
        // 29 Dec 23:59:59 at UTC-10 was followed by 31 Dec 00:00 at UTC+14 (30 Dec 10:00 UTC).
        let skipped = date(2011, 12, 30);
        assert_eq!(day_start(apia, skipped), Some(utc("2011-12-30 10:00")));
        assert_eq!(
            day_start(apia, skipped),
            day_start(apia, date(2011, 12, 31))
        );
        assert_eq!(hours(apia, skipped), 0.0);
        assert_eq!(hours(apia, date(2011, 12, 29)), 24.0);
        assert_eq!(hours(apia, date(2011, 12, 31)), 24.0);
        assert_eq!(
            local_date(apia, day_start_ms(apia, skipped)),
            Some(date(2011, 12, 31))
        );
        assert_eq!(
            local_date(apia, day_start_ms(apia, skipped) - 1),
            Some(date(2011, 12, 29))
        );
    }

    #[test]
    fn lord_howe_moves_its_clocks_by_half_an_hour() {
        let lord_howe = chrono_tz::Australia::Lord_Howe;
        // 7 Apr 2024 02:00 (+11) became 01:30 (+10:30); 6 Oct 2024 02:00 (+10:30) became 02:30.
        assert_eq!(hours(lord_howe, date(2024, 4, 7)), 24.5);
        assert_eq!(hours(lord_howe, date(2024, 10, 6)), 23.5);
        assert_eq!(hours(lord_howe, date(2024, 10, 7)), 24.0);
        assert_eq!(
            day_start(lord_howe, date(2024, 4, 7)),
            Some(utc("2024-04-06 13:00"))
        );
        assert_eq!(
            day_start(lord_howe, date(2024, 4, 8)),
            Some(utc("2024-04-07 13:30"))
        );
    }

    #[test]
    fn southern_fall_back_and_spring_forward_at_midnight_in_chile() {
        let santiago = chrono_tz::America::Santiago;
        // Autumn: 7 Apr 2024 00:00 (-03) became 6 Apr 23:00 (-04): Saturday has 25 hours and
        // Sunday starts at the one midnight that follows the repeated hour.
        assert_eq!(hours(santiago, date(2024, 4, 6)), 25.0);
        assert_eq!(
            day_start(santiago, date(2024, 4, 7)),
            Some(utc("2024-04-07 04:00"))
        );
        // Spring: 8 Sep 2024 00:00 (-04) became 01:00 (-03): midnight does not exist and Sunday
        // starts at 01:00, 23 hours long.
        let spring = date(2024, 9, 8);
        let start = day_start(santiago, spring).expect("in range");
        assert_eq!(start, utc("2024-09-08 04:00"));
        assert_eq!(start.with_timezone(&santiago).hour(), 1);
        assert_eq!(hours(santiago, spring), 23.0);
        // Sydney's autumn change at 03:00: a 25-hour Sunday.
        assert_eq!(hours(chrono_tz::Australia::Sydney, date(2024, 4, 7)), 25.0);
    }

    #[test]
    fn london_days_and_dates() {
        assert_eq!(hours(London, date(2017, 3, 26)), 23.0);
        assert_eq!(hours(London, date(2016, 10, 30)), 25.0);
        assert_eq!(
            day_start_ms(London, date(2016, 7, 1)),
            utc("2016-06-30 23:00").timestamp_millis()
        );
        assert_eq!(
            start_of_day_ms(London, utc("2016-07-01 22:59").timestamp_millis()),
            Some(utc("2016-06-30 23:00").timestamp_millis())
        );
        assert_eq!(
            local_date(London, utc("2016-07-01 23:00").timestamp_millis()),
            Some(date(2016, 7, 2))
        );
    }

    /// Every day from 1970 to 2040 in every zone, each start checked against both neighbours: the
    /// days a midnight gap or a skipped day touches are too rare for random dates to find.
    #[test]
    fn every_day_of_every_zone_since_1970_starts_once_and_in_order() {
        let (first, last) = (date(1970, 1, 1), date(2040, 12, 31));
        let mut midnight_gaps = 0;
        for timezone in chrono_tz::TZ_VARIANTS {
            let mut start = day_start_ms(timezone, first);
            let mut day = first;
            while day <= last {
                let next = day + Days::new(1);
                let end = day_start_ms(timezone, next);
                assert!(
                    start <= end && end - start <= 48 * 3_600_000,
                    "{timezone} {day}"
                );
                let on = local_date(timezone, start).expect("in range");
                assert!(
                    on == day || (on > day && start == end),
                    "{timezone} {day}: {on}"
                );
                let before = local_date(timezone, start - 1).expect("in range");
                assert!(before < day, "{timezone} {day}: before is {before}");
                if timezone
                    .from_local_datetime(&day.and_time(NaiveTime::MIN))
                    .earliest()
                    .is_none()
                {
                    midnight_gaps += 1;
                }
                (start, day) = (end, next);
            }
        }
        // Chile, Brazil, Paraguay, Cuba, Lebanon, ... changed their clocks at midnight for decades.
        assert!(
            midnight_gaps > 100,
            "{midnight_gaps} days without a midnight"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Over every zone of the tz database and any date from 1900 to 2100: day starts are
        /// ordered, a day is between 0 and 48 hours long, its start has its date (or a later one,
        /// for a skipped day), and the instant before it belongs to an earlier date.
        #[test]
        fn every_zone_partitions_time_into_days(
            zone in 0..chrono_tz::TZ_VARIANTS.len(),
            day in 0_i64..73_000,
        ) {
            let timezone = chrono_tz::TZ_VARIANTS[zone];
            let date = date(1900, 1, 1) + Duration::days(day);
            let start = day_start_ms(timezone, date);
            let end = day_end_ms(timezone, date);
            prop_assert!(start <= end, "{timezone} {date}");
            prop_assert!(end - start <= 48 * 3_600_000, "{timezone} {date}");
            let first = local_date(timezone, start).expect("in range");
            prop_assert!(first >= date, "{timezone} {date}: starts on {first}");
            prop_assert!(first == date || start == end, "{timezone} {date}: starts on {first}");
            let before = local_date(timezone, start - 1).expect("in range");
            prop_assert!(before < date, "{timezone} {date}: the instant before is on {before}");
        }
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
}
