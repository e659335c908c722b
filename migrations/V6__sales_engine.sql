-- Prototype 001's tables, with their quoted upper-case names. `sales` is
-- the built-in dataset `sales` (models/sales.yaml): partitioned by UTC
-- month of "DATE_PAYMENT", REVENUE an exact decimal (the prototype's float
-- for money was a bug). "ID_ORDER" is unique through clue's idempotency
-- ledger (scope 'sales'): a partitioned table's unique constraints must
-- include the partition key. Existing tables of these names are kept.
CREATE TABLE IF NOT EXISTS public.country (
    "ID_COUNTRY"   text PRIMARY KEY,
    "COUNTRY_NAME" text NOT NULL,
    "CONTINENT"    text
);

CREATE TABLE IF NOT EXISTS public.sales (
    "ID_ORDER"          text          NOT NULL,
    "ID_PRODUCT"        text          NOT NULL,
    "ID_BUYER"          text          NOT NULL,
    "ID_SELLER"         text          NOT NULL,
    "ID_SELLER_COUNTRY" text          NOT NULL,
    "ID_BUYER_COUNTRY"  text          NOT NULL,
    "DATE_PAYMENT"      timestamptz   NOT NULL,
    "BRAND"             text,
    "CATEGORY"          text          NOT NULL,
    "REVENUE"           numeric(14,2) NOT NULL CHECK ("REVENUE" >= 0)
) PARTITION BY RANGE ("DATE_PAYMENT");

DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.sales'::regclass) = 'p'
       AND to_regclass('public.sales_other') IS NULL THEN
        CREATE TABLE public.sales_other PARTITION OF public.sales DEFAULT;
        -- One order by its id; the newest first for listings.
        CREATE INDEX sales_id_order ON public.sales ("ID_ORDER");
        CREATE INDEX sales_payment ON public.sales ("DATE_PAYMENT", "ID_ORDER");
    END IF;
END
$$;
