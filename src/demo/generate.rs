//! Realistic demo sales data in prototype 000's CSV format, deterministic for
//! a seed: used by the demo, the tests and the benchmarks.
//!
//! Two years of days with growth, weekly and year-end seasonality; thousands of
//! products whose popularity follows a Zipf law; five regions; per-product
//! list prices with occasional promotions; `sales_amount` is exactly
//! `quantity_sold × unit_price` to the cent.

use std::io::{self, Write};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use rust_decimal::Decimal;

pub const HEADER: &str =
    "product_id,product_name,region,sales_date,quantity_sold,sales_amount,unit_price";
const REGIONS: [(&str, f64); 5] = [
    ("North", 0.24),
    ("South", 0.20),
    ("East", 0.22),
    ("West", 0.18),
    ("Central", 0.16),
];
const ADJECTIVES: [&str; 24] = [
    "Aero", "Bold", "Classic", "Compact", "Deluxe", "Eco", "Flex", "Grand", "Hyper", "Iron", "Jet",
    "Lumen", "Mega", "Nova", "Omni", "Prime", "Quantum", "Rapid", "Smart", "Terra", "Ultra",
    "Vivid", "Zen", "Astro",
];
const NOUNS: [&str; 30] = [
    "Widget", "Gadget", "Blender", "Kettle", "Lamp", "Backpack", "Speaker", "Headset", "Drill",
    "Mixer", "Toaster", "Router", "Camera", "Monitor", "Keyboard", "Mouse", "Charger", "Bottle",
    "Jacket", "Sneaker", "Watch", "Tablet", "Printer", "Chair", "Desk", "Grill", "Heater", "Fan",
    "Vacuum", "Scooter",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub rows: u64,
    pub seed: u64,
    pub start: NaiveDate,
    pub days: u32,
    pub products: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            rows: 1_000_000,
            seed: 42,
            start: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            days: 731,
            products: 5_000,
        }
    }
}

/// Totals of what was written, for checking a load against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    pub rows: u64,
    pub total_quantity: i64,
    pub total_revenue: Decimal,
    pub first_date: Option<NaiveDate>,
    pub last_date: Option<NaiveDate>,
}

struct Product {
    id: u32,
    name: String,
    /// List price in cents.
    price_cents: i64,
}

/// Writes the header and `opts.rows` rows to `out`, in date order.
pub fn generate_sales(opts: &GenerateOptions, out: impl Write) -> io::Result<GenerateSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let products = make_products(opts.products.max(1), &mut rng);
    // Popularity rank -> product: a shuffled order so ids carry no rank.
    let mut by_rank: Vec<usize> = (0..products.len()).collect();
    for i in (1..by_rank.len()).rev() {
        by_rank.swap(i, rng.random_range(0..=i));
    }
    let zipf = Zipf::new(products.len() as f64, 1.07).map_err(io::Error::other)?;
    let quantity = Zipf::new(60.0, 1.9).map_err(io::Error::other)?;
    let per_day = rows_per_day(opts);

    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    writeln!(out, "{HEADER}")?;
    let mut summary = GenerateSummary::default();
    let mut total_cents: i128 = 0;
    for (day_index, &count) in per_day.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let date = opts.start + Days::new(day_index as u64);
        summary.first_date.get_or_insert(date);
        summary.last_date = Some(date);
        for _ in 0..count {
            let rank = zipf.sample(&mut rng) as usize - 1;
            let product = &products[by_rank[rank.min(by_rank.len() - 1)]];
            let region = pick_region(rng.random::<f64>());
            let qty = quantity.sample(&mut rng) as i64;
            // About one sale in eight is on promotion, 5-30% off.
            let price = if rng.random_bool(0.125) {
                let off = rng.random_range(5..=30);
                (product.price_cents * (100 - off) + 50) / 100
            } else {
                product.price_cents
            };
            let amount = price * qty;
            writeln!(
                out,
                "{},{},{},{},{},{}.{:02},{}.{:02}",
                product.id,
                product.name,
                region,
                date,
                qty,
                amount / 100,
                amount % 100,
                price / 100,
                price % 100
            )?;
            summary.rows += 1;
            summary.total_quantity += qty;
            total_cents += amount as i128;
        }
    }
    out.flush()?;
    summary.total_revenue = Decimal::from_i128_with_scale(total_cents, 2);
    Ok(summary)
}

