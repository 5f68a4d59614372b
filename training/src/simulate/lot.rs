//! One lot, simulated one local day at a time: arrivals, slot choice, stays, payments, gate scans, and
//! what the slot sensors report about it all.
//!
//! State carries from day to day (parked cars, sensor sequence numbers, outages), so memory stays at one
//! day of output however long the simulation runs. Each lot draws from its own random streams, one for
//! demand and one for sensors, so results do not depend on thread scheduling, and changing sensor
//! parameters leaves the stays unchanged.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use parkcast_features::calendar::HolidayCalendar;
use parkcast_features::occupancy::{Grid, LotTracker, OccupancyPoint, Reading, sort_readings};
use parkcast_warehouse::rows::{CustomerScanRow, ParkingSessionRow, PaymentRow};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson, Triangular};

use super::SOURCE;
use super::city::{City, SimLot, SlotType, VehicleType};
use super::demand::{self, DayType, EVENT_TARIFF, LotKind, SEASON_TICKET, Tariff};
use super::params::SimulationParams;

const MINUTE_MS: i64 = 60_000;
const NOT_FREE: u32 = u32::MAX;
/// Share of street parkers who pay by app (and so are known customers).
const STREET_APP_SHARE: f64 = 0.65;
/// Chance that a street overstay is caught by a warden.
const ENFORCEMENT_PROBABILITY: f64 = 0.35;
/// Share of weekday-morning commuter-garage arrivals that are season-ticket holders.
const SUBSCRIBER_SHARE: f64 = 0.65;
/// Currency of every simulated amount.
const CURRENCY: &str = "GBP";

/// One reading a sensor sent, compact (the bulk table is built from these without a row struct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimReading {
    /// Event time, Unix ms.
    pub ts_ms: i64,
    /// Backend arrival time, Unix ms.
    pub received_ms: i64,
    /// Sequence number.
    pub seq: u64,
    /// Slot index in the lot.
    pub slot: u32,
    /// Reported status.
    pub occupied: bool,
    /// A status change (else a heartbeat).
    pub change: bool,
}

/// What one lot produced in one day.
#[derive(Debug, Default)]
pub struct LotDay {
    /// Sensor readings (a delivered duplicate appears twice).
    pub readings: Vec<SimReading>,
    /// Occupancy at each grid instant of the day.
    pub occupancy: Vec<OccupancyPoint>,
    /// Stays that began this day.
    pub sessions: Vec<ParkingSessionRow>,
    /// Gate and app scans.
    pub scans: Vec<CustomerScanRow>,
    /// Slips.
    pub payments: Vec<PaymentRow>,
}

/// Counters over the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LotStats {
    /// Drivers who found no suitable free slot.
    pub turned_away: u64,
    /// Stays begun.
    pub sessions: u64,
    /// Street stays beyond what was paid.
    pub overstays: u64,
    /// Readings sent late (buffered by a gateway).
    pub late_readings: u64,
    /// Readings delivered twice.
    pub duplicate_readings: u64,
    /// Sensor triggers lost while a sensor was offline.
    pub lost_in_outage: u64,
    /// Outage episodes.
    pub outages: u64,
    /// Stuck-sensor episodes.
    pub stuck_episodes: u64,
}

impl LotStats {
    /// Adds another lot's counters.
    pub fn add(&mut self, other: &LotStats) {
        self.turned_away += other.turned_away;
        self.sessions += other.sessions;
        self.overstays += other.overstays;
        self.late_readings += other.late_readings;
        self.duplicate_readings += other.duplicate_readings;
        self.lost_in_outage += other.lost_in_outage;
        self.outages += other.outages;
        self.stuck_episodes += other.stuck_episodes;
    }
}

/// A stay in progress.
#[derive(Debug, Clone)]
struct ActiveSession {
    session_id: String,
    customer: Option<u32>,
    vehicle: Option<u32>,
    tariff: Tariff,
    entry_ms: i64,
    gated: bool,
}

