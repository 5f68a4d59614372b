//! The calendar dimension: public holidays per country and region.
//!
//! Holidays come from `data/holidays.csv`, generated from the maintained python-holidays package by
//! `scripts/gen_holidays.py` (version and years in `data/regions.txt`) and embedded in the binary, so
//! lookups need no network. (The Rust ports of python-holidays were measured and refused: the one with
//! subdivisions pulls an HTTP client with OpenSSL and a tokio runtime even in offline mode; the other
//! stops at 2023 without subdivisions.) A region is `CC` or `CC-SUB` in ISO 3166 terms: `GB-ENG`,
//! `ES-AN`, `AU-VIC`, `US`. Regenerate the data to add countries.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use chrono::{Datelike, Days, NaiveDate, Weekday};

use crate::rows::CalendarRow;

/// Distances to holidays are capped here: "no holiday within a year".
pub const MAX_HOLIDAY_DISTANCE_DAYS: i32 = 366;

/// Years the embedded holiday data covers.
pub const COVERED_YEARS: RangeInclusive<i32> = 2000..=2050;

const HOLIDAYS_CSV: &str = include_str!("../data/holidays.csv");
const REGIONS_TXT: &str = include_str!("../data/regions.txt");

/// Errors of the calendar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// The region code is not `CC` or `CC-SUB`.
    #[error(
        "holiday region {region:?} is not of the form CC or CC-SUB (ISO 3166, e.g. GB-ENG, ES-AN, AU-VIC)"
    )]
    MalformedRegion {
        /// The code given.
        region: String,
    },
    /// The region is not in the embedded data.
    #[error("no holiday data for region {region:?}; known regions: {known}")]
    UnknownRegion {
        /// The code given.
        region: String,
        /// The codes that are known.
        known: String,
    },
}

/// A holiday region known to the embedded data: a country, optionally narrowed to a subdivision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HolidayRegion {
    code: String,
}

impl HolidayRegion {
    /// The code, e.g. `GB-ENG`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The country part, e.g. `GB`.
    pub fn country(&self) -> &str {
        self.code
            .split_once('-')
            .map_or(self.code.as_str(), |(country, _)| country)
    }

    /// Every region the embedded data knows.
    pub fn known() -> impl Iterator<Item = &'static str> {
        REGIONS_TXT
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
    }
}

impl fmt::Display for HolidayRegion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.code)
    }
}

impl FromStr for HolidayRegion {
    type Err = CalendarError;

    fn from_str(region: &str) -> Result<Self, Self::Err> {
        let (country, subdivision) = match region.split_once('-') {
            Some((country, subdivision)) => (country, Some(subdivision)),
            None => (region, None),
        };
        let is_code =
            |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_alphanumeric());
        let well_formed = country.len() == 2
            && country.bytes().all(|byte| byte.is_ascii_uppercase())
            && subdivision.is_none_or(is_code);
        if !well_formed {
            return Err(CalendarError::MalformedRegion {
                region: region.to_owned(),
            });
        }
        if !HolidayRegion::known().any(|known| known == region) {
            let known = HolidayRegion::known().collect::<Vec<_>>().join(", ");
            return Err(CalendarError::UnknownRegion {
                region: region.to_owned(),
                known,
            });
        }
        Ok(HolidayRegion {
            code: region.to_owned(),
        })
    }
}

/// The public holidays of one region.
#[derive(Debug, Clone)]
pub struct HolidayCalendar {
    region: String,
    holidays: BTreeMap<NaiveDate, String>,
}

impl HolidayCalendar {
    /// Loads the holidays of a region: the country's national holidays plus the subdivision's own.
    pub fn load(region: &HolidayRegion) -> Self {
        let country = region.country();
        let mut holidays = BTreeMap::new();
        for line in HOLIDAYS_CSV.lines().skip(1) {
            let mut fields = line.splitn(3, ',');
            let (Some(row_region), Some(date), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if row_region != country && row_region != region.code() {
                continue;
            }
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .expect("the embedded holiday dates should parse");
            holidays
                .entry(date)
                .or_insert_with(|| name.trim_matches('"').to_owned());
        }
        HolidayCalendar {
            region: region.code().to_owned(),
            holidays,
        }
    }

    /// A calendar from an explicit list, for tests and for regions the data does not cover.
    pub fn from_dates(
        region: &str,
        holidays: impl IntoIterator<Item = (NaiveDate, String)>,
    ) -> Self {
        HolidayCalendar {
            region: region.to_owned(),
            holidays: holidays.into_iter().collect(),
        }
    }

    /// The region code.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The holiday's name, if `date` is a public holiday.
    pub fn holiday(&self, date: NaiveDate) -> Option<&str> {
        self.holidays.get(&date).map(String::as_str)
    }

    /// Whether `date` is a public holiday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        self.holidays.contains_key(&date)
    }

    /// Whether `date` is a Saturday, Sunday or public holiday.
    pub fn is_day_off(&self, date: NaiveDate) -> bool {
        is_weekend(date) || self.is_holiday(date)
    }

    /// Days until the next holiday (0 on a holiday), capped at [`MAX_HOLIDAY_DISTANCE_DAYS`].
    pub fn days_to_holiday(&self, date: NaiveDate) -> i32 {
        self.holidays
            .range(date..)
            .next()
            .map_or(MAX_HOLIDAY_DISTANCE_DAYS, |(holiday, _)| {
                ((*holiday - date).num_days() as i32).min(MAX_HOLIDAY_DISTANCE_DAYS)
            })
    }

