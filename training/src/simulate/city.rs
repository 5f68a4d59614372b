//! The static side of the simulated city: zones, lots, slots, customers, vehicles and events.

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use parkcast_warehouse::pii::PiiHasher;
use parkcast_warehouse::rows::{CustomerRow, EventRow, LotRow, SlotRow, VehicleRow, ZoneRow};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SOURCE;
use super::demand::LotKind;
use super::params::CheckedParams;

/// What a slot is reserved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotType {
    /// Any car.
    Standard,
    /// Electric vehicles while charging.
    Ev,
    /// Disabled badge holders.
    Disabled,
    /// Motorcycles.
    Motorcycle,
}

impl SlotType {
    /// All slot types, in the order of the per-type free lists.
    pub const ALL: [SlotType; 4] = [
        SlotType::Standard,
        SlotType::Ev,
        SlotType::Disabled,
        SlotType::Motorcycle,
    ];

    /// The name stored in `dim_slot.slot_type`.
    pub fn name(self) -> &'static str {
        match self {
            SlotType::Standard => "standard",
            SlotType::Ev => "ev",
            SlotType::Disabled => "disabled",
            SlotType::Motorcycle => "motorcycle",
        }
    }

    /// Index into [`SlotType::ALL`].
    pub fn index(self) -> usize {
        match self {
            SlotType::Standard => 0,
            SlotType::Ev => 1,
            SlotType::Disabled => 2,
            SlotType::Motorcycle => 3,
        }
    }
}

/// Kinds of vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VehicleType {
    /// Combustion or hybrid car.
    Car,
    /// Battery electric car.
    Ev,
    /// Van.
    Van,
    /// Motorcycle.
    Motorcycle,
}

impl VehicleType {
    /// The name stored in `dim_vehicle.vehicle_type`.
    pub fn name(self) -> &'static str {
        match self {
            VehicleType::Car => "car",
            VehicleType::Ev => "ev",
            VehicleType::Van => "van",
            VehicleType::Motorcycle => "motorcycle",
        }
    }

    /// Draws a vehicle type with the shares of a European city fleet.
    pub fn draw(rng: &mut impl Rng) -> VehicleType {
        let draw: f64 = rng.random();
        if draw < 0.80 {
            VehicleType::Car
        } else if draw < 0.92 {
            VehicleType::Ev
        } else if draw < 0.97 {
            VehicleType::Van
        } else {
            VehicleType::Motorcycle
        }
    }

    /// Slot types the vehicle tries, best first (it takes a standard slot when its own are full).
    pub fn preferred_slots(self, disabled_permit: bool) -> &'static [SlotType] {
        match (self, disabled_permit) {
            (_, true) => &[SlotType::Disabled, SlotType::Standard],
            (VehicleType::Ev, false) => &[SlotType::Ev, SlotType::Standard],
            (VehicleType::Motorcycle, false) => &[SlotType::Motorcycle, SlotType::Standard],
            _ => &[SlotType::Standard],
        }
    }
}

/// One lot of the city.
#[derive(Debug, Clone)]
pub struct SimLot {
    /// Position in the city's lot list.
    pub index: u32,
    /// Id.
    pub lot_id: String,
    /// Zone id.
    pub zone_id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: LotKind,
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Slot ids, by slot index.
    pub slot_ids: Vec<String>,
    /// Slot types, by slot index.
    pub slot_types: Vec<SlotType>,
    /// Customers holding a season ticket for this lot.
    pub subscribers: Vec<u32>,
}

impl SimLot {
    /// Number of slots.
    pub fn capacity(&self) -> i32 {
        i32::try_from(self.slot_ids.len()).expect("a lot should have fewer than 2^31 slots")
    }
}

/// A customer: the first vehicle is the one usually driven.
#[derive(Debug, Clone)]
pub struct SimCustomer {
    /// Id.
    pub customer_id: String,
    /// Indexes into the city's vehicles.
    pub vehicles: Vec<u32>,
}

/// A vehicle.
#[derive(Debug, Clone)]
pub struct SimVehicle {
    /// Id.
    pub vehicle_id: String,
    /// Type.
    pub vehicle_type: VehicleType,
    /// Holds a disabled badge.
    pub disabled_permit: bool,
}

/// A special event at a lot.
#[derive(Debug, Clone)]
pub struct SimEvent {
    /// The lot.
    pub lot: u32,
    /// Row for `dim_event`.
    pub row: EventRow,
}

/// Everything static about the city, and its dimension rows.
#[derive(Debug, Clone)]
pub struct City {
    /// Lots.
    pub lots: Vec<SimLot>,
    /// Customers.
    pub customers: Vec<SimCustomer>,
    /// Vehicles.
    pub vehicles: Vec<SimVehicle>,
    /// Events, by start.
    pub events: Vec<SimEvent>,
    /// `dim_zone` rows.
    pub zone_rows: Vec<ZoneRow>,
    /// `dim_lot` rows.
    pub lot_rows: Vec<LotRow>,
    /// `dim_slot` rows.
    pub slot_rows: Vec<SlotRow>,
    /// `dim_customer` rows.
    pub customer_rows: Vec<CustomerRow>,
    /// `dim_vehicle` rows.
    pub vehicle_rows: Vec<VehicleRow>,
}

