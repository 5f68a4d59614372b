//! Who comes when, for how long, and what they pay: the demand side of the simulated city.
//!
//! Each kind of lot has an hourly arrival shape per day type, a turnover (arrivals per slot per day),
//! a dwell-time distribution and a tariff. The shapes follow what garage operators and on-street studies
//! publish: commuter garages fill 07-09 and empty 16-19 on weekdays, shopping peaks on Saturday
//! afternoons, street zones turn over every hour or two, nightlife fills on Friday and Saturday nights,
//! stadiums are empty but for events.

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// The kinds of lot the simulator builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LotKind {
    /// Office district garage: full on weekdays, long stays.
    CommuterGarage,
    /// Shopping centre garage: afternoons and Saturdays, 1-3 h stays.
    ShoppingCentre,
    /// On-street block with a time limit and pay-by-app or meter.
    StreetZone,
    /// Evening and night, Friday and Saturday.
    Nightlife,
    /// Stadium: empty except around matches and concerts.
    Stadium,
}

impl LotKind {
    /// Every kind.
    pub const ALL: [LotKind; 5] = [
        LotKind::CommuterGarage,
        LotKind::ShoppingCentre,
        LotKind::StreetZone,
        LotKind::Nightlife,
        LotKind::Stadium,
    ];

    /// The kind named `name` (as [`LotKind::name`] writes it).
    pub fn from_name(name: &str) -> Option<LotKind> {
        LotKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The name stored in `dim_lot.kind`.
    pub fn name(self) -> &'static str {
        match self {
            LotKind::CommuterGarage => "commuter_garage",
            LotKind::ShoppingCentre => "shopping_centre",
            LotKind::StreetZone => "street_zone",
            LotKind::Nightlife => "nightlife",
            LotKind::Stadium => "stadium",
        }
    }

    /// The kind of the lot at `index`: a fixed mix in which street blocks are the most numerous and
    /// every ten lots hold one stadium.
    pub fn for_index(index: u32) -> LotKind {
        const MIX: [LotKind; 10] = [
            LotKind::StreetZone,
            LotKind::CommuterGarage,
            LotKind::ShoppingCentre,
            LotKind::StreetZone,
            LotKind::Nightlife,
            LotKind::StreetZone,
            LotKind::CommuterGarage,
            LotKind::Stadium,
            LotKind::StreetZone,
            LotKind::ShoppingCentre,
        ];
        MIX[index as usize % MIX.len()]
    }

    /// Capacity range (slots).
    pub fn capacity_range(self) -> (i32, i32) {
        match self {
            LotKind::CommuterGarage => (250, 600),
            LotKind::ShoppingCentre => (300, 800),
            LotKind::StreetZone => (12, 60),
            LotKind::Nightlife => (80, 250),
            LotKind::Stadium => (500, 1_000),
        }
    }

    /// Whether the lot has barrier gates that scan a customer's code at entry and exit.
    pub fn has_gates(self) -> bool {
        !matches!(self, LotKind::StreetZone)
    }

    /// Share of slots reserved for EVs, disabled badge holders and motorcycles.
    pub fn special_slot_shares(self) -> (f64, f64, f64) {
        match self {
            LotKind::StreetZone => (0.04, 0.06, 0.04),
            LotKind::Stadium => (0.02, 0.04, 0.0),
            _ => (0.06, 0.04, 0.01),
        }
    }
}

/// Day types that shape demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayType {
    /// Monday to Thursday.
    Weekday,
    /// Friday: a weekday with a busier evening.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday or a public holiday.
    SundayOrHoliday,
}

