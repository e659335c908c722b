-- The built-in sales_report table of prototype 000, partitioned by month of
-- sales_date. The partition key is part of the primary key (a requirement of
-- partitioning, and of Citus later on).
CREATE TABLE sales_report (
    sale_id       bigserial,
    product_id    integer        NOT NULL,
    product_name  varchar(255)   NOT NULL,
    region        varchar(100)   NOT NULL,
    sales_date    date           NOT NULL,
    quantity_sold integer        NOT NULL,
    sales_amount  numeric(10, 2) NOT NULL,
    unit_price    numeric(10, 2) NOT NULL,
    PRIMARY KEY (sales_date, sale_id)
) PARTITION BY RANGE (sales_date);
CREATE TABLE sales_report_other PARTITION OF sales_report DEFAULT;
CREATE INDEX sales_report_other_product_name_idx ON sales_report_other (product_name);
CREATE INDEX sales_report_other_region_idx ON sales_report_other (region);
