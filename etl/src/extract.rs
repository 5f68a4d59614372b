//! The extraction queries: one window of transactions, shaped as warehouse rows.
//!
//! Money becomes cents (`numeric(10, 2)` times 100), bands fold into tariffs, penalties become
//! slips beside payments, and contact data is never selected: only its keyed hashes.

use parkcast_warehouse::rows::{CustomerRow, PaymentRow, TariffRow, VehicleRow};
use postgres::types::ToSql;

/// `[from, to)` on `row_xid`, as query parameters (`$1`, `$2`; xid8 travels as text).
pub struct Window {
    from: String,
    to: String,
}

impl Window {
    pub fn new(from: u64, to: u64) -> Window {
        Window {
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    pub fn params(&self) -> [&(dyn ToSql + Sync); 2] {
        [&self.from, &self.to]
    }
}

pub const CUSTOMERS: &str = "
    SELECT customer_id, email_hash, phone_hash, customer_type, registered_on
      FROM customer
     WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8";

pub fn customer(row: &postgres::Row, source: &str) -> CustomerRow {
    CustomerRow {
        customer_id: row.get(0),
        email_hash: row.get(1),
        phone_hash: row.get(2),
        customer_type: row.get(3),
        registered_on: row.get(4),
        source: source.to_owned(),
    }
}

pub const VEHICLES: &str = "
    SELECT vehicle_id, customer_id, plate_hash, kind, disabled_permit
      FROM vehicle
     WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8";

pub fn vehicle(row: &postgres::Row, source: &str) -> VehicleRow {
    VehicleRow {
        vehicle_id: row.get(0),
        customer_id: row.get(1),
        plate_hash: row.get(2),
        vehicle_type: row.get(3),
        disabled_permit: row.get(4),
        source: source.to_owned(),
    }
}

/// A tariff changes when its row or its band's does.
pub const TARIFFS: &str = "
    SELECT t.tariff_id::text, t.code, t.zone_id, t.lot_id, t.band_id,
           (extract(epoch FROM b.starts_at) / 60)::int4,
           (extract(epoch FROM b.ends_at) / 60)::int4,
           array_to_string(b.weekdays, ','),
           (t.price_per_hour * 100)::int8, (t.cap_per_stay * 100)::int8,
           (t.flat_price * 100)::int8, t.max_stay_minutes, (t.penalty_amount * 100)::int8,
           t.valid_from, t.valid_until, o.currency::text
      FROM tariff t
      JOIN time_band b ON b.band_id = t.band_id
      JOIN zone z ON z.zone_id = t.zone_id
      JOIN operator o ON o.operator_id = z.operator_id
     WHERE (t.row_xid >= $1::text::xid8 AND t.row_xid < $2::text::xid8)
        OR (b.row_xid >= $1::text::xid8 AND b.row_xid < $2::text::xid8)";

pub fn tariff(row: &postgres::Row, source: &str) -> TariffRow {
    TariffRow {
        tariff_id: row.get(0),
        code: row.get(1),
        zone_id: row.get(2),
        lot_id: row.get(3),
        band_id: row.get(4),
        band_starts_minute: row.get(5),
        band_ends_minute: row.get(6),
        band_weekdays: row.get(7),
        cents_per_hour: row.get(8),
        cap_cents: row.get(9),
        flat_cents: row.get(10),
        max_stay_minutes: row.get(11),
        penalty_cents: row.get(12),
        valid_from: row.get(13),
        valid_until: row.get(14),
        currency: row.get(15),
        source: source.to_owned(),
    }
}

/// The payments written in the window or refunded in it, and the penalties written in it.
const SLIPS_IN_WINDOW: &str = "
    WITH changed_payment AS (
        SELECT payment_id FROM payment
         WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8
        UNION
        SELECT payment_id FROM refund
         WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8
    ),
    slip AS (
        SELECT p.payment_id AS slip_id, coalesce(p.session_id, '') AS session_id,
               p.customer_id, p.lot_id, coalesce(p.tariff_id::text, '') AS tariff_id,
               (p.amount * 100)::int8 AS amount_cents, 0::int8 AS penalty_cents,
               o.currency::text AS currency, p.paid_at AS paid_ts, p.status,
               (SELECT (sum(r.amount) * 100)::int8 FROM refund r
                 WHERE r.payment_id = p.payment_id) AS refunded_cents,
               p.paid_from, p.paid_until
          FROM payment p
          JOIN changed_payment c ON c.payment_id = p.payment_id
          JOIN lot l ON l.lot_id = p.lot_id
          JOIN zone z ON z.zone_id = l.zone_id
          JOIN operator o ON o.operator_id = z.operator_id
        UNION ALL
        SELECT e.penalty_id, coalesce(e.session_id, ''), v.customer_id, e.lot_id,
               coalesce((SELECT p.tariff_id::text FROM payment p
                          WHERE p.payment_id = e.payment_id), ''),
               0::int8, (e.amount * 100)::int8, o.currency::text, e.issued_at, e.status,
               NULL::int8, NULL::timestamptz, NULL::timestamptz
          FROM penalty e
          LEFT JOIN vehicle v ON v.vehicle_id = e.vehicle_id
          JOIN lot l ON l.lot_id = e.lot_id
          JOIN zone z ON z.zone_id = l.zone_id
          JOIN operator o ON o.operator_id = z.operator_id
         WHERE e.row_xid >= $1::text::xid8 AND e.row_xid < $2::text::xid8
    )";

/// The window's slips in paid order (a partition date's slips arrive together).
pub fn slips() -> String {
    format!(
        "{SLIPS_IN_WINDOW}
    SELECT slip_id, session_id, customer_id, lot_id, tariff_id, amount_cents, penalty_cents,
           currency, paid_ts, status, refunded_cents, paid_from, paid_until
      FROM slip ORDER BY paid_ts, slip_id"
    )
}

/// How many slips the window holds (for progress): the same set as [`slips`] (its joins follow
/// foreign keys, so they drop nothing), counted without the joins, the refund sums or the sort.
pub const SLIP_COUNT: &str = "
    SELECT (SELECT count(*) FROM (
                SELECT payment_id FROM payment
                 WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8
                UNION
                SELECT payment_id FROM refund
                 WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8) changed)
         + (SELECT count(*) FROM penalty
             WHERE row_xid >= $1::text::xid8 AND row_xid < $2::text::xid8)";

pub fn slip(row: &postgres::Row, source: &str) -> PaymentRow {
    PaymentRow {
        slip_id: row.get(0),
        session_id: row.get(1),
        customer_id: row.get(2),
        lot_id: row.get(3),
        tariff_id: row.get(4),
        amount_cents: row.get(5),
        penalty_cents: row.get(6),
        currency: row.get(7),
        paid_ts: row.get(8),
        source: source.to_owned(),
        status: row.get(9),
        refunded_cents: row.get(10),
        paid_from: row.get(11),
        paid_until: row.get(12),
    }
}