/// Relative arrival weight for each local hour 0..24 (need not sum to one).
fn hourly_shape(kind: LotKind, day: DayType) -> [f64; 24] {
    use DayType::*;
    use LotKind::*;
    match (kind, day) {
        (CommuterGarage, Weekday | Friday) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 1.0, 4.0, 9.0, 7.0, 2.5, 1.2, 1.0, 1.0, 0.8, 0.6, 0.5,
            0.4, 0.3, 0.2, 0.1, 0.05, 0.0, 0.0,
        ],
        (CommuterGarage, _) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.6, 1.0, 1.2, 1.2, 1.0, 1.0, 0.8, 0.6, 0.4,
            0.3, 0.2, 0.1, 0.1, 0.0, 0.0, 0.0,
        ],
        (ShoppingCentre, Weekday | Friday) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5, 1.2, 1.8, 2.0, 2.2, 2.0, 1.8, 1.8, 2.0,
            2.2, 1.8, 1.2, 0.6, 0.2, 0.0, 0.0,
        ],
        (ShoppingCentre, Saturday) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.6, 1.6, 2.6, 3.0, 3.0, 2.8, 2.6, 2.2, 1.8,
            1.4, 1.0, 0.6, 0.3, 0.1, 0.0, 0.0,
        ],
        (ShoppingCentre, SundayOrHoliday) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 2.0, 2.6, 2.6, 2.4, 2.0, 1.2, 0.3,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
        (StreetZone, SundayOrHoliday) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.2, 1.4, 1.5, 1.5, 1.4, 1.2, 1.0,
            0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0,
        ],
        (StreetZone, _) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 1.0, 1.8, 2.0, 2.0, 2.0, 2.2, 2.2, 2.0, 1.8, 1.6,
            1.4, 1.0, 0.7, 0.5, 0.3, 0.2, 0.1,
        ],
        (Nightlife, Weekday) => [
            0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.3, 0.2, 0.2, 0.2, 0.3,
            0.6, 1.2, 1.6, 1.4, 1.0, 0.6, 0.4,
        ],
        (Nightlife, Friday | Saturday) => [
            0.8, 0.4, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.4, 0.4, 0.3, 0.3, 0.5,
            1.2, 2.4, 3.2, 3.4, 3.0, 2.2, 1.4,
        ],
        (Nightlife, SundayOrHoliday) => [
            1.0, 0.5, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.6, 0.6, 0.5, 0.4, 0.5,
            0.8, 1.0, 1.0, 0.8, 0.5, 0.3, 0.2,
        ],
        (Stadium, _) => [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
            0.8, 0.6, 0.4, 0.2, 0.1, 0.0, 0.0,
        ],
    }
}

/// Arrivals per slot per day, before day-to-day noise.
fn turnover(kind: LotKind, day: DayType) -> f64 {
    use DayType::*;
    use LotKind::*;
    match (kind, day) {
        (CommuterGarage, Weekday | Friday) => 1.05,
        (CommuterGarage, Saturday) => 0.3,
        (CommuterGarage, SundayOrHoliday) => 0.15,
        (ShoppingCentre, Weekday) => 1.6,
        (ShoppingCentre, Friday) => 1.9,
        (ShoppingCentre, Saturday) => 2.8,
        (ShoppingCentre, SundayOrHoliday) => 1.5,
        (StreetZone, Weekday | Friday) => 6.0,
        (StreetZone, Saturday) => 5.0,
        (StreetZone, SundayOrHoliday) => 2.5,
        (Nightlife, Weekday) => 0.7,
        (Nightlife, Friday | Saturday) => 1.6,
        (Nightlife, SundayOrHoliday) => 0.6,
        (Stadium, _) => 0.04,
    }
}

/// Arrival rate of a lot in one local hour, in arrivals per minute.
pub fn arrivals_per_minute(
    kind: LotKind,
    day: DayType,
    hour: u32,
    capacity: i32,
    day_level: f64,
) -> f64 {
    let shape = hourly_shape(kind, day);
    let total: f64 = shape.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let share = shape[hour as usize % 24] / total;
    turnover(kind, day) * f64::from(capacity) * day_level * share / 60.0
}