const ZONES: [&str; 5] = ["centre", "north", "east", "south", "west"];
/// Metres per degree of latitude.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// Builds the city from the parameters; `rng` is the city's own stream.
pub fn build_city(checked: &CheckedParams, rng: &mut ChaCha8Rng) -> City {
    let params = checked.params();
    let hasher = PiiHasher::new(params.pii_key.as_bytes());
    let timezone_name = params.timezone.name().to_owned();

    let zone_rows = ZONES
        .iter()
        .map(|zone| ZoneRow {
            zone_id: format!("sim:{zone}"),
            name: format!("{} {zone}", params.city),
            city: params.city.clone(),
            timezone: timezone_name.clone(),
            source: SOURCE.to_owned(),
        })
        .collect();

    let mut lots = Vec::with_capacity(params.lots as usize);
    for index in 0..params.lots {
        let kind = LotKind::for_index(index);
        let (min_capacity, max_capacity) = kind.capacity_range();
        let capacity = rng.random_range(min_capacity..=max_capacity);
        // Lots spread over ~3 km around the centre; the centre zone holds the inner kilometre.
        let distance_m = 3_000.0 * rng.random::<f64>().sqrt();
        let bearing = rng.random_range(0.0..std::f64::consts::TAU);
        let latitude = params.centre.0 + distance_m * bearing.cos() / METRES_PER_DEGREE;
        let longitude = params.centre.1
            + distance_m * bearing.sin() / (METRES_PER_DEGREE * params.centre.0.to_radians().cos());
        let zone = if distance_m < 1_000.0 {
            ZONES[0]
        } else {
            // Quadrant by bearing: north, east, south, west.
            let quadrant = ((bearing + std::f64::consts::FRAC_PI_4) / std::f64::consts::FRAC_PI_2)
                as usize
                % 4;
            ZONES[1 + quadrant]
        };
        let lot_id = format!("sim:lot{index:04}");
        let (ev_share, disabled_share, motorcycle_share) = kind.special_slot_shares();
        let capacity_f = f64::from(capacity);
        let ev_slots = (capacity_f * ev_share).round() as i32;
        let disabled_slots = (capacity_f * disabled_share).round().max(1.0) as i32;
        let motorcycle_slots = (capacity_f * motorcycle_share).round() as i32;
        let slot_types: Vec<SlotType> = (0..capacity)
            .map(|slot| {
                if slot < disabled_slots {
                    SlotType::Disabled
                } else if slot < disabled_slots + ev_slots {
                    SlotType::Ev
                } else if slot < disabled_slots + ev_slots + motorcycle_slots {
                    SlotType::Motorcycle
                } else {
                    SlotType::Standard
                }
            })
            .collect();
        let slot_ids = (0..capacity)
            .map(|slot| format!("{lot_id}:s{slot:04}"))
            .collect();
        lots.push(SimLot {
            index,
            lot_id,
            zone_id: format!("sim:{zone}"),
            name: format!(
                "{} {} {}",
                params.city,
                kind.name().replace('_', " "),
                index
            ),
            kind,
            latitude,
            longitude,
            slot_ids,
            slot_types,
            subscribers: Vec::new(),
        });
    }

    let total_capacity: i64 = lots.iter().map(|lot| i64::from(lot.capacity())).sum();
    let customer_count = (total_capacity * 2).max(500) as u32;
    let mut customers = Vec::with_capacity(customer_count as usize);
    let mut vehicles = Vec::new();
    let mut customer_rows = Vec::with_capacity(customer_count as usize);
    let mut vehicle_rows = Vec::new();
    let start = params.start_date;
    for customer in 0..customer_count {
        let customer_id = format!("sim:c{customer:06}");
        let vehicle_count = if rng.random_bool(0.15) { 2 } else { 1 };
        let mut own_vehicles = Vec::with_capacity(vehicle_count);
        let disabled_permit = rng.random_bool(0.04);
        for number in 0..vehicle_count {
            let vehicle_index =
                u32::try_from(vehicles.len()).expect("vehicle count should fit in u32");
            let vehicle_type = VehicleType::draw(rng);
            let vehicle_id = format!("sim:v{vehicle_index:07}");
            // Plates exist only to be hashed: the clear value is never stored.
            let plate = format!("SIM{customer:06}{number}");
            vehicle_rows.push(VehicleRow {
                vehicle_id: vehicle_id.clone(),
                customer_id: Some(customer_id.clone()),
                plate_hash: hasher.plate(&plate),
                vehicle_type: vehicle_type.name().to_owned(),
                disabled_permit,
                source: SOURCE.to_owned(),
            });
            vehicles.push(SimVehicle {
                vehicle_id,
                vehicle_type,
                disabled_permit,
            });
            own_vehicles.push(vehicle_index);
        }
        let email = rng
            .random_bool(0.8)
            .then(|| hasher.email(&format!("customer{customer}@example.org")));
        let phone = rng
            .random_bool(0.5)
            .then(|| hasher.phone(&format!("+44 7700 9{customer:05}")));
        let registered_on = start - Days::new(rng.random_range(1..2_000));
        customer_rows.push(CustomerRow {
            customer_id: customer_id.clone(),
            email_hash: email,
            phone_hash: phone,
            customer_type: "visitor".to_owned(),
            registered_on,
            source: SOURCE.to_owned(),
        });
        customers.push(SimCustomer {
            customer_id,
            vehicles: own_vehicles,
        });
    }

    // Season tickets: commuter garages sell them to about 40% of their capacity.
    let mut next_subscriber = 0u32;
    for lot in lots
        .iter_mut()
        .filter(|lot| lot.kind == LotKind::CommuterGarage)
    {
        let count = (f64::from(lot.capacity()) * 0.4) as u32;
        for _ in 0..count {
            if next_subscriber >= customer_count {
                break;
            }
            lot.subscribers.push(next_subscriber);
            customer_rows[next_subscriber as usize].customer_type = "subscriber".to_owned();
            next_subscriber += 1;
        }
    }

    let events = build_events(checked, &lots, rng);
    let lot_rows = lots
        .iter()
        .map(|lot| LotRow {
            lot_id: lot.lot_id.clone(),
            zone_id: lot.zone_id.clone(),
            name: lot.name.clone(),
            kind: lot.kind.name().to_owned(),
            capacity: lot.capacity(),
            latitude: Some(lot.latitude),
            longitude: Some(lot.longitude),
            timezone: timezone_name.clone(),
            holiday_region: params.holiday_region.clone(),
            source: SOURCE.to_owned(),
            // Occupancy is derived on a grid from sensors with heartbeats: nothing to hold.
            hold_minutes: None,
        })
        .collect();
    let slot_rows = lots
        .iter()
        .flat_map(|lot| {
            lot.slot_ids.iter().zip(&lot.slot_types).enumerate().map(
                move |(slot, (slot_id, slot_type))| {
                    // Slots in rows of 20, 2.5 m apart: enough for maps and "nearest free slot".
                    let row = (slot / 20) as f64;
                    let column = (slot % 20) as f64;
                    SlotRow {
                        slot_id: slot_id.clone(),
                        lot_id: lot.lot_id.clone(),
                        slot_type: slot_type.name().to_owned(),
                        latitude: Some(lot.latitude + row * 5.0 / METRES_PER_DEGREE),
                        longitude: Some(lot.longitude + column * 2.5 / METRES_PER_DEGREE),
                        source: SOURCE.to_owned(),
                    }
                },
            )
        })
        .collect();

    City {
        lots,
        customers,
        vehicles,
        events,
        zone_rows,
        lot_rows,
        slot_rows,
        customer_rows,
        vehicle_rows,
    }
}

