//! Simulation parameters: a builder, checked once before any work starts.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use super::demand::LotKind;
use parkcast_features::calendar::{COVERED_YEARS, CalendarError, HolidayCalendar, HolidayRegion};

/// Why parameters were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A numeric parameter is outside its range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
        /// The value given.
        value: f64,
    },
    /// The heartbeat must be shorter than the silence limit, or every slot would look unknown.
    #[error(
        "silence limit ({silence_minutes} min) must be longer than the heartbeat interval ({heartbeat_minutes} min)"
    )]
    SilenceShorterThanHeartbeat {
        /// Heartbeat interval.
        heartbeat_minutes: u32,
        /// Silence limit.
        silence_minutes: u32,
    },
    /// The occupancy interval must divide a day.
    #[error("occupancy interval {interval_minutes} min must divide 1440 (a day)")]
    IntervalNotDividingDay {
        /// The interval.
        interval_minutes: u32,
    },
    /// The simulated dates lie outside the years the holiday data covers.
    #[error(
        "year {year} is outside the holiday data (2000-2050); choose another --start or fewer --days"
    )]
    OutsideHolidayData {
        /// The first year outside.
        year: i32,
    },
    /// The holiday region is not known.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
}

/// Hyperparameters of the city simulator (linfa style: build, then [`SimulationParams::check`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationParams {
    /// Seed of every random draw: same seed, same city, same files.
    pub seed: u64,
    /// Number of lots.
    pub lots: u32,
    /// Number of days simulated.
    pub days: u32,
    /// First simulated local date.
    pub start_date: NaiveDate,
    /// Time zone of the city.
    pub timezone: Tz,
    /// Holiday region of the city (ISO 3166 `CC-SUB`).
    pub holiday_region: String,
    /// City name, for the zone dimension.
    pub city: String,
    /// Centre of the city, WGS84 (lat, lon).
    pub centre: (f64, f64),
    /// Interval of the derived `fact_lot_occupancy`, minutes.
    pub occupancy_interval_minutes: u32,
    /// Period of sensor heartbeats, minutes. Field sensors (LoRaWAN, NB-IoT) send one every
    /// 1-6 h to save battery; status changes are sent at once.
    pub heartbeat_minutes: u32,
    /// A slot silent for longer than this is unknown.
    pub silence_minutes: u32,
    /// Probability that a reading reaches the backend late (buffered by a gateway: 2-45 min).
    pub late_probability: f64,
    /// Probability that a reading is delivered twice.
    pub duplicate_probability: f64,
    /// Expected sensor outages (no readings, 1-12 h) per slot per 100 days.
    pub outages_per_slot_per_100_days: f64,
    /// Expected stuck-sensor episodes (one value reported for 1-4 days) per slot per 100 days.
    pub stuck_per_slot_per_100_days: f64,
    /// Key of the PII hashes (a real deployment passes its own secret).
    pub pii_key: String,
    /// Lasting changes of one lot's demand (a new office block, roadworks): from a local date on,
    /// the lot's arrivals are scaled. A planner's what-if, and the regime shift the live-quality
    /// tests need.
    pub demand_shifts: Vec<DemandShift>,
    /// Price changes of every tariff from a local date on (the operational store's tariffs get a
    /// new validity range; a stay is charged at the price in force when it began).
    pub tariff_changes: Vec<TariffChange>,
}

/// The tariffs' prices (of every lot, or of one kind of lot) multiplied by `factor` from a local
/// date on (rounded to 10 cents). Demand answers with [`super::demand::PRICE_ELASTICITY`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TariffChange {
    /// The first local date with the new prices.
    pub from: NaiveDate,
    /// Prices are multiplied by this.
    pub factor: f64,
    /// The kind of lot whose prices change; `None`: every lot's.
    pub kind: Option<LotKind>,
}

impl TariffChange {
    /// Whether the change applies to a lot of `kind` on local date `date`.
    pub fn applies(&self, kind: LotKind, date: NaiveDate) -> bool {
        date >= self.from && self.kind.is_none_or(|only| only == kind)
    }
}

impl std::str::FromStr for TariffChange {
    type Err = String;

    /// `DATE:FACTOR[:KIND]`, as `2025-10-01:1.2` or `2025-10-01:1.3:street_zone`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(':');
        let (Some(from), Some(factor), kind, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{text:?} is not DATE:FACTOR[:KIND] (as 2025-10-01:1.2 or 2025-10-01:1.3:street_zone)"
            ));
        };
        let (from, factor) = date_and_factor(from, factor)?;
        let kind = kind
            .map(|name| {
                LotKind::from_name(name).ok_or_else(|| {
                    format!(
                        "{name:?} is not a kind of lot ({})",
                        LotKind::ALL.map(LotKind::name).join(", ")
                    )
                })
            })
            .transpose()?;
        Ok(TariffChange { from, factor, kind })
    }
}