/// What one sensor knows and will do.
#[derive(Debug, Clone)]
struct SlotSensor {
    seq: u64,
    reported: Option<bool>,
    last_ts_ms: i64,
    truth: bool,
    heartbeat_phase_ms: i64,
    outages: Vec<(i64, i64)>,
    stuck: Vec<(i64, i64, bool)>,
}

impl SlotSensor {
    fn in_outage(&self, ts_ms: i64) -> bool {
        self.outages
            .iter()
            .any(|&(start, end)| start <= ts_ms && ts_ms < end)
    }

    fn stuck_value(&self, ts_ms: i64) -> Option<bool> {
        self.stuck
            .iter()
            .find(|&&(start, end, _)| start <= ts_ms && ts_ms < end)
            .map(|&(_, _, value)| value)
    }

    fn value_at(&self, ts_ms: i64) -> bool {
        self.stuck_value(ts_ms).unwrap_or(self.truth)
    }
}

/// Things that make a sensor speak, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trigger {
    /// A car arrived (true) or left (false).
    Transition(bool),
    /// Periodic report (or the first report after joining the network).
    Heartbeat,
    /// Back online: reports what it sees now.
    OutageEnd,
    /// Starts reporting a fixed value.
    StuckStart(bool),
    /// Reports the truth again.
    StuckEnd,
}

/// The day-specific inputs shared by every lot.
#[derive(Debug, Clone, Copy)]
pub struct DayContext {
    /// The local date.
    pub date: NaiveDate,
    /// Its index from the first simulated date.
    pub day_index: usize,
    /// Local midnight, Unix ms.
    pub start_ms: i64,
    /// Next local midnight, Unix ms.
    pub end_ms: i64,
    /// City-wide demand level of the day (weather, the economy): shared by all lots.
    pub city_level: f64,
    /// Day type.
    pub day_type: DayType,
}

/// The day type of a local date.
pub fn day_type(calendar: &HolidayCalendar, date: NaiveDate) -> DayType {
    if calendar.is_holiday(date) || date.weekday() == Weekday::Sun {
        DayType::SundayOrHoliday
    } else if date.weekday() == Weekday::Sat {
        DayType::Saturday
    } else if date.weekday() == Weekday::Fri {
        DayType::Friday
    } else {
        DayType::Weekday
    }
}

/// Seasonal demand factor of a kind of lot on a date: pre-Christmas shopping, summer holidays, the
/// quiet days around Christmas.
fn seasonal_factor(kind: LotKind, date: NaiveDate, calendar: &HolidayCalendar) -> f64 {
    let (month, day) = (date.month(), date.day());
    let christmas_break = month == 12 && day >= 24 || month == 1 && day == 1;
    match kind {
        _ if month == 12 && day == 25 => 0.15,
        LotKind::ShoppingCentre if month == 12 && day == 26 => 1.4,
        LotKind::ShoppingCentre if month == 12 && day < 24 => 1.0 + 0.3 * f64::from(day) / 23.0,
        LotKind::CommuterGarage if christmas_break || month == 8 => 0.75,
        LotKind::CommuterGarage if calendar.days_from_holiday(date) == 1 => 0.9,
        _ => 1.0,
    }
}

/// One lot's simulation state.
pub struct LotSim<'city> {
    lot: &'city SimLot,
    city: &'city City,
    timezone: Tz,
    demand_rng: ChaCha8Rng,
    sensor_rng: ChaCha8Rng,
    free: [Vec<u32>; 4],
    free_position: Vec<u32>,
    departures: BinaryHeap<Reverse<(i64, u32)>>,
    active: Vec<Option<ActiveSession>>,
    session_counter: u64,
    transitions: Vec<Vec<(i64, bool)>>,
    sensors: Vec<SlotSensor>,
    tracker: LotTracker,
    pending_readings: Vec<Reading>,
    event_arrivals: Vec<(i64, i64)>,
    next_event_arrival: usize,
    stats: LotStats,
    params: SimulationParams,
    simulation_start_ms: i64,
    simulation_end_ms: i64,
}

