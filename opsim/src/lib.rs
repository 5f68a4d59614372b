//! The simulated operator's backend (`parkcast simulate --postgres`): a simulated city's customers,
//! vehicles, tariffs, payments, refunds and penalties, written to the operational store as the
//! operator's transactional system would have written them, one transaction per simulated day.
//!
//! A live system is messy, and the ETL and the reconciliation report exist because of it, so the
//! backend is too (every share below is drawn from its own seeded stream: the same seed gives the
//! same database):
//!
//! - **Late updates.** [`PENDING_SHARE`] of payments are recorded `pending` and settled 1-3 days
//!   later (a tenth of those fail instead): an update of a row the ETL may have loaded already.
//! - **Refunds days later.** [`REFUND_SHARE`] of settled payments are refunded, in full or half,
//!   1-10 days later: a refund row, and the payment marked `refunded`.
//! - **Penalties settle later.** Fines are issued during the stay; 60% are paid 3-20 days later,
//!   5% cancelled.
//! - **Price changes.** The simulator's tariff changes ([`parkcast_training::simulate::TariffChange`])
//!   become new tariff rows with validity ranges; a stay is charged under the tariff in force when
//!   it began.
//! - **Injected faults, with their truth.** [`UNPAID_SHARE`] of paid stays lose their payment
//!   (the stay is in the sensor data, the money never came), and [`ORPHAN_SHARE`] extra payments
//!   name no stay or one that does not exist. Both are recorded in `sim_injected` (kind, id),
//!   outside the operational schema, so a reconciliation can be scored against them.
//!
//! Contact data is written in clear as a backend keeps it (`customer{N}@example.org`,
//! `+44 7700 9{N:05}`, plate `SIM{N:06}{k}`), beside the keyed hashes the simulator computed: the
//! ETL extracts only the hashes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Days, NaiveDate, Utc};
use parkcast_opstore::records::{
    self, CopyLine, Customer, Lot, Operator, Payment, Penalty, Record, Refund, TimeBand, Vehicle,
    Zone,
};
use parkcast_training::simulate::demand::{self, EVENT_TARIFF, LotKind, SEASON_TICKET, Tariff};
use parkcast_training::simulate::{CheckedParams, City, SinkError, TransactionSink};
use parkcast_warehouse::rows::{ParkingSessionRow, PaymentRow};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Share of payments recorded `pending` and settled (or failed) days later.
pub const PENDING_SHARE: f64 = 0.04;
/// Share of pending payments that fail instead of settling.
pub const FAIL_SHARE: f64 = 0.1;
/// Share of settled payments refunded days later.
pub const REFUND_SHARE: f64 = 0.005;
/// Share of paid stays whose payment is lost (injected: a stay without payment).
pub const UNPAID_SHARE: f64 = 0.01;
/// Extra payments without a stay, per payment (injected).
pub const ORPHAN_SHARE: f64 = 0.002;
/// Share of penalties paid later.
pub const PENALTY_PAID_SHARE: f64 = 0.6;
/// Share of penalties cancelled later.
pub const PENALTY_CANCELLED_SHARE: f64 = 0.05;

/// The simulated operator's id.
pub const OPERATOR_ID: &str = "sim";
/// The one time band the simulated tariffs use: all day, every day.
pub const ALL_DAY_BAND: &str = "all_day";
/// `sim_injected.kind` of a stay whose payment was dropped (the id is the session's).
pub const INJECTED_UNPAID: &str = "unpaid_stay";
/// `sim_injected.kind` of a payment without a stay (the id is the payment's).
pub const INJECTED_ORPHAN: &str = "orphan_payment";
const CURRENCY: &str = "GBP";

