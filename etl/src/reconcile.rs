//! The operational store's slips joined with the sensor archive's stays (`parkcast reconcile`):
//! each stay gets its payments, tariff and penalties, and the exceptions a controller chases are
//! listed with counts and amounts:
//!
//! - **stays without payment**: a finished stay at a lot with a tariff and no payment at all
//!   (amount estimated at the lot's mean payment in the period);
//! - **stays whose payment failed**: payments recorded, none settled or pending;
//! - **payments without a stay**: a payment naming no stay, or one the archive does not have;
//! - **overstays**: a stay that ended more than [`OVERSTAY_GRACE_MINUTES`] after what was paid
//!   for, fined or not.
//!
//! A stay's slips are paid between its entry and a few days after (gated lots charge at the exit,
//! fines come after the overstay), so the join walks the partition dates in order holding
//! `2 * max_stay_days + 1` days of stays and slips: memory follows the days held, not the years
//! loaded. Stays within `max_stay_days` of either end of the archive are left out (their slips
//! may lie outside it), and so are payments whose paid period starts there.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Days, NaiveDate, Utc};
use parkcast_warehouse::rows::{LotRow, ParkingSessionRow, PaymentRow, TariffRow};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{FrameRow, Warehouse, partition_date_of};

use crate::EtlError;

/// A stay that ends this long after its paid period is an overstay.
pub const OVERSTAY_GRACE_MINUTES: i64 = 5;

/// A stay the report lists.
#[derive(Debug, Clone, PartialEq)]
pub struct StayException {
    /// The stay.
    pub session_id: String,
    /// Its lot.
    pub lot_id: String,
    /// Entry.
    pub entry_ts: DateTime<Utc>,
    /// Exit.
    pub exit_ts: DateTime<Utc>,
    /// Money at stake, cents: for a stay without payment, the lot's mean payment in the period.
    pub cents: i64,
}

/// A payment without a stay.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanPayment {
    /// The payment.
    pub slip_id: String,
    /// The stay it names ("" for none).
    pub session_id: String,
    /// The lot.
    pub lot_id: String,
    /// When paid.
    pub paid_ts: DateTime<Utc>,
    /// Amount net of refunds, cents.
    pub cents: i64,
}

/// A stay longer than paid for.
#[derive(Debug, Clone, PartialEq)]
pub struct Overstay {
    /// The stay.
    pub session_id: String,
    /// Its lot.
    pub lot_id: String,
    /// Minutes beyond the paid period.
    pub minutes: i64,
    /// Fines issued for it (not cancelled), cents; 0: not fined.
    pub penalty_cents: i64,
}

/// What a reconciliation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciliation {
    /// The `source` reconciled.
    pub source: String,
    /// The first and last entry dates of the stays reconciled (UTC).
    pub period: (NaiveDate, NaiveDate),
    /// Finished stays at lots with a tariff in the period.
    pub stays: u64,
    /// Of those, stays with a settled or pending payment.
    pub paid_stays: u64,
    /// Their payments net of refunds, cents.
    pub paid_cents: i64,
    /// Refunded on them, cents.
    pub refunded_cents: i64,
    /// Payments still pending.
    pub pending_payments: u64,
    /// Stays without any payment.
    pub unpaid: Vec<StayException>,
    /// Stays whose every payment failed.
    pub failed: Vec<StayException>,
    /// Payments without a stay.
    pub orphans: Vec<OrphanPayment>,
    /// Overstays.
    pub overstays: Vec<Overstay>,
}

/// One stay with what was paid for it: the join itself.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedStay {
    /// The stay.
    pub session_id: String,
    /// Its lot.
    pub lot_id: String,
    /// Entry.
    pub entry_ts: DateTime<Utc>,
    /// Exit; none while the car was still parked at the end of the archive.
    pub exit_ts: Option<DateTime<Utc>>,
    /// Whether the lot charges (it or its zone has a tariff).
    pub charging: bool,
    /// Payments naming the stay, failed ones included.
    pub payments: u32,
    /// Paid for it, net of refunds, cents (failed payments excluded).
    pub paid_cents: i64,
    /// Refunded on it, cents.
    pub refunded_cents: i64,
    /// The tariff charged (`dim_tariff.tariff_id`), when a payment names one.
    pub tariff_id: Option<String>,
    /// End of the period paid for.
    pub paid_until: Option<DateTime<Utc>>,
    /// Fines for it (not cancelled), cents.
    pub penalty_cents: i64,
}

/// Joins `source`'s stays with its slips and lists the exceptions.
pub fn reconcile(
    warehouse: &Warehouse,
    source: &str,
    max_stay_days: u32,
) -> Result<Reconciliation, EtlError> {
    reconcile_with(warehouse, source, max_stay_days, &mut |_| Ok(()))
}