/// Stadium fixtures: Saturday 15:00 matches about every other week, some Wednesday evening matches,
/// the odd Friday concert. Crowds arriving by car range from 60% to 110% of the car park.
fn build_events(checked: &CheckedParams, lots: &[SimLot], rng: &mut ChaCha8Rng) -> Vec<SimEvent> {
    let params = checked.params();
    let mut events = Vec::new();
    for lot in lots.iter().filter(|lot| lot.kind == LotKind::Stadium) {
        let mut date = params.start_date;
        while date <= checked.end_date() {
            let fixture = match date.weekday() {
                Weekday::Sat if rng.random_bool(0.5) => Some(("match", 15, 0, 115)),
                Weekday::Wed if rng.random_bool(0.2) => Some(("match", 19, 45, 115)),
                Weekday::Fri if rng.random_bool(0.08) => Some(("concert", 19, 30, 180)),
                _ => None,
            };
            if let Some((kind, hour, minute, duration_minutes)) = fixture {
                let local = date.and_time(
                    NaiveTime::from_hms_opt(hour, minute, 0)
                        .expect("fixture times should be valid"),
                );
                if let Some(start) = params.timezone.from_local_datetime(&local).earliest() {
                    let start = start.with_timezone(&Utc);
                    let end = start + chrono::Duration::minutes(duration_minutes);
                    let expected_cars =
                        (f64::from(lot.capacity()) * rng.random_range(0.6..1.1)) as i32;
                    events.push(SimEvent {
                        lot: lot.index,
                        row: EventRow {
                            event_id: format!("sim:e{}:{}", lot.index, date.format("%Y%m%d")),
                            lot_id: lot.lot_id.clone(),
                            name: format!("{} {} {}", lot.name, kind, date.format("%Y-%m-%d")),
                            kind: kind.to_owned(),
                            start_ts: start,
                            end_ts: end,
                            expected_cars,
                            source: SOURCE.to_owned(),
                        },
                    });
                }
            }
            date = next_day(date);
        }
    }
    events.sort_by_key(|event| (event.row.start_ts, event.lot));
    events
}

fn next_day(date: NaiveDate) -> NaiveDate {
    date + Days::new(1)
}