/// Why the simulated backend could not write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpSimError {
    /// The database refused.
    #[error(transparent)]
    OpStore(#[from] parkcast_opstore::OpStoreError),
    /// The database refused a statement.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// The database already holds a simulated city.
    #[error(
        "the operational store already holds a simulated operator ('{OPERATOR_ID}'): simulate into a fresh database"
    )]
    AlreadySimulated,
    /// A slip names a tariff plan the backend does not have.
    #[error("slip {slip} names tariff {code} for lot {lot}, which the simulated backend lacks")]
    UnknownTariff {
        /// The slip.
        slip: String,
        /// The plan.
        code: String,
        /// The lot.
        lot: String,
    },
}

/// What the backend wrote, for the run's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounts {
    /// Customers.
    pub customers: u64,
    /// Vehicles.
    pub vehicles: u64,
    /// Tariff rows (each plan once per price period).
    pub tariffs: u64,
    /// Payments, orphans included.
    pub payments: u64,
    /// Payments settled or failed after being recorded pending.
    pub late_updates: u64,
    /// Refunds.
    pub refunds: u64,
    /// Penalties.
    pub penalties: u64,
    /// Penalties paid or cancelled later.
    pub penalty_updates: u64,
    /// Stays whose payment was dropped (injected).
    pub injected_unpaid: u64,
    /// Payments without a stay (injected).
    pub injected_orphans: u64,
}

/// An update due on a later day.
enum Due {
    Settle {
        payment_id: String,
        fail: bool,
    },
    Refund(Refund),
    Penalty {
        penalty_id: String,
        status: &'static str,
    },
}

/// A row of `sim_injected`.
struct Injected {
    kind: &'static str,
    id: String,
    lot_id: String,
    amount_cents: i64,
}

impl Record for Injected {
    const TABLE: &'static str = "sim_injected";
    const COLUMNS: &'static [&'static str] = &["kind", "id", "lot_id", "amount"];
    fn write(&self, line: &mut CopyLine) {
        line.text(self.kind);
        line.text(&self.id);
        line.text(&self.lot_id);
        line.cents(self.amount_cents);
    }
}

/// A plan's tariff ids by the start of their validity, ascending.
type PricePeriods = Vec<(DateTime<Utc>, i64)>;

/// The simulated backend: a [`TransactionSink`] writing to Postgres.
pub struct SimulatedBackend {
    client: postgres::Client,
    rng: ChaCha8Rng,
    /// (plan code, lot or zone id) -> tariff ids by the start of their validity, ascending.
    tariffs: HashMap<(String, String), PricePeriods>,
    /// lot id -> (kind, zone id).
    lots: HashMap<String, (LotKind, String)>,
    /// Vehicles of the stays of the last two days (a stay lasts at most 20 hours).
    vehicles: [HashMap<String, Option<String>>; 2],
    /// Payments dropped on purpose (penalties must not refer to them).
    dropped: HashSet<String>,
    dues: BTreeMap<NaiveDate, Vec<Due>>,
    orphans: u64,
    counts: BackendCounts,
}

impl SimulatedBackend {
    /// A backend writing to `client`'s database (migrated here if it is not yet).
    pub fn new(mut client: postgres::Client, seed: u64) -> Result<SimulatedBackend, OpSimError> {
        parkcast_opstore::migrate(&mut client)?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM operator WHERE operator_id = $1",
                &[&OPERATOR_ID],
            )?
            .is_some();
        if exists {
            return Err(OpSimError::AlreadySimulated);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(7);
        Ok(SimulatedBackend {
            client,
            rng,
            tariffs: HashMap::new(),
            lots: HashMap::new(),
            vehicles: [HashMap::new(), HashMap::new()],
            dropped: HashSet::new(),
            dues: BTreeMap::new(),
            orphans: 0,
            counts: BackendCounts::default(),
        })
    }

    /// What was written so far.
    pub fn counts(&self) -> BackendCounts {
        self.counts
    }

