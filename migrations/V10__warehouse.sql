-- Prototype 002's warehouse, with its bugs fixed: daily batches land as
-- received in `raw`, are cleaned (the rows that break a rule kept in
-- `dw.quarantine` with its code), and become a type 2 customer dimension,
-- product and shop dimensions, and sales facts partitioned by month, with
-- the KPI marts kept by the load in the same transaction.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS dw;
CREATE SCHEMA IF NOT EXISTS mart;

-- One row per loaded batch: it is loaded exactly once; its quality report.
CREATE TABLE clue.warehouse_batches (
    batch_date       date        PRIMARY KEY,
    customers_file   text        NOT NULL,
    sales_file       text        NOT NULL,
    customers_sha256 text        NOT NULL,
    sales_sha256     text        NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    report           jsonb       NOT NULL
);

-- The files as received: every field as text, with where it came from (a
-- row's line, or its row number in a Parquet file). Appended a batch at a
-- time, so a block-range index finds a batch (to replace it) at little cost.
CREATE TABLE raw.customer (
    batch_date   date        NOT NULL,
    line         bigint      NOT NULL,
    customer_id  text,
    name         text,
    city         text,
    source_file  text        NOT NULL,
    load_time    timestamptz NOT NULL
);
CREATE INDEX raw_customer_batch ON raw.customer USING brin (batch_date);
CREATE TABLE raw.customer_sales (
    batch_date       date        NOT NULL,
    line             bigint      NOT NULL,
    sale_id          bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    customer_id      text,
    product          text,
    sales_amount     text,
    shop_id          text,
    transaction_date text,
    source_file      text        NOT NULL,
    load_time        timestamptz NOT NULL
);
CREATE INDEX raw_customer_sales_batch ON raw.customer_sales USING brin (batch_date);

-- Customers, type 2: a change of name or city closes the current version
-- (valid_to) and opens one. The database itself keeps one current version
-- per customer and no two versions of a customer overlapping.
CREATE TABLE dw.dim_customer (
    customer_key  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id   bigint      NOT NULL,
    customer_name text        NOT NULL,
    city          text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT true,
    valid_from    timestamp   NOT NULL,
    valid_to      timestamp,
    batch_date    date        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    CHECK (is_active = (valid_to IS NULL)),
    EXCLUDE USING gist (int8range(customer_id, customer_id, '[]') WITH =,
                        tsrange(valid_from, valid_to) WITH &&)
);
CREATE UNIQUE INDEX dim_customer_current ON dw.dim_customer (customer_id) WHERE valid_to IS NULL;
CREATE INDEX dim_customer_versions ON dw.dim_customer (customer_id, valid_from);

CREATE TABLE dw.dim_product (
    product_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product     text   NOT NULL UNIQUE
);
CREATE TABLE dw.dim_shop (
    shop_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shop_id  bigint NOT NULL UNIQUE
);

-- Sales facts, by month of transaction (the partition key in every unique
-- constraint; facts reference only dimensions). A sale is one customer,
-- product, shop, instant and amount: the same again is a duplicate. The
-- keys come from joins to the dimensions in the load; there is no FOREIGN
-- KEY constraint, whose per-row checks would double a load's time (a test
-- checks that no key is orphaned, and a replace refuses to orphan one).
CREATE TABLE dw.fact_sales (
    sales_key        bigint        GENERATED ALWAYS AS IDENTITY,
    customer_key     bigint        NOT NULL,
    customer_id      bigint        NOT NULL,
    product_key      bigint        NOT NULL,
    shop_key         bigint        NOT NULL,
    sales_amount     numeric(12,2) NOT NULL,
    transaction_date timestamp     NOT NULL,
    batch_date       date          NOT NULL,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (sales_key, transaction_date),
    -- Also a customer's sales in time order (the latest purchase before a date).
    UNIQUE (customer_id, transaction_date, product_key, shop_key, sales_amount)
) PARTITION BY RANGE (transaction_date);
CREATE TABLE dw.fact_sales_other PARTITION OF dw.fact_sales DEFAULT;
CREATE INDEX fact_sales_batch ON dw.fact_sales USING brin (batch_date);

-- Rows that broke a rule, with its code, until fixed and replayed.
CREATE TABLE dw.quarantine (
    quarantine_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_date    date        NOT NULL,
    source        text        NOT NULL CHECK (source IN ('customers', 'sales')),
    line          bigint      NOT NULL,
    rule          text        NOT NULL,
    reason        text        NOT NULL,
    record        jsonb       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    released_at   timestamptz
);
CREATE INDEX quarantine_pending ON dw.quarantine (rule, batch_date) WHERE released_at IS NULL;

-- KPI marts, kept by each load in its transaction (and rebuilt by
-- `clue warehouse refresh`): spending per customer and month, and each
-- customer's latest purchase.
CREATE TABLE mart.customer_monthly_spending (
    customer_id    bigint        NOT NULL,
    year           int           NOT NULL,
    month          int           NOT NULL,
    monthly_amount numeric(14,2) NOT NULL,
    PRIMARY KEY (customer_id, year, month)
);
CREATE TABLE mart.customer_last_purchase (
    customer_id   bigint    PRIMARY KEY,
    last_purchase timestamp NOT NULL
);

-- The prototype's KPI, current at every commit: per customer, year and
-- month, the month's amount, the running total within the year, and that
-- total as a percentage of the year's, rounded to 2 places.
CREATE VIEW dw.customer_ytd_spending AS
SELECT s.customer_id,
       c.customer_name,
       s.year,
       s.month,
       s.monthly_amount,
       sum(s.monthly_amount) OVER (PARTITION BY s.customer_id, s.year ORDER BY s.month) AS ytd_amount,
       round(100 * sum(s.monthly_amount) OVER (PARTITION BY s.customer_id, s.year ORDER BY s.month)
             / nullif(sum(s.monthly_amount) OVER (PARTITION BY s.customer_id, s.year), 0), 2) AS ytd_percentage
  FROM mart.customer_monthly_spending s
  LEFT JOIN dw.dim_customer c ON c.customer_id = s.customer_id AND c.valid_to IS NULL;

-- Days since each customer's latest purchase on or before today (null:
-- none); other reference dates: `GET /kpis/days-since-last-purchase?as_of=`.
CREATE VIEW mart.customer_days_since_last_purchase AS
SELECT c.customer_id,
       c.customer_name,
       CURRENT_DATE AS reference_date,
       (CURRENT_DATE - l.last_purchase::date) AS days_since_last_purchase
  FROM dw.dim_customer c
  LEFT JOIN mart.customer_last_purchase l
    ON l.customer_id = c.customer_id AND l.last_purchase < CURRENT_DATE + 1
 WHERE c.valid_to IS NULL;