/// [`reconcile`], handing every stay of the period, joined, to `each_stay` as the walk reaches it
/// (in entry-date order): the joined data without holding it all.
pub fn reconcile_with(
    warehouse: &Warehouse,
    source: &str,
    max_stay_days: u32,
    each_stay: &mut dyn FnMut(JoinedStay) -> Result<(), EtlError>,
) -> Result<Reconciliation, EtlError> {
    if !warehouse.has_table(Table::DimTariff) || !warehouse.has_table(Table::FactPayment) {
        return Err(EtlError::NothingToReconcile(
            "the warehouse has no tariffs or payments: run `parkcast etl` first".to_owned(),
        ));
    }
    let charging = charging_lots(warehouse, source)?;
    let sessions = DatedFiles::of(warehouse, Table::FactParkingSession)?;
    let slips = DatedFiles::of(warehouse, Table::FactPayment)?;
    let (Some(first), Some(last)) = (sessions.first(), sessions.last()) else {
        return Err(EtlError::NothingToReconcile(
            "the warehouse has no parking sessions to reconcile payments with".to_owned(),
        ));
    };
    let margin = Days::new(u64::from(max_stay_days));
    let (from, until) = (first + margin, last - margin);
    if from > until {
        return Err(EtlError::NothingToReconcile(format!(
            "the sessions span {first} to {last}: too short for stays of up to {max_stay_days} days at both ends"
        )));
    }

    let mut report = Reconciliation {
        source: source.to_owned(),
        period: (from, until),
        stays: 0,
        paid_stays: 0,
        paid_cents: 0,
        refunded_cents: 0,
        pending_payments: 0,
        unpaid: Vec::new(),
        failed: Vec::new(),
        orphans: Vec::new(),
        overstays: Vec::new(),
    };
    // Days held: stays by entry date, slips by paid date.
    let mut held_stays: BTreeMap<NaiveDate, Vec<ParkingSessionRow>> = BTreeMap::new();
    let mut held_slips: BTreeMap<NaiveDate, Vec<PaymentRow>> = BTreeMap::new();
    // Per lot, (sum, count) of payments: the estimate of an unpaid stay's amount.
    let mut lot_means: HashMap<String, (i64, i64)> = HashMap::new();
    let mut unpaid_stays: Vec<ParkingSessionRow> = Vec::new();
    let mut date = from;
    while date <= until {
        let (low, high) = (date - margin, date + margin);
        held_stays.retain(|day, _| *day >= low);
        held_slips.retain(|day, _| *day >= low);
        let mut day = low;
        while day <= high {
            if let Entry::Vacant(entry) = held_stays.entry(day) {
                entry.insert(sessions.read(warehouse, day, source)?);
            }
            if let Entry::Vacant(entry) = held_slips.entry(day) {
                entry.insert(slips.read(warehouse, day, source)?);
            }
            day = day + Days::new(1);
        }

        let mut by_session: HashMap<&str, Vec<&PaymentRow>> = HashMap::new();
        for slip in held_slips.values().flatten() {
            by_session
                .entry(slip.session_id.as_str())
                .or_default()
                .push(slip);
        }
        let known: HashSet<&str> = held_stays
            .values()
            .flatten()
            .map(|stay| stay.session_id.as_str())
            .collect();

        for stay in held_stays.get(&date).into_iter().flatten() {
            let stay_slips = by_session
                .get(stay.session_id.as_str())
                .map_or(&[][..], Vec::as_slice);
            let payments: Vec<&PaymentRow> = stay_slips
                .iter()
                .copied()
                .filter(|slip| slip.penalty_cents == 0)
                .collect();
            let penalty_cents: i64 = stay_slips
                .iter()
                .filter(|slip| {
                    slip.penalty_cents > 0 && slip.status.as_deref() != Some("cancelled")
                })
                .map(|slip| slip.penalty_cents)
                .sum();
            let valid: Vec<&PaymentRow> = payments
                .iter()
                .copied()
                .filter(|slip| slip.status.as_deref() != Some("failed"))
                .collect();
            each_stay(JoinedStay {
                session_id: stay.session_id.clone(),
                lot_id: stay.lot_id.clone(),
                entry_ts: stay.entry_ts,
                exit_ts: stay.exit_ts,
                charging: charging.contains(&stay.lot_id),
                payments: payments.len() as u32,
                paid_cents: valid
                    .iter()
                    .map(|slip| slip.amount_cents - slip.refunded_cents.unwrap_or(0))
                    .sum(),
                refunded_cents: valid
                    .iter()
                    .map(|slip| slip.refunded_cents.unwrap_or(0))
                    .sum(),
                tariff_id: valid
                    .iter()
                    .map(|slip| slip.tariff_id.clone())
                    .find(|tariff| !tariff.is_empty()),
                paid_until: valid.iter().filter_map(|slip| slip.paid_until).max(),
                penalty_cents,
            })?;
            let Some(exit_ts) = stay.exit_ts else {
                continue;
            };
            if !charging.contains(&stay.lot_id) {
                continue;
            }
            report.stays += 1;
            if payments.is_empty() {
                unpaid_stays.push(stay.clone());
                continue;
            }
            if valid.is_empty() {
                report.failed.push(StayException {
                    session_id: stay.session_id.clone(),
                    lot_id: stay.lot_id.clone(),
                    entry_ts: stay.entry_ts,
                    exit_ts,
                    cents: payments.iter().map(|slip| slip.amount_cents).sum(),
                });
                continue;
            }
            report.paid_stays += 1;
            for slip in &valid {
                let refunded = slip.refunded_cents.unwrap_or(0);
                report.paid_cents += slip.amount_cents - refunded;
                report.refunded_cents += refunded;
                if slip.status.as_deref() == Some("pending") {
                    report.pending_payments += 1;
                }
                let mean = lot_means.entry(stay.lot_id.clone()).or_default();
                mean.0 += slip.amount_cents;
                mean.1 += 1;
            }
            let paid_until = valid.iter().filter_map(|slip| slip.paid_until).max();
            if let Some(paid_until) = paid_until {
                let minutes = (exit_ts - paid_until).num_minutes();
                if minutes > OVERSTAY_GRACE_MINUTES {
                    report.overstays.push(Overstay {
                        session_id: stay.session_id.clone(),
                        lot_id: stay.lot_id.clone(),
                        minutes,
                        penalty_cents,
                    });
                }
            }
        }

        for slip in held_slips.get(&date).into_iter().flatten() {
            if slip.penalty_cents > 0 {
                continue;
            }
            let starts = slip.paid_from.unwrap_or(slip.paid_ts).date_naive();
            if starts < from || starts > until {
                continue;
            }
            if slip.session_id.is_empty() || !known.contains(slip.session_id.as_str()) {
                report.orphans.push(OrphanPayment {
                    slip_id: slip.slip_id.clone(),
                    session_id: slip.session_id.clone(),
                    lot_id: slip.lot_id.clone(),
                    paid_ts: slip.paid_ts,
                    cents: slip.amount_cents - slip.refunded_cents.unwrap_or(0),
                });
            }
        }
        date = date + Days::new(1);
    }
    report.unpaid = unpaid_stays
        .into_iter()
        .map(|stay| {
            let (sum, count) = lot_means.get(&stay.lot_id).copied().unwrap_or((0, 0));
            StayException {
                cents: if count > 0 { sum / count } else { 0 },
                exit_ts: stay.exit_ts.expect("only finished stays are listed"),
                session_id: stay.session_id,
                lot_id: stay.lot_id,
                entry_ts: stay.entry_ts,
            }
        })
        .collect();
    Ok(report)
}