    fn write_city(&mut self, checked: &CheckedParams, city: &City) -> Result<(), OpSimError> {
        let params = checked.params();
        let mut transaction = self.client.transaction()?;
        transaction.batch_execute(
            "CREATE TABLE IF NOT EXISTS sim_injected (
                 kind    text NOT NULL,
                 id      text NOT NULL,
                 lot_id  text NOT NULL,
                 amount  numeric(10, 2) NOT NULL,
                 PRIMARY KEY (kind, id)
             )",
        )?;
        records::copy_in(
            &mut transaction,
            &[Operator {
                operator_id: OPERATOR_ID.to_owned(),
                name: format!("{} parking", params.city),
                timezone: params.timezone.name().to_owned(),
                currency: CURRENCY.to_owned(),
            }],
        )?;
        let zones: Vec<Zone> = city
            .zone_rows
            .iter()
            .map(|zone| Zone {
                zone_id: zone.zone_id.clone(),
                operator_id: OPERATOR_ID.to_owned(),
                name: zone.name.clone(),
            })
            .collect();
        records::copy_in(&mut transaction, &zones)?;
        let lots: Vec<Lot> = city
            .lots
            .iter()
            .map(|lot| Lot {
                lot_id: lot.lot_id.clone(),
                zone_id: lot.zone_id.clone(),
                name: lot.name.clone(),
                capacity: lot.capacity(),
            })
            .collect();
        records::copy_in(&mut transaction, &lots)?;
        records::copy_in(
            &mut transaction,
            &[TimeBand {
                band_id: ALL_DAY_BAND.to_owned(),
                name: "all day".to_owned(),
                starts_minute: 0,
                ends_minute: 1_440,
                weekdays: (1..=7).collect(),
            }],
        )?;

        let changes = &params.tariff_changes;
        let mut zones_with_street = Vec::new();
        for lot in &city.lots {
            self.lots
                .insert(lot.lot_id.clone(), (lot.kind, lot.zone_id.clone()));
            let mut plans: Vec<Tariff> = vec![demand::tariff(lot.kind)];
            match lot.kind {
                LotKind::StreetZone => {
                    // Street prices are the zone's, set once per zone.
                    if zones_with_street.contains(&lot.zone_id) {
                        continue;
                    }
                    zones_with_street.push(lot.zone_id.clone());
                }
                LotKind::Stadium => plans.push(EVENT_TARIFF),
                LotKind::CommuterGarage => plans.push(SEASON_TICKET),
                _ => {}
            }
            // Price periods: the simulation's start, then each change of this kind's prices
            // (from local midnight).
            let mut starts = vec![params.start_date];
            starts.extend(
                changes
                    .iter()
                    .filter(|change| change.kind.is_none_or(|kind| kind == lot.kind))
                    .map(|change| change.from)
                    .filter(|from| *from > params.start_date),
            );
            starts.sort();
            starts.dedup();
            let lot_scoped = lot.kind != LotKind::StreetZone;
            let scope = if lot_scoped {
                lot.lot_id.clone()
            } else {
                lot.zone_id.clone()
            };
            for plan in plans {
                for (index, start) in starts.iter().enumerate() {
                    let priced = plan.on(lot.kind, *start, changes);
                    let valid_from = checked.day_start_utc(*start);
                    let valid_until = starts
                        .get(index + 1)
                        .map(|next| checked.day_start_utc(*next));
                    let id = records::insert_tariff(
                        &mut transaction,
                        &records::Tariff {
                            zone_id: lot.zone_id.clone(),
                            lot_id: lot_scoped.then(|| lot.lot_id.clone()),
                            band_id: ALL_DAY_BAND.to_owned(),
                            code: plan.id.to_owned(),
                            cents_per_hour: priced.cents_per_hour,
                            cap_cents: Some(priced.cap_cents),
                            flat_cents: priced.flat_cents,
                            max_stay_minutes: priced.max_stay_minutes,
                            penalty_cents: Some(priced.penalty_cents).filter(|cents| *cents > 0),
                            valid_from,
                            valid_until,
                        },
                    )?;
                    self.tariffs
                        .entry((plan.id.to_owned(), scope.clone()))
                        .or_default()
                        .push((valid_from, id));
                    self.counts.tariffs += 1;
                }
            }
        }

