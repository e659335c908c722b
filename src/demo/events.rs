//! The demo's sales events (prototype 001): countries, and half a year of
//! orders from 2021 with repeat buyers, sellers tied to a country, weighted
//! categories and brands, written through the same path as `POST /ingest`.

use chrono::{NaiveDate, SecondsFormat, TimeZone, Utc};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};
use rust_decimal::Decimal;

use crate::domain::dataset::Catalog;
use crate::ingest::records::{self, Record};
use crate::pg::database::Database;

/// Events written when `sales` is empty.
pub const EVENTS: u32 = 20_000;

/// (id, name, continent), the first ones selling the most.
const COUNTRIES: [(&str, &str, &str); 12] = [
    ("FR", "France", "Europe"),
    ("IT", "Italy", "Europe"),
    ("DE", "Germany", "Europe"),
    ("ES", "Spain", "Europe"),
    ("GB", "United Kingdom", "Europe"),
    ("US", "United States", "North America"),
    ("NL", "Netherlands", "Europe"),
    ("BE", "Belgium", "Europe"),
    ("CH", "Switzerland", "Europe"),
    ("JP", "Japan", "Asia"),
    ("AU", "Australia", "Oceania"),
    ("BR", "Brazil", "South America"),
];

/// Categories with their weight and typical price.
const CATEGORIES: [(&str, u32, f64); 12] = [
    ("clothing", 30, 80.0),
    ("shoes", 15, 120.0),
    ("bags", 12, 250.0),
    ("accessories", 10, 60.0),
    ("jewellery", 6, 300.0),
    ("design & decoration", 5, 150.0),
    ("girls", 5, 40.0),
    ("boys", 4, 40.0),
    ("sport & leisure", 4, 90.0),
    ("high-tech", 4, 200.0),
    ("art & culture", 3, 110.0),
    ("pet accessories", 2, 30.0),
];

const BRANDS: [&str; 10] = [
    "Dsquared2",
    "Gucci",
    "Prada",
    "Chanel",
    "Hermès",
    "Louis Vuitton",
    "Saint Laurent",
    "Balenciaga",
    "Acne Studios",
    "Isabel Marant",
];

/// When `sales` is empty: the countries and [`EVENTS`] orders from
/// January to June 2021 (the prototype's repeat-buyer weeks included).
pub async fn sales_events(
    db: &Database,
    catalog: &Catalog,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = db.client().await?;
    for (id, name, continent) in COUNTRIES {
        client
            .execute(
                "INSERT INTO public.country (\"ID_COUNTRY\", \"COUNTRY_NAME\", \"CONTINENT\") \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &name, &continent],
            )
            .await?;
    }
    let has_rows: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM public.sales)", &[])
        .await?
        .get(0);
    if has_rows {
        return Ok(());
    }
    eprintln!("Recording demo sales events...");
    let events = generate(EVENTS);
    for chunk in events.chunks(2_000) {
        records::record(db, catalog, "sales", chunk).await?;
    }
    eprintln!("Recorded {EVENTS} sales events.");
    Ok(())
}

/// `n` events, the same every time.
fn generate(n: u32) -> Vec<Record> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    // Few buyers buy often: a Zipf over 3,000 buyers makes repeat buyers.
    let buyer = Zipf::new(3_000.0, 1.1).expect("a Zipf law");
    let country = Zipf::new(COUNTRIES.len() as f64, 1.2).expect("a Zipf law");
    let price_spread = LogNormal::new(0.0, 0.5).expect("a log-normal law");
    let total_weight: u32 = CATEGORIES.iter().map(|c| c.1).sum();
    let start = Utc
        .with_ymd_and_hms(2021, 1, 1, 0, 0, 0)
        .single()
        .expect("an instant");
    let seconds = (NaiveDate::from_ymd_opt(2021, 7, 1).expect("a date")
        - NaiveDate::from_ymd_opt(2021, 1, 1).expect("a date"))
    .num_seconds();
    (0..n)
        .map(|i| {
            let b = buyer.sample(&mut rng) as usize;
            // A buyer lives in one country; a seller too.
            let buyer_country = COUNTRIES[(b * 7) % COUNTRIES.len()].0;
            let seller = rng.random_range(0..300u32);
            let seller_country = COUNTRIES[country.sample(&mut rng) as usize - 1].0;
            let mut pick = rng.random_range(0..total_weight);
            let (category, _, price) = *CATEGORIES
                .iter()
                .find(|c| {
                    let hit = pick < c.1;
                    pick = pick.saturating_sub(c.1);
                    hit
                })
                .unwrap_or(&CATEGORIES[0]);
            let cents = (price * price_spread.sample(&mut rng) * 100.0).round() as i64;
            let at = start + chrono::TimeDelta::seconds(rng.random_range(0..seconds));
            let order = format!("{}", 34_000_000 + i);
            Record::new(vec![
                ("ID_ORDER".into(), order),
                (
                    "ID_PRODUCT".into(),
                    format!("{}", 13_600_000 + rng.random_range(0..5_000)),
                ),
                ("ID_BUYER".into(), format!("{}", 9_660_000 + b)),
                ("ID_SELLER".into(), format!("{}", 6_720_000 + seller)),
                ("ID_SELLER_COUNTRY".into(), seller_country.into()),
                ("ID_BUYER_COUNTRY".into(), buyer_country.into()),
                (
                    "BRAND".into(),
                    BRANDS[rng.random_range(0..BRANDS.len())].into(),
                ),
                (
                    "DATE_PAYMENT".into(),
                    at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ),
                ("CATEGORY".into(), category.into()),
                (
                    "REVENUE".into(),
                    Decimal::new(cents.max(100), 2).to_string(),
                ),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_valid_and_have_repeat_buyers() {
        let a = generate(2_000);
        let b = generate(2_000);
        let values = |r: &Record| r.fields.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
        assert_eq!(
            a.iter().map(values).collect::<Vec<_>>(),
            b.iter().map(values).collect::<Vec<_>>()
        );
        let mut buyers = std::collections::HashMap::<String, u32>::new();
        for r in &a {
            let get = |name: &str| r.fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
            *buyers.entry(get("ID_BUYER")).or_default() += 1;
            let revenue: Decimal = get("REVENUE").parse().unwrap();
            assert!(revenue >= Decimal::ONE && revenue.scale() == 2, "{revenue}");
            assert!(CATEGORIES.iter().any(|c| c.0 == get("CATEGORY")));
            assert!(get("DATE_PAYMENT").starts_with("2021-0"));
        }
        assert!(
            buyers.values().filter(|n| **n >= 5).count() >= 20,
            "repeat buyers"
        );
    }
}