/// A lasting change of one lot's demand from a local date on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandShift {
    /// The lot's index (`sim:lot0003` is 3).
    pub lot: u32,
    /// The first local date with the new demand.
    pub from: NaiveDate,
    /// Arrivals are multiplied by this (2.0: doubled; 0.5: halved).
    pub factor: f64,
}

impl std::str::FromStr for DemandShift {
    type Err = String;

    /// `LOT:DATE:FACTOR`, as `3:2025-10-06:2`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(':');
        let (Some(lot), Some(from), Some(factor), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{text:?} is not LOT:DATE:FACTOR (as 3:2025-10-06:2)"
            ));
        };
        let (from, factor) = date_and_factor(from, factor)?;
        Ok(DemandShift {
            lot: lot
                .parse()
                .map_err(|_| format!("{lot:?} is not a lot index"))?,
            from,
            factor,
        })
    }
}

/// The `DATE:FACTOR` tail of a change given on the command line.
fn date_and_factor(from: &str, factor: &str) -> Result<(NaiveDate, f64), String> {
    Ok((
        from.parse()
            .map_err(|_| format!("{from:?} is not a date (YYYY-MM-DD)"))?,
        factor
            .parse()
            .map_err(|_| format!("{factor:?} is not a number"))?,
    ))
}

impl Default for SimulationParams {
    fn default() -> Self {
        SimulationParams {
            seed: 42,
            lots: 50,
            days: 90,
            start_date: NaiveDate::from_ymd_opt(2025, 9, 1)
                .expect("the default start date should be valid"),
            timezone: chrono_tz::Europe::London,
            holiday_region: "GB-ENG".to_owned(),
            city: "Simcity".to_owned(),
            centre: (52.4797, -1.9026),
            occupancy_interval_minutes: 5,
            heartbeat_minutes: 120,
            silence_minutes: 300,
            late_probability: 0.002,
            duplicate_probability: 0.003,
            outages_per_slot_per_100_days: 0.5,
            stuck_per_slot_per_100_days: 0.1,
            pii_key: "parkcast-simulator".to_owned(),
            demand_shifts: Vec::new(),
            tariff_changes: Vec::new(),
        }
    }
}

impl SimulationParams {
    /// Sets the number of lots.
    pub fn lots(mut self, lots: u32) -> Self {
        self.lots = lots;
        self
    }

    /// Sets the number of days.
    pub fn days(mut self, days: u32) -> Self {
        self.days = days;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the first local date.
    pub fn start_date(mut self, start_date: NaiveDate) -> Self {
        self.start_date = start_date;
        self
    }

    /// Sets the occupancy interval.
    pub fn occupancy_interval_minutes(mut self, minutes: u32) -> Self {
        self.occupancy_interval_minutes = minutes;
        self
    }

    /// Sets the heartbeat period.
    pub fn heartbeat_minutes(mut self, minutes: u32) -> Self {
        self.heartbeat_minutes = minutes;
        self
    }

    /// Sets the silence limit.
    pub fn silence_minutes(mut self, minutes: u32) -> Self {
        self.silence_minutes = minutes;
        self
    }

    /// Validates every parameter and loads the holiday calendar; nothing invalid reaches the simulator.
    pub fn check(self) -> Result<CheckedParams, ParamsError> {
        range("lots", f64::from(self.lots), 1.0, 5_000.0)?;
        range("days", f64::from(self.days), 1.0, 3_660.0)?;
        range(
            "occupancy_interval_minutes",
            f64::from(self.occupancy_interval_minutes),
            1.0,
            1_440.0,
        )?;
        range(
            "heartbeat_minutes",
            f64::from(self.heartbeat_minutes),
            1.0,
            1_440.0,
        )?;
        range(
            "silence_minutes",
            f64::from(self.silence_minutes),
            1.0,
            10_080.0,
        )?;
        range("late_probability", self.late_probability, 0.0, 0.5)?;
        range(
            "duplicate_probability",
            self.duplicate_probability,
            0.0,
            0.5,
        )?;
        range(
            "outages_per_slot_per_100_days",
            self.outages_per_slot_per_100_days,
            0.0,
            100.0,
        )?;
        range(
            "stuck_per_slot_per_100_days",
            self.stuck_per_slot_per_100_days,
            0.0,
            100.0,
        )?;
        for shift in &self.demand_shifts {
            range(
                "demand shift lot",
                f64::from(shift.lot),
                0.0,
                f64::from(self.lots) - 1.0,
            )?;
            range("demand shift factor", shift.factor, 0.01, 20.0)?;
        }
        for change in &self.tariff_changes {
            range("tariff change factor", change.factor, 0.1, 10.0)?;
        }
        range("centre latitude", self.centre.0, -85.0, 85.0)?;
        range("centre longitude", self.centre.1, -180.0, 180.0)?;
        if 1_440 % self.occupancy_interval_minutes != 0 {
            return Err(ParamsError::IntervalNotDividingDay {
                interval_minutes: self.occupancy_interval_minutes,
            });
        }
        if self.silence_minutes <= self.heartbeat_minutes {
            return Err(ParamsError::SilenceShorterThanHeartbeat {
                heartbeat_minutes: self.heartbeat_minutes,
                silence_minutes: self.silence_minutes,
            });
        }
        let region: HolidayRegion = self.holiday_region.parse()?;
        let last_date = self.start_date + chrono::Days::new(u64::from(self.days));
        for year in [self.start_date.year(), last_date.year()] {
            if !COVERED_YEARS.contains(&year) {
                return Err(ParamsError::OutsideHolidayData { year });
            }
        }
        let calendar = HolidayCalendar::load(&region);
        Ok(CheckedParams {
            params: self,
            calendar,
        })
    }
}

fn range(name: &'static str, value: f64, min: f64, max: f64) -> Result<(), ParamsError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(ParamsError::OutOfRange {
            name,
            min,
            max,
            value,
        })
    }
}