impl<'city> LotSim<'city> {
    /// Prepares a lot: empty slots, sensors with their outage and stuck episodes drawn for the run.
    pub fn new(
        lot: &'city SimLot,
        city: &'city City,
        params: &SimulationParams,
        simulation_start: DateTime<Utc>,
        simulation_end: DateTime<Utc>,
    ) -> Self {
        let mut demand_rng = ChaCha8Rng::seed_from_u64(params.seed);
        demand_rng.set_stream(2 * u64::from(lot.index) + 1);
        let mut sensor_rng = ChaCha8Rng::seed_from_u64(params.seed);
        sensor_rng.set_stream(2 * u64::from(lot.index) + 2);

        let slot_count = lot.slot_ids.len();
        let mut free: [Vec<u32>; 4] = Default::default();
        let mut free_position = vec![NOT_FREE; slot_count];
        for (slot, slot_type) in lot.slot_types.iter().enumerate() {
            let list = &mut free[slot_type.index()];
            free_position[slot] = list.len() as u32;
            list.push(slot as u32);
        }

        let start_ms = simulation_start.timestamp_millis();
        let end_ms = simulation_end.timestamp_millis();
        let span_ms = (end_ms - start_ms).max(1);
        let days = span_ms as f64 / (24.0 * 60.0 * MINUTE_MS as f64);
        let heartbeat_ms = i64::from(params.heartbeat_minutes) * MINUTE_MS;
        let mut stats = LotStats::default();
        let sensors = (0..slot_count)
            .map(|_| {
                let outage_count = poisson(
                    &mut sensor_rng,
                    params.outages_per_slot_per_100_days * days / 100.0,
                );
                let outages: Vec<(i64, i64)> = (0..outage_count)
                    .map(|_| {
                        let start = start_ms + sensor_rng.random_range(0..span_ms);
                        (start, start + sensor_rng.random_range(60..=720) * MINUTE_MS)
                    })
                    .collect();
                let stuck_count = poisson(
                    &mut sensor_rng,
                    params.stuck_per_slot_per_100_days * days / 100.0,
                );
                let stuck: Vec<(i64, i64, bool)> = (0..stuck_count)
                    .map(|_| {
                        let start = start_ms + sensor_rng.random_range(0..span_ms);
                        let length = sensor_rng.random_range(24 * 60..=4 * 24 * 60) * MINUTE_MS;
                        (start, start + length, sensor_rng.random_bool(0.7))
                    })
                    .collect();
                stats.outages += outages.len() as u64;
                stats.stuck_episodes += stuck.len() as u64;
                SlotSensor {
                    seq: 0,
                    reported: None,
                    last_ts_ms: i64::MIN,
                    truth: false,
                    heartbeat_phase_ms: sensor_rng.random_range(0..heartbeat_ms),
                    outages,
                    stuck,
                }
            })
            .collect();

        let mut event_arrivals = Vec::new();
        for event in city.events.iter().filter(|event| event.lot == lot.index) {
            let start_ms = event.row.start_ts.timestamp_millis();
            let end_ms = event.row.end_ts.timestamp_millis();
            let cars = poisson(&mut demand_rng, f64::from(event.row.expected_cars));
            let lead =
                Triangular::new(-150.0, -10.0, -40.0).expect("event lead times should be valid");
            for _ in 0..cars {
                let arrival = start_ms + (lead.sample(&mut demand_rng) * MINUTE_MS as f64) as i64;
                let exit = end_ms + demand_rng.random_range(5..=50) * MINUTE_MS;
                event_arrivals.push((arrival, exit));
            }
        }
        event_arrivals.sort_unstable();

        LotSim {
            lot,
            city,
            timezone: params.timezone,
            demand_rng,
            sensor_rng,
            free,
            free_position,
            departures: BinaryHeap::new(),
            active: vec![None; slot_count],
            session_counter: 0,
            transitions: vec![Vec::new(); slot_count],
            sensors,
            tracker: LotTracker::new(slot_count),
            pending_readings: Vec::new(),
            event_arrivals,
            next_event_arrival: 0,
            stats,
            params: params.clone(),
            simulation_start_ms: start_ms,
            simulation_end_ms: end_ms,
        }
    }