        let mut customers = Vec::with_capacity(city.customers.len());
        let mut vehicles = Vec::with_capacity(city.vehicles.len());
        for (number, (customer, row)) in city.customers.iter().zip(&city.customer_rows).enumerate()
        {
            customers.push(Customer {
                customer_id: row.customer_id.clone(),
                email: row
                    .email_hash
                    .as_ref()
                    .map(|_| format!("customer{number}@example.org")),
                phone: row
                    .phone_hash
                    .as_ref()
                    .map(|_| format!("+44 7700 9{number:05}")),
                email_hash: row.email_hash.clone(),
                phone_hash: row.phone_hash.clone(),
                customer_type: row.customer_type.clone(),
                registered_on: row.registered_on,
            });
            for (own, &vehicle) in customer.vehicles.iter().enumerate() {
                let row = &city.vehicle_rows[vehicle as usize];
                vehicles.push(Vehicle {
                    vehicle_id: row.vehicle_id.clone(),
                    customer_id: row.customer_id.clone(),
                    plate: format!("SIM{number:06}{own}"),
                    plate_hash: row.plate_hash.clone(),
                    kind: row.vehicle_type.clone(),
                    disabled_permit: row.disabled_permit,
                });
            }
        }
        self.counts.customers += records::copy_in(&mut transaction, &customers)?;
        self.counts.vehicles += records::copy_in(&mut transaction, &vehicles)?;
        transaction.commit()?;
        Ok(())
    }

    fn tariff_id(&self, slip: &PaymentRow, from: DateTime<Utc>) -> Result<i64, OpSimError> {
        let unknown = || OpSimError::UnknownTariff {
            slip: slip.slip_id.clone(),
            code: slip.tariff_id.clone(),
            lot: slip.lot_id.clone(),
        };
        let (kind, zone) = self.lots.get(&slip.lot_id).ok_or_else(unknown)?;
        let scope = if *kind == LotKind::StreetZone {
            zone.clone()
        } else {
            slip.lot_id.clone()
        };
        let periods = self
            .tariffs
            .get(&(slip.tariff_id.clone(), scope))
            .ok_or_else(unknown)?;
        Ok(periods
            .iter()
            .rev()
            .find(|(valid_from, _)| *valid_from <= from)
            .or(periods.first())
            .expect("a plan has at least one period")
            .1)
    }

    fn write_day(
        &mut self,
        date: NaiveDate,
        sessions: &[ParkingSessionRow],
        slips: &[PaymentRow],
    ) -> Result<(), OpSimError> {
        let [older, newer] = &mut self.vehicles;
        std::mem::swap(older, newer);
        newer.clear();
        for session in sessions {
            newer.insert(session.session_id.clone(), session.vehicle_id.clone());
        }
        let vehicle_of = |backend: &SimulatedBackend, session: &str| {
            backend
                .vehicles
                .iter()
                .find_map(|map| map.get(session))
                .cloned()
                .flatten()
        };

        let mut payments = Vec::new();
        let mut penalties = Vec::new();
        let mut injected = Vec::new();
        for slip in slips {
            let vehicle_id = vehicle_of(self, &slip.session_id);
            if slip.penalty_cents > 0 {
                let payment_id = format!("{}:p", slip.session_id);
                let penalty_id = slip.slip_id.clone();
                let later = date + Days::new(self.rng.random_range(3..=20));
                let draw: f64 = self.rng.random();
                if draw < PENALTY_PAID_SHARE {
                    self.due(
                        later,
                        Due::Penalty {
                            penalty_id: penalty_id.clone(),
                            status: "paid",
                        },
                    );
                } else if draw < PENALTY_PAID_SHARE + PENALTY_CANCELLED_SHARE {
                    self.due(
                        later,
                        Due::Penalty {
                            penalty_id: penalty_id.clone(),
                            status: "cancelled",
                        },
                    );
                }
                penalties.push(Penalty {
                    penalty_id,
                    session_id: Some(slip.session_id.clone()),
                    lot_id: slip.lot_id.clone(),
                    vehicle_id,
                    payment_id: (!self.dropped.contains(&payment_id)).then_some(payment_id),
                    issued_at: slip.paid_ts,
                    reason: "overstay".to_owned(),
                    amount_cents: slip.penalty_cents,
                    status: "issued".to_owned(),
                });
                continue;
            }
            let paid_from = slip.paid_from.unwrap_or(slip.paid_ts);
            let paid_until = slip
                .paid_until
                .filter(|until| *until > paid_from)
                .unwrap_or(paid_from + chrono::Duration::minutes(1));
            let tariff_id = self.tariff_id(slip, paid_from)?;
            if slip.amount_cents > 0 && self.rng.random_bool(UNPAID_SHARE) {
                self.dropped.insert(slip.slip_id.clone());
                injected.push(Injected {
                    kind: INJECTED_UNPAID,
                    id: slip.session_id.clone(),
                    lot_id: slip.lot_id.clone(),
                    amount_cents: slip.amount_cents,
                });
                continue;
            }
            let street = self
                .lots
                .get(&slip.lot_id)
                .is_some_and(|(kind, _)| *kind == LotKind::StreetZone);
            let method = if slip.tariff_id == SEASON_TICKET.id {
                "permit"
            } else if street && slip.customer_id.is_some() {
                "app"
            } else if street {
                if self.rng.random_bool(0.5) {
                    "card"
                } else {
                    "cash"
                }
            } else if self.rng.random_bool(0.7) {
                "card"
            } else {
                "app"
            };
            let mut status = "settled";
            if method != "permit" && self.rng.random_bool(PENDING_SHARE) {
                status = "pending";
                let fail = self.rng.random_bool(FAIL_SHARE);
                let later = date + Days::new(self.rng.random_range(1..=3));
                self.due(
                    later,
                    Due::Settle {
                        payment_id: slip.slip_id.clone(),
                        fail,
                    },
                );
            } else if slip.amount_cents > 0 && self.rng.random_bool(REFUND_SHARE) {
                let later = self.rng.random_range(1..=10);
                let amount_cents = if self.rng.random_bool(0.5) {
                    slip.amount_cents
                } else {
                    (slip.amount_cents / 2).max(1)
                };
                let reason = if self.rng.random_bool(0.5) {
                    "complaint"
                } else {
                    "charged twice"
                };
                self.due(
                    date + Days::new(later),
                    Due::Refund(Refund {
                        refund_id: format!("{}:r", slip.slip_id),
                        payment_id: slip.slip_id.clone(),
                        refunded_at: slip.paid_ts + chrono::Duration::days(later as i64),
                        amount_cents,
                        reason: reason.to_owned(),
                    }),
                );
            }
            let payment = Payment {
                payment_id: slip.slip_id.clone(),
                session_id: Some(slip.session_id.clone()),
                lot_id: slip.lot_id.clone(),
                customer_id: slip.customer_id.clone(),
                vehicle_id,
                tariff_id: Some(tariff_id),
                paid_at: slip.paid_ts,
                paid_from,
                paid_until,
                amount_cents: slip.amount_cents,
                method: method.to_owned(),
                status: status.to_owned(),
            };
            if slip.amount_cents > 0 && self.rng.random_bool(ORPHAN_SHARE) {
                self.orphans += 1;
                let shift = chrono::Duration::minutes(self.rng.random_range(5..=240));
                let orphan = Payment {
                    payment_id: format!("sim:orphan{:07}", self.orphans),
                    // Half name no stay at all, half a stay that does not exist (a mistyped id).
                    session_id: self
                        .rng
                        .random_bool(0.5)
                        .then(|| format!("{}:9{:08}", slip.lot_id, self.orphans)),
                    customer_id: None,
                    vehicle_id: None,
                    paid_at: payment.paid_at + shift,
                    paid_from: payment.paid_from + shift,
                    paid_until: payment.paid_until + shift,
                    method: "card".to_owned(),
                    status: "settled".to_owned(),
                    ..payment.clone()
                };
                injected.push(Injected {
                    kind: INJECTED_ORPHAN,
                    id: orphan.payment_id.clone(),
                    lot_id: orphan.lot_id.clone(),
                    amount_cents: orphan.amount_cents,
                });
                payments.push(orphan);
            }
            payments.push(payment);
        }

        let mut transaction = self.client.transaction()?;
        self.counts.payments += records::copy_in(&mut transaction, &payments)?;
        self.counts.penalties += records::copy_in(&mut transaction, &penalties)?;
        for row in &injected {
            match row.kind {
                INJECTED_UNPAID => self.counts.injected_unpaid += 1,
                _ => self.counts.injected_orphans += 1,
            }
        }
        records::copy_in(&mut transaction, &injected)?;
        // Updates due today, after today's inserts: a payment settles at the earliest a day later.
        let due: Vec<Due> = {
            let later = self.dues.split_off(&(date + Days::new(1)));
            std::mem::replace(&mut self.dues, later)
                .into_values()
                .flatten()
                .collect()
        };
        apply_dues(&mut transaction, due, &mut self.counts)?;
        transaction.commit()?;
        Ok(())
    }

    fn due(&mut self, date: NaiveDate, due: Due) {
        self.dues.entry(date).or_default().push(due);
    }
}