/// The lots of `source` that charge: a lot with its own tariff, or in a zone with a zone tariff.
fn charging_lots(warehouse: &Warehouse, source: &str) -> Result<BTreeSet<String>, EtlError> {
    let tariffs: Vec<TariffRow> = warehouse.read_rows()?;
    let lots: Vec<LotRow> = warehouse.read_rows()?;
    let zones: BTreeSet<&str> = tariffs
        .iter()
        .filter(|tariff| tariff.source == source && tariff.lot_id.is_none())
        .map(|tariff| tariff.zone_id.as_str())
        .collect();
    let mut charging: BTreeSet<String> = tariffs
        .iter()
        .filter(|tariff| tariff.source == source)
        .filter_map(|tariff| tariff.lot_id.clone())
        .collect();
    charging.extend(
        lots.into_iter()
            .filter(|lot| zones.contains(lot.zone_id.as_str()))
            .map(|lot| lot.lot_id),
    );
    Ok(charging)
}

/// A fact table's files by partition date.
struct DatedFiles {
    table: Table,
    by_date: BTreeMap<NaiveDate, Vec<PathBuf>>,
}

impl DatedFiles {
    fn of(warehouse: &Warehouse, table: Table) -> Result<DatedFiles, EtlError> {
        let mut by_date: BTreeMap<NaiveDate, Vec<PathBuf>> = BTreeMap::new();
        for path in warehouse.table_files(table)? {
            if let Some(date) = partition_date_of(&path) {
                by_date.entry(date).or_default().push(path);
            }
        }
        Ok(DatedFiles { table, by_date })
    }

    fn first(&self) -> Option<NaiveDate> {
        self.by_date.keys().next().copied()
    }

    fn last(&self) -> Option<NaiveDate> {
        self.by_date.keys().next_back().copied()
    }

    fn read<R: FrameRow + HasSource>(
        &self,
        warehouse: &Warehouse,
        date: NaiveDate,
        source: &str,
    ) -> Result<Vec<R>, EtlError> {
        let Some(files) = self.by_date.get(&date) else {
            return Ok(Vec::new());
        };
        debug_assert_eq!(R::TABLE, self.table);
        let frame = warehouse
            .scan_files(self.table, files)?
            .collect()
            .map_err(|source| {
                EtlError::Warehouse(parkcast_warehouse::WarehouseError::Polars {
                    context: format!("reading {} of {date}", self.table),
                    source,
                })
            })?;
        Ok(R::from_frame(&frame)?
            .into_iter()
            .filter(|row| row.source() == source)
            .collect())
    }
}

/// Rows that say where they came from.
trait HasSource {
    fn source(&self) -> &str;
}

impl HasSource for ParkingSessionRow {
    fn source(&self) -> &str {
        &self.source
    }
}

impl HasSource for PaymentRow {
    fn source(&self) -> &str {
        &self.source
    }
}