    /// The lot.
    pub fn lot(&self) -> &SimLot {
        self.lot
    }

    /// Counters so far.
    pub fn stats(&self) -> LotStats {
        self.stats
    }

    /// Simulates one local day.
    pub fn run_day(&mut self, day: &DayContext, calendar: &HolidayCalendar) -> LotDay {
        let mut output = LotDay::default();
        for list in &mut self.transitions {
            list.clear();
        }
        let lot_noise = LogNormal::new(0.0, 0.08)
            .expect("noise parameters should be valid")
            .sample(&mut self.demand_rng);
        let shift: f64 = self
            .params
            .demand_shifts
            .iter()
            .filter(|shift| shift.lot == self.lot.index && day.date >= shift.from)
            .map(|shift| shift.factor)
            .product();
        let price = demand::price_response(self.lot.kind, day.date, &self.params.tariff_changes);
        let level = day.city_level
            * lot_noise
            * seasonal_factor(self.lot.kind, day.date, calendar)
            * shift
            * price;

        let arrivals = self.draw_arrivals(day, level);
        for (arrival_ms, event_exit_ms) in arrivals {
            self.depart_until(arrival_ms, &mut output);
            self.arrive(arrival_ms, event_exit_ms, day, &mut output);
        }
        self.depart_until(day.end_ms - 1, &mut output);

        self.run_sensors(day, &mut output);
        self.derive_occupancy(day, &mut output);
        output
    }

    /// Arrival instants of the day (sorted), each with the fixed exit of an event visitor.
    fn draw_arrivals(&mut self, day: &DayContext, level: f64) -> Vec<(i64, Option<i64>)> {
        let mut arrivals = Vec::new();
        let mut minute_ms = day.start_ms;
        let mut rate_hour = u32::MAX;
        let mut rate = 0.0;
        while minute_ms < day.end_ms {
            let hour = local_hour(self.timezone, minute_ms);
            if hour != rate_hour {
                rate_hour = hour;
                rate = demand::arrivals_per_minute(
                    self.lot.kind,
                    day.day_type,
                    hour,
                    self.lot.capacity(),
                    level,
                );
            }
            for _ in 0..poisson(&mut self.demand_rng, rate) {
                arrivals.push((minute_ms + self.demand_rng.random_range(0..MINUTE_MS), None));
            }
            minute_ms += MINUTE_MS;
        }
        while let Some(&(arrival, exit)) = self.event_arrivals.get(self.next_event_arrival) {
            if arrival >= day.end_ms {
                break;
            }
            if arrival >= day.start_ms {
                arrivals.push((arrival, Some(exit)));
            }
            self.next_event_arrival += 1;
        }
        arrivals.sort_unstable();
        arrivals
    }

    fn take_free_slot(&mut self, slot_type: SlotType) -> Option<u32> {
        let list = &mut self.free[slot_type.index()];
        if list.is_empty() {
            return None;
        }
        let position = self.demand_rng.random_range(0..list.len());
        let slot = list.swap_remove(position);
        if let Some(&moved) = list.get(position) {
            self.free_position[moved as usize] = position as u32;
        }
        self.free_position[slot as usize] = NOT_FREE;
        Some(slot)
    }

    fn release_slot(&mut self, slot: u32) {
        let slot_type = self.lot.slot_types[slot as usize];
        let list = &mut self.free[slot_type.index()];
        self.free_position[slot as usize] = list.len() as u32;
        list.push(slot);
    }