/// Log-normal dwell time: (median minutes, sigma of the log).
fn dwell_distribution(kind: LotKind, day: DayType, hour: u32, rng: &mut impl Rng) -> (f64, f64) {
    match kind {
        LotKind::CommuterGarage
            if matches!(day, DayType::Weekday | DayType::Friday) && hour < 10 =>
        {
            // Office workers; the rest are visitors.
            if rng.random_bool(0.8) {
                (8.6 * 60.0, 0.15)
            } else {
                (120.0, 0.7)
            }
        }
        LotKind::CommuterGarage => (150.0, 0.7),
        LotKind::ShoppingCentre => (100.0, 0.5),
        LotKind::StreetZone => (50.0, 0.65),
        LotKind::Nightlife => (170.0, 0.45),
        LotKind::Stadium => (180.0, 0.6),
    }
}

/// Draws a stay length in minutes, between 3 minutes and 20 hours.
pub fn draw_dwell_minutes(kind: LotKind, day: DayType, hour: u32, rng: &mut impl Rng) -> f64 {
    let (median, sigma) = dwell_distribution(kind, day, hour, rng);
    let distribution =
        LogNormal::new(median.ln(), sigma).expect("dwell parameters should be valid");
    distribution.sample(rng).clamp(3.0, 20.0 * 60.0)
}

/// The price elasticity of demand: arrivals at a lot scale with (price / the price before any
/// change) to this power, so a 10% rise loses about 3.8% of arrivals. Studies of parking demand
/// report elasticities from about -0.1 to -0.6 (commuters least sensitive, short stays most);
/// one value keeps the simulated response easy to recover and to check.
pub const PRICE_ELASTICITY: f64 = -0.4;

/// How much a lot of `kind`'s demand is scaled on local `date` by the price changes in force:
/// the product of their factors, to the power [`PRICE_ELASTICITY`].
pub fn price_response(
    kind: LotKind,
    date: chrono::NaiveDate,
    changes: &[super::params::TariffChange],
) -> f64 {
    let factor: f64 = changes
        .iter()
        .filter(|change| change.applies(kind, date))
        .map(|change| change.factor)
        .product();
    factor.powf(PRICE_ELASTICITY)
}

/// How a stay is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tariff {
    /// Stored in `fact_payment.tariff_id`.
    pub id: &'static str,
    /// Price per started hour, cents.
    pub cents_per_hour: i64,
    /// Most charged for one stay, cents (a day rate).
    pub cap_cents: i64,
    /// Flat price per stay (events), cents; when set, the hourly price is ignored.
    pub flat_cents: Option<i64>,
    /// Longest stay allowed, minutes (street time limits).
    pub max_stay_minutes: Option<i32>,
    /// Penalty for a stay beyond what was paid or allowed, cents.
    pub penalty_cents: i64,
}

/// Season-ticket holders pay nothing per stay.
pub const SEASON_TICKET: Tariff = Tariff {
    id: "season",
    cents_per_hour: 0,
    cap_cents: 0,
    flat_cents: None,
    max_stay_minutes: None,
    penalty_cents: 0,
};

/// The tariff of a kind of lot (stadium events use [`EVENT_TARIFF`]).
pub fn tariff(kind: LotKind) -> Tariff {
    match kind {
        LotKind::CommuterGarage => Tariff {
            id: "commuter_hourly",
            cents_per_hour: 300,
            cap_cents: 1_600,
            flat_cents: None,
            max_stay_minutes: None,
            penalty_cents: 2_500,
        },
        LotKind::ShoppingCentre => Tariff {
            id: "shopping_hourly",
            cents_per_hour: 200,
            cap_cents: 2_000,
            flat_cents: None,
            max_stay_minutes: None,
            penalty_cents: 2_500,
        },
        LotKind::StreetZone => Tariff {
            id: "street_2h",
            cents_per_hour: 350,
            cap_cents: 700,
            flat_cents: None,
            max_stay_minutes: Some(120),
            penalty_cents: 7_000,
        },
        LotKind::Nightlife => Tariff {
            id: "night_hourly",
            cents_per_hour: 250,
            cap_cents: 1_200,
            flat_cents: None,
            max_stay_minutes: None,
            penalty_cents: 2_500,
        },
        LotKind::Stadium => Tariff {
            id: "stadium_day",
            cents_per_hour: 200,
            cap_cents: 1_000,
            flat_cents: None,
            max_stay_minutes: None,
            penalty_cents: 2_500,
        },
    }
}