fn make_products(n: u32, rng: &mut ChaCha8Rng) -> Vec<Product> {
    (0..n)
        .map(|i| {
            let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
            let noun = NOUNS[rng.random_range(0..NOUNS.len())];
            // Log-uniform list prices from $2 to $900, ending in .99 or .00.
            let dollars = (2f64.ln() + rng.random::<f64>() * (900f64.ln() - 2f64.ln()))
                .exp()
                .floor() as i64;
            let cents = if rng.random_bool(0.6) { 99 } else { 0 };
            Product {
                id: 1001 + i,
                name: format!("{adjective} {noun} {}", 1001 + i),
                price_cents: dollars * 100 + cents,
            }
        })
        .collect()
}

fn pick_region(u: f64) -> &'static str {
    let mut acc = 0.0;
    for (name, weight) in REGIONS {
        acc += weight;
        if u < acc {
            return name;
        }
    }
    REGIONS[REGIONS.len() - 1].0
}

/// Spreads the rows over the days by weight (growth, weekends, year end),
/// with largest-remainder rounding so the total is exact.
fn rows_per_day(opts: &GenerateOptions) -> Vec<u64> {
    let days = opts.days.max(1) as usize;
    let weights: Vec<f64> = (0..days)
        .map(|i| {
            let date = opts.start + Days::new(i as u64);
            let growth = 1.0 + 0.4 * i as f64 / days as f64;
            let weekday = match date.weekday() {
                Weekday::Sat | Weekday::Sun => 1.25,
                _ => 1.0,
            };
            let season = match date.month() {
                11 => 1.3,
                12 => 1.6,
                1 | 2 => 0.85,
                _ => 1.0,
            };
            growth * weekday * season
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights
        .iter()
        .map(|w| w / total * opts.rows as f64)
        .collect();
    let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let mut left = opts.rows - counts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..days).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    for i in order {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opts: &GenerateOptions) -> (String, GenerateSummary) {
        let mut buf = Vec::new();
        let summary = generate_sales(opts, &mut buf).unwrap();
        (String::from_utf8(buf).unwrap(), summary)
    }

    #[test]
    fn same_seed_same_file_and_exact_totals() {
        let opts = GenerateOptions {
            rows: 5_000,
            ..GenerateOptions::default()
        };
        let (a, summary) = run(&opts);
        let (b, _) = run(&opts);
        assert_eq!(a, b);
        let (c, _) = run(&GenerateOptions {
            seed: 7,
            ..opts.clone()
        });
        assert_ne!(a, c);

        let mut lines = a.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let (mut rows, mut qty, mut revenue) = (0u64, 0i64, Decimal::ZERO);
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 7, "{line}");
            let q: i64 = f[4].parse().unwrap();
            let amount: Decimal = f[5].parse().unwrap();
            let price: Decimal = f[6].parse().unwrap();
            assert!(q >= 1);
            assert_eq!(amount, price * Decimal::from(q), "{line}");
            rows += 1;
            qty += q;
            revenue += amount;
        }
        assert_eq!(
            (rows, qty, revenue),
            (summary.rows, summary.total_quantity, summary.total_revenue)
        );
        assert_eq!(summary.first_date, NaiveDate::from_ymd_opt(2024, 1, 1));
        assert_eq!(summary.last_date, NaiveDate::from_ymd_opt(2025, 12, 31));
    }

    #[test]
    fn popularity_is_skewed_and_regions_all_present() {
        let (text, _) = run(&GenerateOptions {
            rows: 20_000,
            ..GenerateOptions::default()
        });
        let mut counts = std::collections::HashMap::<&str, u32>::new();
        let mut regions = std::collections::BTreeSet::new();
        for line in text.lines().skip(1) {
            let mut f = line.split(',');
            *counts.entry(f.next().unwrap()).or_default() += 1;
            regions.insert(f.nth(1).unwrap().to_owned());
        }
        let mut c: Vec<u32> = counts.into_values().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        // The top product sells far more than the median one.
        assert!(
            c[0] > 20 * c[c.len() / 2],
            "top {} median {}",
            c[0],
            c[c.len() / 2]
        );
        assert_eq!(regions.len(), 5);
    }

    #[test]
    fn rows_spread_exactly() {
        for rows in [0, 1, 730, 731, 99_999] {
            let opts = GenerateOptions {
                rows,
                ..GenerateOptions::default()
            };
            assert_eq!(rows_per_day(&opts).iter().sum::<u64>(), rows);
        }
    }
}