    fn arrive(
        &mut self,
        arrival_ms: i64,
        event_exit_ms: Option<i64>,
        day: &DayContext,
        output: &mut LotDay,
    ) {
        let kind = self.lot.kind;
        let hour = local_hour(self.timezone, arrival_ms);
        let city = self.city;

        // Who arrives: gated lots know every customer; on the street only app users are known.
        let mut tariff = if event_exit_ms.is_some() {
            EVENT_TARIFF
        } else {
            demand::tariff(kind)
        }
        .on(kind, day.date, &self.params.tariff_changes);
        let morning_commute = kind == LotKind::CommuterGarage
            && matches!(day.day_type, DayType::Weekday | DayType::Friday)
            && hour < 10;
        let customer = if morning_commute
            && !self.lot.subscribers.is_empty()
            && self.demand_rng.random_bool(SUBSCRIBER_SHARE)
        {
            tariff = SEASON_TICKET;
            Some(self.lot.subscribers[self.demand_rng.random_range(0..self.lot.subscribers.len())])
        } else if kind.has_gates() || self.demand_rng.random_bool(STREET_APP_SHARE) {
            Some(self.demand_rng.random_range(0..city.customers.len() as u32))
        } else {
            None
        };
        let vehicle = customer.map(|customer| {
            let vehicles = &city.customers[customer as usize].vehicles;
            if vehicles.len() > 1 && self.demand_rng.random_bool(0.2) {
                vehicles[1]
            } else {
                vehicles[0]
            }
        });
        let (vehicle_type, disabled_permit) = match vehicle {
            Some(vehicle) => {
                let vehicle = &city.vehicles[vehicle as usize];
                (vehicle.vehicle_type, vehicle.disabled_permit)
            }
            None => (
                VehicleType::draw(&mut self.demand_rng),
                self.demand_rng.random_bool(0.04),
            ),
        };

        let slot = vehicle_type
            .preferred_slots(disabled_permit)
            .iter()
            .find_map(|&slot_type| self.take_free_slot(slot_type));
        let Some(slot) = slot else {
            self.stats.turned_away += 1;
            return;
        };

        let exit_ms = match event_exit_ms {
            Some(exit) => exit.max(arrival_ms + MINUTE_MS),
            None => {
                let minutes =
                    demand::draw_dwell_minutes(kind, day.day_type, hour, &mut self.demand_rng);
                arrival_ms + (minutes * MINUTE_MS as f64) as i64
            }
        };
        let dwell_minutes = (exit_ms - arrival_ms + MINUTE_MS - 1) / MINUTE_MS;
        self.session_counter += 1;
        let session_id = format!("{}:{}", self.lot.lot_id, self.session_counter);
        let customer_id =
            customer.map(|customer| city.customers[customer as usize].customer_id.clone());
        let vehicle_id = vehicle.map(|vehicle| city.vehicles[vehicle as usize].vehicle_id.clone());
        let gated = kind.has_gates();

        // Street parkers prepay for roughly the time they expect, in 30-minute steps, up to the limit.
        let mut allowed_minutes = None;
        let mut in_violation = false;
        if let Some(max_stay) = tariff.max_stay_minutes {
            let planned = dwell_minutes as f64 * self.demand_rng.random_range(0.75..1.25);
            let paid = (((planned / 30.0).ceil() as i32) * 30).clamp(30, max_stay);
            allowed_minutes = Some(paid);
            in_violation = dwell_minutes > i64::from(paid);
            let paid_ms = arrival_ms + self.demand_rng.random_range(20..=90) * 1_000;
            output.payments.push(self.payment(
                &session_id,
                customer_id.clone(),
                &tariff,
                tariff.amount_cents(i64::from(paid)),
                0,
                paid_ms,
                "p",
                Some((arrival_ms, arrival_ms + i64::from(paid) * MINUTE_MS)),
            ));
            if in_violation {
                self.stats.overstays += 1;
                if self.demand_rng.random_bool(ENFORCEMENT_PROBABILITY) {
                    let noticed_ms = arrival_ms
                        + i64::from(paid) * MINUTE_MS
                        + self.demand_rng.random_range(5..=30) * MINUTE_MS;
                    let penalty_ms = noticed_ms.min(exit_ms - 1_000);
                    output.payments.push(self.payment(
                        &session_id,
                        customer_id.clone(),
                        &tariff,
                        0,
                        tariff.penalty_cents,
                        penalty_ms,
                        "pcn",
                        None,
                    ));
                }
            }
        }

        if let Some(customer_id) = &customer_id {
            let (gate, scan_ms) = if gated {
                (
                    format!("G{}", self.demand_rng.random_range(1..=3)),
                    arrival_ms - self.demand_rng.random_range(20..=120) * 1_000,
                )
            } else {
                (
                    "app".to_owned(),
                    arrival_ms + self.demand_rng.random_range(20..=90) * 1_000,
                )
            };
            output.scans.push(CustomerScanRow {
                ts: timestamp(scan_ms),
                customer_id: customer_id.clone(),
                vehicle_id: vehicle_id.clone(),
                lot_id: self.lot.lot_id.clone(),
                gate,
                direction: "entry".to_owned(),
                session_id: Some(session_id.clone()),
                source: SOURCE.to_owned(),
            });
        }

        output.sessions.push(ParkingSessionRow {
            session_id: session_id.clone(),
            slot_id: self.lot.slot_ids[slot as usize].clone(),
            lot_id: self.lot.lot_id.clone(),
            vehicle_id,
            customer_id,
            entry_ts: timestamp(arrival_ms),
            exit_ts: (exit_ms < self.simulation_end_ms).then(|| timestamp(exit_ms)),
            allowed_minutes,
            in_violation,
            source: SOURCE.to_owned(),
        });
        self.stats.sessions += 1;
        self.transitions[slot as usize].push((arrival_ms, true));
        self.active[slot as usize] = Some(ActiveSession {
            session_id,
            customer,
            vehicle,
            tariff,
            entry_ms: arrival_ms,
            gated,
        });
        self.departures.push(Reverse((exit_ms, slot)));
    }