/// Event-day flat fee at a stadium.
pub const EVENT_TARIFF: Tariff = Tariff {
    id: "stadium_event",
    cents_per_hour: 0,
    cap_cents: 1_500,
    flat_cents: Some(1_500),
    max_stay_minutes: None,
    penalty_cents: 2_500,
};

impl Tariff {
    /// The tariff with every price multiplied by `factor`, rounded to 10 cents (a price change).
    pub fn scaled(&self, factor: f64) -> Tariff {
        let scale = |cents: i64| ((cents as f64 * factor / 10.0).round() as i64) * 10;
        Tariff {
            cents_per_hour: scale(self.cents_per_hour),
            cap_cents: scale(self.cap_cents),
            flat_cents: self.flat_cents.map(scale),
            penalty_cents: scale(self.penalty_cents),
            ..*self
        }
    }

    /// The tariff in force at a lot of `kind` on a local date, after every price change up to it
    /// (changes in date order).
    pub fn on(
        &self,
        kind: LotKind,
        date: chrono::NaiveDate,
        changes: &[super::params::TariffChange],
    ) -> Tariff {
        let mut changes: Vec<_> = changes
            .iter()
            .filter(|change| change.applies(kind, date))
            .collect();
        changes.sort_by_key(|change| change.from);
        changes
            .into_iter()
            .fold(*self, |tariff, change| tariff.scaled(change.factor))
    }

    /// The amount for `paid_minutes` of parking, penalties excluded: started hours times the hourly
    /// price, capped; or the flat fee.
    pub fn amount_cents(&self, paid_minutes: i64) -> i64 {
        if let Some(flat) = self.flat_cents {
            return flat;
        }
        let started_hours = (paid_minutes.max(1) + 59) / 60;
        (started_hours * self.cents_per_hour).min(self.cap_cents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hourly_tariffs_charge_started_hours_up_to_the_cap() {
        let street = tariff(LotKind::StreetZone);
        assert_eq!(street.amount_cents(1), 350);
        assert_eq!(street.amount_cents(60), 350);
        assert_eq!(street.amount_cents(61), 700);
        assert_eq!(street.amount_cents(600), 700);
        assert_eq!(EVENT_TARIFF.amount_cents(400), 1_500);
        assert_eq!(SEASON_TICKET.amount_cents(500), 0);
    }

    #[test]
    fn commuters_arrive_in_the_morning_and_shoppers_on_saturday() {
        let morning = arrivals_per_minute(LotKind::CommuterGarage, DayType::Weekday, 8, 100, 1.0);
        let evening = arrivals_per_minute(LotKind::CommuterGarage, DayType::Weekday, 20, 100, 1.0);
        assert!(morning > 10.0 * evening);
        let saturday =
            arrivals_per_minute(LotKind::ShoppingCentre, DayType::Saturday, 13, 100, 1.0);
        let tuesday = arrivals_per_minute(LotKind::ShoppingCentre, DayType::Weekday, 13, 100, 1.0);
        assert!(saturday > tuesday);
    }

    #[test]
    fn dwell_times_stay_in_bounds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..10_000 {
            let minutes = draw_dwell_minutes(LotKind::StreetZone, DayType::Weekday, 12, &mut rng);
            assert!((3.0..=1_200.0).contains(&minutes));
        }
    }
}