    /// Days since the previous holiday (0 on a holiday), capped at [`MAX_HOLIDAY_DISTANCE_DAYS`].
    pub fn days_from_holiday(&self, date: NaiveDate) -> i32 {
        self.holidays
            .range(..=date)
            .next_back()
            .map_or(MAX_HOLIDAY_DISTANCE_DAYS, |(holiday, _)| {
                ((date - *holiday).num_days() as i32).min(MAX_HOLIDAY_DISTANCE_DAYS)
            })
    }

    /// The calendar rows for every date in `[first, last]`.
    pub fn rows(&self, first: NaiveDate, last: NaiveDate) -> Vec<CalendarRow> {
        let mut rows = Vec::new();
        let mut date = first;
        while date <= last {
            rows.push(CalendarRow {
                date,
                region: self.region.clone(),
                day_of_week: date.weekday().number_from_monday() as i32,
                is_weekend: is_weekend(date),
                holiday_name: self.holiday(date).map(str::to_owned),
                days_to_holiday: self.days_to_holiday(date),
                days_from_holiday: self.days_from_holiday(date),
            });
            date = date + Days::new(1);
        }
        rows
    }
}

/// Saturday or Sunday.
pub fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).expect("test dates should be valid")
    }

    #[test]
    fn the_embedded_data_covers_the_promised_years() {
        let calendar = HolidayCalendar::load(&"GB-ENG".parse().expect("GB-ENG should parse"));
        for year in [*COVERED_YEARS.start(), 2026, *COVERED_YEARS.end()] {
            let new_year = NaiveDate::from_ymd_opt(year, 1, 1).expect("valid");
            let observed = (0..3).any(|offset| calendar.is_holiday(new_year + Days::new(offset)));
            assert!(observed, "no New Year holiday in {year}");
        }
    }

    #[test]
    fn england_has_its_bank_holidays() {
        let calendar = HolidayCalendar::load(&"GB-ENG".parse().expect("GB-ENG should parse"));
        assert!(calendar.is_holiday(date(2016, 12, 26)), "Boxing Day");
        assert!(
            calendar.is_holiday(date(2016, 12, 27)),
            "Christmas Day (observed)"
        );
        assert!(
            calendar.is_holiday(date(2016, 8, 29)),
            "Late Summer Bank Holiday"
        );
        assert!(!calendar.is_holiday(date(2016, 12, 19)));
        assert_eq!(calendar.days_to_holiday(date(2016, 12, 19)), 6);
        assert_eq!(calendar.days_from_holiday(date(2016, 12, 27)), 0);
    }

    #[test]
    fn andalusia_adds_its_regional_days_to_spain() {
        let calendar = HolidayCalendar::load(&"ES-AN".parse().expect("ES-AN should parse"));
        assert!(
            calendar.is_holiday(date(2025, 10, 12)) || calendar.is_holiday(date(2025, 10, 13)),
            "national day"
        );
        assert!(
            calendar.is_holiday(date(2016, 2, 29)),
            "Monday after Andalusia Day"
        );
    }

    #[test]
    fn victoria_has_melbourne_cup_day() {
        let calendar = HolidayCalendar::load(&"AU-VIC".parse().expect("AU-VIC should parse"));
        assert_eq!(
            calendar.holiday(date(2016, 11, 1)),
            Some("Melbourne Cup Day")
        );
        assert!(
            calendar.is_holiday(date(2014, 6, 9)),
            "Queen's Birthday 2014"
        );
    }

    #[test]
    fn bad_regions_are_refused_with_the_reason() {
        assert!(matches!(
            "england".parse::<HolidayRegion>(),
            Err(CalendarError::MalformedRegion { .. })
        ));
        assert!(matches!(
            "gb".parse::<HolidayRegion>(),
            Err(CalendarError::MalformedRegion { .. })
        ));
        assert!(matches!(
            "QQ".parse::<HolidayRegion>(),
            Err(CalendarError::UnknownRegion { .. })
        ));
        assert!(matches!(
            "GB-XYZ".parse::<HolidayRegion>(),
            Err(CalendarError::UnknownRegion { .. })
        ));
        let error = "GB-XYZ".parse::<HolidayRegion>().expect_err("unknown");
        assert!(
            error.to_string().contains("GB-ENG"),
            "the error lists the known regions: {error}"
        );
    }

    #[test]
    fn rows_cover_every_date_with_weekday_and_weekend() {
        let calendar =
            HolidayCalendar::from_dates("XX", [(date(2024, 1, 1), "New Year".to_owned())]);
        let rows = calendar.rows(date(2023, 12, 30), date(2024, 1, 2));
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].day_of_week, 6);
        assert!(rows[0].is_weekend && rows[1].is_weekend && !rows[2].is_weekend);
        assert_eq!(rows[2].holiday_name.as_deref(), Some("New Year"));
        assert_eq!(rows[0].days_to_holiday, 2);
        assert_eq!(rows[3].days_from_holiday, 1);
        assert_eq!(rows[0].days_from_holiday, MAX_HOLIDAY_DISTANCE_DAYS);
    }
}