    /// Lets every car whose stay ends at or before `until_ms` leave.
    fn depart_until(&mut self, until_ms: i64, output: &mut LotDay) {
        while let Some(&Reverse((exit_ms, slot))) = self.departures.peek() {
            if exit_ms > until_ms {
                break;
            }
            self.departures.pop();
            let session = self.active[slot as usize]
                .take()
                .expect("a departing slot should hold a stay");
            self.release_slot(slot);
            self.transitions[slot as usize].push((exit_ms, false));
            if !session.gated {
                continue;
            }
            let city = self.city;
            let customer_id = session
                .customer
                .map(|customer| city.customers[customer as usize].customer_id.clone());
            let dwell_minutes = (exit_ms - session.entry_ms + MINUTE_MS - 1) / MINUTE_MS;
            output.payments.push(self.payment(
                &session.session_id,
                customer_id.clone(),
                &session.tariff,
                session.tariff.amount_cents(dwell_minutes),
                0,
                exit_ms,
                "p",
                Some((session.entry_ms, exit_ms)),
            ));
            let scan_ms = exit_ms + self.demand_rng.random_range(20..=120) * 1_000;
            if let Some(customer_id) = customer_id.filter(|_| scan_ms < self.simulation_end_ms) {
                output.scans.push(CustomerScanRow {
                    ts: timestamp(scan_ms),
                    customer_id,
                    vehicle_id: session
                        .vehicle
                        .map(|vehicle| city.vehicles[vehicle as usize].vehicle_id.clone()),
                    lot_id: self.lot.lot_id.clone(),
                    gate: format!("G{}", self.demand_rng.random_range(1..=3)),
                    direction: "exit".to_owned(),
                    session_id: Some(session.session_id.clone()),
                    source: SOURCE.to_owned(),
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn payment(
        &self,
        session_id: &str,
        customer_id: Option<String>,
        tariff: &Tariff,
        amount_cents: i64,
        penalty_cents: i64,
        paid_ms: i64,
        suffix: &str,
        paid_period: Option<(i64, i64)>,
    ) -> PaymentRow {
        PaymentRow {
            slip_id: format!("{session_id}:{suffix}"),
            session_id: session_id.to_owned(),
            customer_id,
            lot_id: self.lot.lot_id.clone(),
            tariff_id: tariff.id.to_owned(),
            amount_cents,
            penalty_cents,
            currency: CURRENCY.to_owned(),
            paid_ts: timestamp(paid_ms),
            source: SOURCE.to_owned(),
            status: None,
            refunded_cents: None,
            paid_from: paid_period.map(|(from, _)| timestamp(from)),
            paid_until: paid_period.map(|(_, until)| timestamp(until)),
        }
    }

    /// Turns the day's true arrivals and departures into what each sensor sent.
    fn run_sensors(&mut self, day: &DayContext, output: &mut LotDay) {
        let heartbeat_ms = i64::from(self.params.heartbeat_minutes) * MINUTE_MS;
        let mut triggers: Vec<(i64, Trigger)> = Vec::new();
        for slot in 0..self.sensors.len() {
            triggers.clear();
            triggers.extend(
                self.transitions[slot]
                    .iter()
                    .map(|&(ts, occupied)| (ts, Trigger::Transition(occupied))),
            );
            let sensor = &self.sensors[slot];
            if day.start_ms <= self.simulation_start_ms && self.simulation_start_ms < day.end_ms {
                // Joining the network: every sensor reports once in the first minute.
                triggers.push((
                    self.simulation_start_ms + sensor.heartbeat_phase_ms % MINUTE_MS,
                    Trigger::Heartbeat,
                ));
            }
            let first_beat = self.simulation_start_ms + sensor.heartbeat_phase_ms;
            let mut beat = if day.start_ms <= first_beat {
                first_beat
            } else {
                first_beat
                    + (day.start_ms - first_beat + heartbeat_ms - 1) / heartbeat_ms * heartbeat_ms
            };
            while beat < day.end_ms {
                triggers.push((beat, Trigger::Heartbeat));
                beat += heartbeat_ms;
            }
            for &(_, end) in &sensor.outages {
                if day.start_ms <= end && end < day.end_ms {
                    triggers.push((end, Trigger::OutageEnd));
                }
            }
            for &(start, end, value) in &sensor.stuck {
                if day.start_ms <= start && start < day.end_ms {
                    triggers.push((start, Trigger::StuckStart(value)));
                }
                if day.start_ms <= end && end < day.end_ms {
                    triggers.push((end, Trigger::StuckEnd));
                }
            }
            triggers.sort_unstable();
            for &(ts_ms, trigger) in &triggers {
                self.trigger(slot, ts_ms, trigger, output);
            }
        }
    }

    fn trigger(&mut self, slot: usize, ts_ms: i64, trigger: Trigger, output: &mut LotDay) {
        let sensor = &mut self.sensors[slot];
        if let Trigger::Transition(occupied) = trigger {
            sensor.truth = occupied;
        }
        if sensor.in_outage(ts_ms) {
            self.stats.lost_in_outage += 1;
            return;
        }
        let (value, send_ms) = match trigger {
            Trigger::Transition(_) => {
                if sensor.stuck_value(ts_ms).is_some() {
                    return;
                }
                // Magnetometer and radar sensors settle for a few seconds before they report.
                (
                    sensor.truth,
                    ts_ms + self.sensor_rng.random_range(1_000..=15_000),
                )
            }
            Trigger::Heartbeat | Trigger::OutageEnd | Trigger::StuckEnd => {
                (sensor.value_at(ts_ms), ts_ms)
            }
            Trigger::StuckStart(value) => (value, ts_ms),
        };
        let is_report = matches!(trigger, Trigger::Heartbeat | Trigger::OutageEnd);
        if !is_report && sensor.reported == Some(value) {
            return;
        }
        self.emit(slot, send_ms, value, output);
    }

    fn emit(&mut self, slot: usize, send_ms: i64, value: bool, output: &mut LotDay) {
        let sensor = &mut self.sensors[slot];
        // A sensor's readings leave in order: event times strictly increase per slot.
        let ts_ms = send_ms.max(sensor.last_ts_ms.saturating_add(1));
        if ts_ms >= self.simulation_end_ms {
            return;
        }
        sensor.seq += 1;
        sensor.last_ts_ms = ts_ms;
        let change = sensor.reported == Some(!value);
        sensor.reported = Some(value);
        let seq = sensor.seq;
        let late = self.sensor_rng.random_bool(self.params.late_probability);
        let latency_ms = if late {
            self.stats.late_readings += 1;
            self.sensor_rng.random_range(2..=45) * MINUTE_MS
        } else {
            self.sensor_rng.random_range(100..=2_000)
        };
        let reading = SimReading {
            ts_ms,
            received_ms: ts_ms + latency_ms,
            seq,
            slot: slot as u32,
            occupied: value,
            change,
        };
        output.readings.push(reading);
        if self
            .sensor_rng
            .random_bool(self.params.duplicate_probability)
        {
            self.stats.duplicate_readings += 1;
            output.readings.push(SimReading {
                received_ms: reading.received_ms + self.sensor_rng.random_range(1_000..=10_000),
                ..reading
            });
        }
    }

    /// Counts occupied and unknown slots at each grid instant of the day, from what sensors reported.
    fn derive_occupancy(&mut self, day: &DayContext, output: &mut LotDay) {
        let mut readings = std::mem::take(&mut self.pending_readings);
        readings.extend(output.readings.iter().map(|reading| Reading {
            slot: reading.slot,
            ts_ms: reading.ts_ms,
            seq: reading.seq,
            occupied: reading.occupied,
        }));
        sort_readings(&mut readings);
        let grid = Grid {
            start_ms: day.start_ms,
            end_ms: day.end_ms.min(self.simulation_end_ms),
            step_ms: i64::from(self.params.occupancy_interval_minutes) * MINUTE_MS,
        };
        let silence_ms = i64::from(self.params.silence_minutes) * MINUTE_MS;
        let (points, applied) = self.tracker.advance(&readings, grid, silence_ms);
        output.occupancy = points;
        // Readings sent just after midnight about the previous day wait for the next day's grid.
        self.pending_readings = readings.split_off(applied);
    }
}

/// Local hour of an instant.
fn local_hour(timezone: Tz, ts_ms: i64) -> u32 {
    timestamp(ts_ms).with_timezone(&timezone).hour()
}

/// A UTC instant from Unix ms.
pub fn timestamp(ts_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ts_ms).expect("simulated instants should be in chrono's range")
}

/// A Poisson draw; inversion for small means (the common case: a minute's arrivals at one lot).
pub fn poisson(rng: &mut impl Rng, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let mut product: f64 = rng.random();
        let mut count = 0;
        while product > limit {
            product *= rng.random::<f64>();
            count += 1;
        }
        return count;
    }
    Poisson::new(mean)
        .expect("a positive finite mean should be valid")
        .sample(rng) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_draws_have_the_right_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for mean in [0.05, 2.0, 50.0] {
            let draws = 20_000;
            let total: u64 = (0..draws).map(|_| poisson(&mut rng, mean)).sum();
            let observed = total as f64 / f64::from(draws);
            assert!(
                (observed - mean).abs() < 0.05 * mean + 0.01,
                "mean {mean}: observed {observed}"
            );
        }
        assert_eq!(poisson(&mut rng, 0.0), 0);
        assert_eq!(poisson(&mut rng, f64::NAN), 0);
    }

    #[test]
    fn holidays_and_weekends_set_the_day_type() {
        let calendar = HolidayCalendar::from_dates(
            "XX",
            [(
                NaiveDate::from_ymd_opt(2025, 12, 25).expect("valid"),
                "Christmas".to_owned(),
            )],
        );
        let day = |d| NaiveDate::from_ymd_opt(2025, 12, d).expect("valid");
        assert_eq!(day_type(&calendar, day(22)), DayType::Weekday);
        assert_eq!(day_type(&calendar, day(25)), DayType::SundayOrHoliday);
        assert_eq!(day_type(&calendar, day(26)), DayType::Friday);
        assert_eq!(day_type(&calendar, day(27)), DayType::Saturday);
        assert_eq!(day_type(&calendar, day(28)), DayType::SundayOrHoliday);
    }
}