/// Parameters that passed [`SimulationParams::check`], with the calendar they need.
#[derive(Debug, Clone)]
pub struct CheckedParams {
    params: SimulationParams,
    calendar: HolidayCalendar,
}

impl CheckedParams {
    /// The parameters.
    pub fn params(&self) -> &SimulationParams {
        &self.params
    }

    /// The city's holidays.
    pub fn calendar(&self) -> &HolidayCalendar {
        &self.calendar
    }

    /// Last simulated local date (inclusive).
    pub fn end_date(&self) -> NaiveDate {
        self.params.start_date + chrono::Days::new(u64::from(self.params.days) - 1)
    }

    /// Start of the first local day, as UTC.
    pub fn start_utc(&self) -> DateTime<Utc> {
        day_start(self.params.timezone, self.params.start_date)
    }

    /// Start of local day `date` in the city's time zone, as UTC.
    pub fn day_start_utc(&self, date: NaiveDate) -> DateTime<Utc> {
        day_start(self.params.timezone, date)
    }

    /// End of the last local day (exclusive), as UTC.
    pub fn end_utc(&self) -> DateTime<Utc> {
        day_start(self.params.timezone, self.end_date() + chrono::Days::new(1))
    }
}

/// The start of local day `date` in `timezone`: simulated dates are checked to lie within 2000-2050,
/// so it exists.
pub(crate) fn day_start(timezone: Tz, date: NaiveDate) -> DateTime<Utc> {
    parkcast_localtime::day_start(timezone, date).expect("simulated dates lie within 2000-2050")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_the_check() {
        let checked = SimulationParams::default()
            .check()
            .expect("defaults should be valid");
        assert_eq!(
            checked.end_date(),
            NaiveDate::from_ymd_opt(2025, 11, 29).expect("valid")
        );
        assert_eq!(
            (checked.end_utc() - checked.start_utc()).num_hours(),
            90 * 24 + 1,
            "October has 25 hours"
        );
    }

    #[test]
    fn invalid_parameters_name_themselves() {
        let error = SimulationParams::default()
            .lots(0)
            .check()
            .expect_err("zero lots should be refused");
        assert!(matches!(
            error,
            ParamsError::OutOfRange { name: "lots", .. }
        ));
        let error = SimulationParams::default()
            .occupancy_interval_minutes(7)
            .check()
            .expect_err("7 does not divide a day");
        assert!(matches!(
            error,
            ParamsError::IntervalNotDividingDay {
                interval_minutes: 7
            }
        ));
        let error = SimulationParams::default()
            .heartbeat_minutes(60)
            .silence_minutes(30)
            .check()
            .expect_err("silence < heartbeat");
        assert!(matches!(
            error,
            ParamsError::SilenceShorterThanHeartbeat { .. }
        ));
    }

    #[test]
    fn demand_shifts_parse_and_are_checked() {
        let shift: DemandShift = "3:2025-10-06:2".parse().expect("a shift");
        assert_eq!(
            shift,
            DemandShift {
                lot: 3,
                from: NaiveDate::from_ymd_opt(2025, 10, 6).expect("valid"),
                factor: 2.0,
            }
        );
        for bad in [
            "3:2025-10-06",
            "x:2025-10-06:2",
            "3:6 Oct:2",
            "3:2025-10-06:two",
            "1:2:3:4",
        ] {
            assert!(
                bad.parse::<DemandShift>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let with = |shift: DemandShift| SimulationParams {
            demand_shifts: vec![shift],
            ..SimulationParams::default().lots(4)
        };
        assert!(with(shift).check().is_ok());
        assert!(with(DemandShift { lot: 4, ..shift }).check().is_err());
        assert!(
            with(DemandShift {
                factor: 0.0,
                ..shift
            })
            .check()
            .is_err()
        );
        assert!(
            with(DemandShift {
                factor: f64::NAN,
                ..shift
            })
            .check()
            .is_err()
        );
    }
}
