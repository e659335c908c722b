//! Prototype 004's delivery reports over the synced orders, as JSON or CSV:
//! open orders by delivery date and status, the top delivery dates, pending
//! items by product and the top customers with pending orders.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa::IntoParams;

use super::reports::{ReportErrors, attach_filename, render};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::caching::{cached, describe_sources};
use crate::api::params::{Format, ParamValues};
use crate::api::problem::{ApiError, query_error};
use crate::serve::delivery::{
    self, DeliveryReport, DeliveryRows, OpenOrders, PendingItems, TopCustomer, TopDeliveryDate,
};

/// The one parameter of a delivery report (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(in crate::api) struct FormatParam {
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// A report through the planner and the cache, as JSON or CSV.
async fn delivery_response(
    state: AppState,
    caller: Caller,
    raw: Option<&str>,
    headers: HeaderMap,
    report: DeliveryReport,
) -> Result<Response, ApiError> {
    let format = ParamValues::parse(raw, &["format"])?.format(&headers)?;
    let key = format!("{}|{format:?}", report.slug());
    let s = state.clone();
    let view = caller.view.clone();
    let mut response = cached(
        &state,
        &caller,
        &headers,
        key,
        report.dataset(),
        (None, None),
        || async move {
            let (rows, served) = delivery::run(&s.db, &s.catalog, Some(&s.cache), report, &view)
                .await
                .map_err(query_error)?;
            let (body, content_type) = match rows {
                DeliveryRows::OpenOrders(r) => render(r, format)?,
                DeliveryRows::TopDeliveryDates(r) => render(r, format)?,
                DeliveryRows::PendingItems(r) => render(r, format)?,
                DeliveryRows::TopCustomers(r) => render(r, format)?,
            };
            Ok((body, content_type, describe_sources(&served)))
        },
    )
    .await?;
    if format == Format::Csv {
        attach_filename(&mut response, report.file_name());
    }
    Ok(response)
}

/// Open orders (neither COMPLETED nor CANCELLED) by delivery date and status.
#[utoipa::path(
    get,
    path = "/reports/open-orders",
    tag = "delivery",
    params(FormatParam),
    responses(
        (status = 200, description = "One row per delivery date and status with open orders, by date then status.", content(
            (Vec<OpenOrders> = "application/json", example = json!([{"delivery_date": "2025-03-31", "status": "PENDING", "order_count": 3}])),
            (String = "text/csv", example = "delivery_date,status,order_count\n2025-03-31,PENDING,3\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn open_orders(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delivery_response(
        state,
        caller,
        q.as_deref(),
        headers,
        DeliveryReport::OpenOrders,
    )
    .await
}

/// The three delivery dates with the most open orders.
#[utoipa::path(
    get,
    path = "/reports/top-delivery-dates",
    tag = "delivery",
    params(FormatParam),
    responses(
        (status = 200, description = "At most three dates, the most open orders first; a tie goes to the earlier date. `unique_customers` counts the distinct customers of those orders.", content(
            (Vec<TopDeliveryDate> = "application/json", example = json!([{"delivery_date": "2025-03-31", "order_count": 10, "unique_customers": 10}])),
            (String = "text/csv", example = "delivery_date,order_count,unique_customers\n2025-03-31,10,10\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn top_delivery_dates(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delivery_response(
        state,
        caller,
        q.as_deref(),
        headers,
        DeliveryReport::TopDeliveryDates,
    )
    .await
}

/// Items of PENDING orders by product.
#[utoipa::path(
    get,
    path = "/reports/pending-items",
    tag = "delivery",
    params(FormatParam),
    responses(
        (status = 200, description = "One row per product with items in PENDING orders, the largest quantity first (then by product id).", content(
            (Vec<PendingItems> = "application/json", example = json!([{"product_id": 4, "product_name": "Widget", "pending_quantity": 12, "total_pending_value": 59.88}])),
            (String = "text/csv", example = "product_id,product_name,pending_quantity,total_pending_value\n4,Widget,12,59.88\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn pending_items(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delivery_response(
        state,
        caller,
        q.as_deref(),
        headers,
        DeliveryReport::PendingItems,
    )
    .await
}

/// The three customers with the most PENDING orders.
#[utoipa::path(
    get,
    path = "/reports/top-customers",
    tag = "delivery",
    params(FormatParam),
    responses(
        (status = 200, description = "At most three customers, the most pending orders first, then the larger pending amount, then the smaller customer id.", content(
            (Vec<TopCustomer> = "application/json", example = json!([{"customer_id": 2, "customer_name": "Ventures Company", "pending_order_count": 1, "total_pending_amount": 0.00}])),
            (String = "text/csv", example = "customer_id,customer_name,pending_order_count,total_pending_amount\n2,Ventures Company,1,0.00\n")
        )),
        ReportErrors,
    )
)]
pub(in crate::api) async fn top_customers(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delivery_response(
        state,
        caller,
        q.as_deref(),
        headers,
        DeliveryReport::TopCustomers,
    )
    .await
}
