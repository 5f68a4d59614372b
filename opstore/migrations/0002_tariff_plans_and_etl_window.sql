-- Tariff plans as operators run them, and what the ETL needs to read a window of transactions.
--
-- 1. A tariff belongs to a zone and may be one lot's own price (a garage's), and says how a stay is
--    charged beyond a price per hour: a cap per stay (a day rate), a flat price (event days), the
--    fine for an overstay. `code` names the plan across its price changes (a change is a new row
--    with a new validity range, so a payment keeps the tariff it was charged under).
ALTER TABLE tariff
    ADD COLUMN lot_id          text REFERENCES lot,
    ADD COLUMN code            text NOT NULL DEFAULT 'standard',
    ADD COLUMN cap_per_stay    numeric(10, 2) CHECK (cap_per_stay >= 0),
    ADD COLUMN flat_price      numeric(10, 2) CHECK (flat_price >= 0),
    ADD COLUMN penalty_amount  numeric(10, 2) CHECK (penalty_amount >= 0);
CREATE INDEX tariff_of_lot ON tariff (lot_id, band_id, valid_from);

-- 2. `parkcast etl` reads the rows written by the transactions that finished between two of its
--    runs: row_xid in [the previous run's pg_snapshot_xmin, this run's). Those transactions are all
--    finished when it looks, and no later write can carry an xid below that bound, so each window
--    is complete and fixed; an index per table serves the range.
--    The window's bounds are transaction ids of one Postgres cluster; a warehouse loaded from one
--    database must not continue from another. `etl_source` names this database once, at random,
--    and the ETL's checkpoint records it.
CREATE TABLE etl_source (
    source_id   text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO etl_source DEFAULT VALUES;

-- 3. Rows are never deleted: the ETL cannot see a delete, and the warehouse would keep the row.
--    The backend cancels, refunds or blanks contact data instead (an erasure request is an update
--    of the contact columns, which never leave this database anyway).
CREATE FUNCTION etl_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are not deleted (the ETL cannot see a delete): set a status instead',
        TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['operator', 'zone', 'lot', 'time_band', 'tariff', 'customer',
                                'vehicle', 'payment', 'refund', 'penalty']
    LOOP
        EXECUTE format('CREATE INDEX %I ON %I (row_xid)', name || '_row_xid', name);
        EXECUTE format('CREATE TRIGGER %I BEFORE DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION etl_refuse_delete()',
                       name || '_no_delete', name);
    END LOOP;
END;
$$;
