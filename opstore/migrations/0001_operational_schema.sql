-- The operational store of a parking operator: what its transactional backend keeps, normalised
-- (a snowflake: zones under operators, lots under zones, tariffs under zones and bands, vehicles
-- under customers, payments under sessions and tariffs, refunds and penalties under payments).
--
-- Every table carries the two columns the ETL extracts by (`parkcast etl`), kept by one trigger:
--   row_version  a number from one sequence, new on every insert and update, so "changed since" is
--                one comparison across every table;
--   row_xid      the id of the transaction that wrote the row: a row written by a transaction still
--                open when the ETL looks has a row_version below ones already visible, so the ETL
--                reads only rows whose transaction is older than every transaction in flight
--                (pg_snapshot_xmin), and never skips a late commit.
-- Contact data (email, phone, plate) stays here; only keyed hashes (email_hash, phone_hash,
-- plate_hash: HMAC-SHA256 with the city's PII key, computed by the writer as the warehouse's
-- `pii` module does) ever leave for the warehouse.

CREATE SEQUENCE etl_row_version AS bigint;

CREATE FUNCTION etl_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_version := nextval('etl_row_version');
    NEW.row_xid := pg_current_xact_id();
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE operator (
    operator_id  text PRIMARY KEY,
    name         text NOT NULL,
    timezone     text NOT NULL,
    currency     char(3) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 0,
    row_xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TABLE zone (
    zone_id      text PRIMARY KEY,
    operator_id  text NOT NULL REFERENCES operator,
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 0,
    row_xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TABLE lot (
    lot_id       text PRIMARY KEY,
    zone_id      text NOT NULL REFERENCES zone,
    name         text NOT NULL,
    capacity     integer NOT NULL CHECK (capacity >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 0,
    row_xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- A time band of the day a price applies in (local time of the operator), on some days of the week.
CREATE TABLE time_band (
    band_id      text PRIMARY KEY,
    name         text NOT NULL,
    starts_at    time NOT NULL,
    ends_at      time NOT NULL,
    -- ISO weekdays (1 = Monday) the band applies on.
    weekdays     smallint[] NOT NULL CHECK (weekdays <@ ARRAY[1,2,3,4,5,6,7]::smallint[]),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    row_version  bigint NOT NULL DEFAULT 0,
    row_xid      xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- The price per hour of a zone in a band, valid over [valid_from, valid_until): prices change, and
-- a stay is priced by the tariff in force when it started.
CREATE TABLE tariff (
    tariff_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    zone_id           text NOT NULL REFERENCES zone,
    band_id           text NOT NULL REFERENCES time_band,
    price_per_hour    numeric(10, 2) NOT NULL CHECK (price_per_hour >= 0),
    max_stay_minutes  integer CHECK (max_stay_minutes > 0),
    valid_from        timestamptz NOT NULL,
    valid_until       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    row_version       bigint NOT NULL DEFAULT 0,
    row_xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
CREATE INDEX tariff_in_force ON tariff (zone_id, band_id, valid_from);

CREATE TABLE customer (
    customer_id      text PRIMARY KEY,
    -- Contact data, as the backend keeps it; never extracted.
    email            text,
    phone            text,
    -- HMAC-SHA256 (hex) of the normalised contact data with the city's PII key: what the
    -- warehouse's dim_customer gets.
    email_hash       text,
    phone_hash       text,
    customer_type    text NOT NULL CHECK (customer_type IN ('subscriber', 'visitor')),
    registered_on    date NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    row_version      bigint NOT NULL DEFAULT 0,
    row_xid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TABLE vehicle (
    vehicle_id       text PRIMARY KEY,
    customer_id      text REFERENCES customer,
    -- The number plate, as the backend keeps it; never extracted.
    plate            text NOT NULL,
    plate_hash       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('car', 'van', 'motorcycle', 'ev')),
    disabled_permit  boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    row_version      bigint NOT NULL DEFAULT 0,
    row_xid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- What a customer paid for a stay (the session id is the sensor stream's), at which tariff.
CREATE TABLE payment (
    payment_id    text PRIMARY KEY,
    session_id    text,
    lot_id        text NOT NULL REFERENCES lot,
    customer_id   text REFERENCES customer,
    vehicle_id    text REFERENCES vehicle,
    tariff_id     bigint REFERENCES tariff,
    paid_at       timestamptz NOT NULL,
    -- The stay paid for.
    paid_from     timestamptz NOT NULL,
    paid_until    timestamptz NOT NULL,
    amount        numeric(10, 2) NOT NULL CHECK (amount >= 0),
    method        text NOT NULL CHECK (method IN ('card', 'app', 'cash', 'permit')),
    status        text NOT NULL CHECK (status IN ('pending', 'settled', 'failed', 'refunded')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    row_version   bigint NOT NULL DEFAULT 0,
    row_xid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CHECK (paid_until > paid_from)
);
CREATE INDEX payment_session ON payment (session_id);

-- Money given back, often days later; it amends its payment (the ETL re-loads the payment).
CREATE TABLE refund (
    refund_id     text PRIMARY KEY,
    payment_id    text NOT NULL REFERENCES payment,
    refunded_at   timestamptz NOT NULL,
    amount        numeric(10, 2) NOT NULL CHECK (amount > 0),
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    row_version   bigint NOT NULL DEFAULT 0,
    row_xid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- A fine for an overstay or a stay without payment.
CREATE TABLE penalty (
    penalty_id    text PRIMARY KEY,
    session_id    text,
    lot_id        text NOT NULL REFERENCES lot,
    vehicle_id    text REFERENCES vehicle,
    payment_id    text REFERENCES payment,
    issued_at     timestamptz NOT NULL,
    reason        text NOT NULL CHECK (reason IN ('overstay', 'unpaid', 'wrong_zone')),
    amount        numeric(10, 2) NOT NULL CHECK (amount > 0),
    status        text NOT NULL CHECK (status IN ('issued', 'paid', 'cancelled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    row_version   bigint NOT NULL DEFAULT 0,
    row_xid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- One trigger per table, and the ETL's index per table.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['operator', 'zone', 'lot', 'time_band', 'tariff', 'customer',
                                'vehicle', 'payment', 'refund', 'penalty']
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION etl_touch()', name || '_etl_touch', name);
        EXECUTE format('CREATE INDEX %I ON %I (row_version)', name || '_row_version', name);
    END LOOP;
END;
$$;