/// Applies updates due: settlements, refunds (a refund row, and its payment marked), penalty
/// outcomes.
fn apply_dues(
    transaction: &mut postgres::Transaction<'_>,
    due: Vec<Due>,
    counts: &mut BackendCounts,
) -> Result<(), OpSimError> {
    let mut settled = Vec::new();
    let mut failed = Vec::new();
    let mut refunds = Vec::new();
    let mut paid = Vec::new();
    let mut cancelled = Vec::new();
    for due in due {
        match due {
            Due::Settle { payment_id, fail } if fail => failed.push(payment_id),
            Due::Settle { payment_id, .. } => settled.push(payment_id),
            Due::Refund(refund) => refunds.push(refund),
            Due::Penalty {
                penalty_id,
                status: "paid",
            } => paid.push(penalty_id),
            Due::Penalty { penalty_id, .. } => cancelled.push(penalty_id),
        }
    }
    for (ids, status) in [(&settled, "settled"), (&failed, "failed")] {
        if !ids.is_empty() {
            counts.late_updates += transaction.execute(
                "UPDATE payment SET status = $2 WHERE payment_id = ANY($1)",
                &[ids, &status],
            )?;
        }
    }
    if !refunds.is_empty() {
        counts.refunds += records::copy_in(transaction, &refunds)?;
        let ids: Vec<&str> = refunds
            .iter()
            .map(|refund| refund.payment_id.as_str())
            .collect();
        transaction.execute(
            "UPDATE payment SET status = 'refunded' WHERE payment_id = ANY($1)",
            &[&ids],
        )?;
    }
    for (ids, status) in [(&paid, "paid"), (&cancelled, "cancelled")] {
        if !ids.is_empty() {
            counts.penalty_updates += transaction.execute(
                "UPDATE penalty SET status = $2 WHERE penalty_id = ANY($1)",
                &[ids, &status],
            )?;
        }
    }
    Ok(())
}

impl TransactionSink for SimulatedBackend {
    fn city(&mut self, checked: &CheckedParams, city: &City) -> Result<(), SinkError> {
        Ok(self.write_city(checked, city)?)
    }

    fn day(
        &mut self,
        date: NaiveDate,
        sessions: &[ParkingSessionRow],
        slips: &[PaymentRow],
    ) -> Result<(), SinkError> {
        Ok(self.write_day(date, sessions, slips)?)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        // Updates due after the last simulated day stay undone: those payments are still pending
        // when the simulation ends, as they would be in the live system.
        tracing::info!(
            undone = self.dues.values().map(Vec::len).sum::<usize>(),
            "simulated backend finished"
        );
        Ok(())
    }
}
