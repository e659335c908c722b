-- Prototype 004's analytical tables, kept by `clue etl run` from a source
-- database's `operations` schema (never written). They are the built-in
-- datasets `analytical_orders` and `analytical_order_items`
-- (models/*.yaml), whose rollups every sync batch keeps exact through
-- updates and deletes. Amounts are exact numerics as computed from the
-- source (Σ quantity × unit price), never rounded.
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE IF NOT EXISTS analytics.analytical_orders (
    order_id      bigint  PRIMARY KEY,
    customer_id   bigint  NOT NULL,
    customer_name text    NOT NULL,
    order_date    date,
    delivery_date date,
    status        text    NOT NULL,
    total_items   bigint  NOT NULL,
    total_amount  numeric NOT NULL,
    created_at    timestamp,
    updated_at    timestamp,
    created_by    bigint,
    updated_by    bigint
);
CREATE INDEX IF NOT EXISTS analytical_orders_status ON analytics.analytical_orders (status);
CREATE INDEX IF NOT EXISTS analytical_orders_delivery_date ON analytics.analytical_orders (delivery_date);
CREATE INDEX IF NOT EXISTS analytical_orders_customer ON analytics.analytical_orders (customer_id);

CREATE TABLE IF NOT EXISTS analytics.analytical_order_items (
    id            bigint  PRIMARY KEY,
    order_id      bigint  NOT NULL,
    product_id    bigint  NOT NULL,
    product_name  text    NOT NULL,
    quantity      bigint  NOT NULL,
    price         numeric NOT NULL,
    amount        numeric NOT NULL,
    order_status  text    NOT NULL,
    delivery_date date,
    created_at    timestamp,
    updated_at    timestamp,
    created_by    bigint,
    updated_by    bigint
);
CREATE INDEX IF NOT EXISTS analytical_order_items_order ON analytics.analytical_order_items (order_id);
CREATE INDEX IF NOT EXISTS analytical_order_items_product ON analytics.analytical_order_items (product_id);
CREATE INDEX IF NOT EXISTS analytical_order_items_status ON analytics.analytical_order_items (order_status);

-- How far each source table has been read: rows whose (updated_at, id) is
-- at or before the mark are in the analytical tables. Advanced in the
-- transaction that writes what was read.
CREATE TABLE clue.sync_watermarks (
    source       text        NOT NULL,
    source_table text        NOT NULL,
    updated_at   timestamp   NOT NULL,
    id           bigint      NOT NULL,
    synced_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, source_table)
);
