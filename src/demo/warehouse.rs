//! Realistic daily batch files for the warehouse (prototype 002),
//! deterministic for a seed: `clue warehouse generate`, used by the demo,
//! the tests and the benchmark.
//!
//! Each day has a customers file (every customer so far: a share of them
//! moved or renamed since the day before, a few new ones) and a sales file
//! (sales of the day before, some arriving days late, popular products and
//! shops favoured), sprinkled with every fault the cleaning rules catch:
//! messy whitespace and case, missing and malformed values, negative and
//! absurd amounts, dates in the future, repeated rows and rows of earlier
//! files, sales of customers who arrive only in the next day's file.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate, NaiveDateTime};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FIRST_NAMES: [&str; 20] = [
    "Ana", "Bruno", "Chloé", "David", "Emma", "Farid", "Greta", "Hugo", "Inès", "Jonas", "Kaito",
    "Lena", "Marco", "Nadia", "Omar", "Paula", "Quentin", "Rosa", "Samir", "Tara",
];
const LAST_NAMES: [&str; 16] = [
    "Dupont", "Lima", "Schmidt", "Rossi", "Novak", "Garcia", "Kowalski", "Jensen", "Moreau",
    "Silva", "Weber", "Costa", "Nielsen", "Martin", "Bauer", "Santos",
];
const CITIES: [&str; 14] = [
    "Paris", "Lyon", "Lisbon", "Porto", "Berlin", "Munich", "Madrid", "Rome", "Milan", "Vienna",
    "Prague", "Warsaw", "Oslo", "Dublin",
];
const PRODUCTS: [&str; 24] = [
    "Laptop",
    "Mouse",
    "Keyboard",
    "Monitor",
    "Headset",
    "Webcam",
    "Charger",
    "Tablet",
    "Phone",
    "Speaker",
    "Router",
    "Printer",
    "Desk Lamp",
    "Office Chair",
    "Backpack",
    "Water Bottle",
    "Notebook",
    "Pen Set",
    "Coffee Mug",
    "Desk",
    "Cable",
    "Adapter",
    "Hard Drive",
    "Memory Card",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct WarehouseGenerateOptions {
    pub days: u32,
    /// Customers on the first day (a few more arrive each day).
    pub customers: u32,
    pub sales_per_day: u32,
    /// The first batch's date.
    pub start: NaiveDate,
    pub seed: u64,
    /// Share of customers who move or change name each day.
    pub change_rate: f64,
    /// Share of sales rows with a fault.
    pub fault_rate: f64,
    pub gzip: bool,
    /// Write typed Parquet files (snappy) instead of CSV: a value its
    /// column's type cannot hold is written as NULL.
    pub parquet: bool,
}

impl Default for WarehouseGenerateOptions {
    fn default() -> Self {
        WarehouseGenerateOptions {
            days: 7,
            customers: 1_000,
            sales_per_day: 10_000,
            start: NaiveDate::from_ymd_opt(2025, 3, 1).expect("a date"),
            seed: 2,
            change_rate: 0.02,
            fault_rate: 0.01,
            gzip: false,
            parquet: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Customer {
    id: u64,
    name: String,
    city: usize,
}

/// Writes the files into `dir` and returns them, (customers, sales) a day.
pub fn generate(
    dir: &Path,
    opts: &WarehouseGenerateOptions,
) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut customers: Vec<Customer> = (1..=u64::from(opts.customers))
        .map(|id| new_customer(&mut rng, id))
        .collect();
    let mut written = Vec::new();
    let mut earlier_sale: Option<String> = None;
    for day in 0..opts.days {
        let date = opts.start + Days::new(u64::from(day));
        if day > 0 {
            for c in customers.iter_mut() {
                if rng.random_bool(opts.change_rate) {
                    if rng.random_bool(0.8) {
                        c.city =
                            (c.city + 1 + rng.random_range(0..CITIES.len() - 1)) % CITIES.len();
                    } else {
                        c.name = person(&mut rng);
                    }
                }
            }
        }
        // Customers who buy today but arrive only in tomorrow's file.
        let arriving = (u64::from(opts.customers) / 200).max(1);
        let known = customers.len() as u64;
        let ext = if opts.gzip && !opts.parquet {
            "csv.gz"
        } else {
            "csv"
        };
        let c_path = dir.join(format!("customers_{date}.{ext}"));
        let s_path = dir.join(format!("sales_{date}.{ext}"));
        write_customers(&c_path, &customers, &mut rng, opts)?;
        let last = write_sales(
            &s_path,
            date,
            known,
            arriving,
            &mut rng,
            opts,
            earlier_sale.as_deref(),
        )?;
        earlier_sale = last;
        for id in known + 1..=known + arriving {
            customers.push(new_customer(&mut rng, id));
        }
        if opts.parquet {
            let as_parquet = |csv: &Path| -> io::Result<PathBuf> {
                let out = csv.with_extension("parquet");
                to_parquet(csv, &out)?;
                std::fs::remove_file(csv)?;
                Ok(out)
            };
            written.push((as_parquet(&c_path)?, as_parquet(&s_path)?));
        } else {
            written.push((c_path, s_path));
        }
    }
    Ok(written)
}

fn person(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{} {}",
        FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
        LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
    )
}

fn new_customer(rng: &mut ChaCha8Rng, id: u64) -> Customer {
    Customer {
        id,
        name: person(rng),
        city: rng.random_range(0..CITIES.len()),
    }
}

fn output(path: &Path, gzip: bool) -> io::Result<Box<dyn Write>> {
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    Ok(if gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(file)
    })
}

/// A batch CSV file (customers or sales, by its header) as a typed Parquet
/// file: ids as INT64, amounts as DOUBLE, instants as TIMESTAMP (µs), text
/// as UTF8; a value its type cannot hold is NULL.
pub fn to_parquet(csv_path: &Path, out: &Path) -> io::Result<()> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let err = |e: parquet::errors::ParquetError| io::Error::other(e.to_string());
    let mut reader = csv::Reader::from_path(csv_path)?;
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let sales = header.first().is_some_and(|h| h == "CustomerID");
    let kinds: Vec<&str> = if sales {
        vec!["INT64", "BYTE_ARRAY", "DOUBLE", "INT64", "TIMESTAMP"]
    } else {
        vec!["INT64", "BYTE_ARRAY", "BYTE_ARRAY"]
    };
    let schema = format!(
        "message batch {{ {} }}",
        header
            .iter()
            .zip(&kinds)
            .map(|(name, kind)| match *kind {
                "BYTE_ARRAY" => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
                "TIMESTAMP" => format!("OPTIONAL INT64 {name} (TIMESTAMP(MICROS,false));"),
                other => format!("OPTIONAL {other} {name};"),
            })
            .collect::<String>()
    );
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for record in reader.records() {
        let record = record?;
        for (i, column) in columns.iter_mut().enumerate() {
            column.push(record.get(i).unwrap_or("").to_owned());
        }
    }
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(out)?,
        std::sync::Arc::new(parse_message_type(&schema).map_err(err)?),
        std::sync::Arc::new(props),
    )
    .map_err(err)?;
    let mut group = writer.next_row_group().map_err(err)?;
    for (values, kind) in columns.iter().zip(&kinds) {
        let mut column = group
            .next_column()
            .map_err(err)?
            .expect("a column per field");
        macro_rules! write {
            ($ty:ty, $parse:expr) => {{
                let parsed: Vec<_> = values.iter().map($parse).collect();
                let defs: Vec<i16> = parsed.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<_> = parsed.into_iter().flatten().collect();
                column
                    .typed::<$ty>()
                    .write_batch(&present, Some(&defs), None)
                    .map_err(err)?;
            }};
        }
        match *kind {
            "INT64" => write!(Int64Type, |v: &String| v.trim().parse::<i64>().ok()),
            "DOUBLE" => write!(DoubleType, |v: &String| v.trim().parse::<f64>().ok()),
            "TIMESTAMP" => write!(Int64Type, |v: &String| {
                crate::domain::value::parse_timestamp(v.trim())
                    .map(|t| t.and_utc().timestamp_micros())
            }),
            _ => write!(ByteArrayType, |v: &String| (!v.is_empty())
                .then(|| ByteArray::from(v.as_str()))),
        }
        column.close().map_err(err)?;
    }
    group.close().map_err(err)?;
    writer.close().map_err(err)?;
    Ok(())
}

/// Messy spelling of clean text: extra spaces, another case.
fn messy(rng: &mut ChaCha8Rng, text: &str) -> String {
    match rng.random_range(0..4) {
        0 => format!("  {}", text.to_uppercase()),
        1 => format!("{}  ", text.to_lowercase()),
        2 => text.replace(' ', "   "),
        _ => text.to_owned(),
    }
}

fn write_customers(
    path: &Path,
    customers: &[Customer],
    rng: &mut ChaCha8Rng,
    opts: &WarehouseGenerateOptions,
) -> io::Result<()> {
    let mut out = output(path, opts.gzip)?;
    writeln!(out, "ID,Name,City")?;
    for c in customers {
        let (name, city) = if rng.random_bool(0.05) {
            (messy(rng, &c.name), messy(rng, CITIES[c.city]))
        } else {
            (c.name.clone(), CITIES[c.city].to_owned())
        };
        writeln!(out, "{},{name},{city}", c.id)?;
    }
    // A faulty row or two: a missing city, an id that is not a number.
    if opts.fault_rate > 0.0 {
        writeln!(out, "{},Nobody Known,", customers.len() + 1_000_000)?;
        writeln!(out, "C-{},Odd Id,Paris", rng.random_range(1..1000))?;
    }
    out.flush()
}

/// Writes a day's sales; returns one of its rows, repeated in a later file.
fn write_sales(
    path: &Path,
    date: NaiveDate,
    known: u64,
    arriving: u64,
    rng: &mut ChaCha8Rng,
    opts: &WarehouseGenerateOptions,
    earlier: Option<&str>,
) -> io::Result<Option<String>> {
    let mut out = output(path, opts.gzip)?;
    writeln!(out, "CustomerID,Product,SalesAmount,ShopId,TransactionDate")?;
    let day_before = date.pred_opt().unwrap_or(date);
    let mut kept = None;
    if let Some(row) = earlier {
        writeln!(out, "{row}")?;
    }
    for i in 0..opts.sales_per_day {
        // Most sales are of the day before; some arrive up to a week late.
        let day = if rng.random_bool(0.03) {
            day_before - Days::new(rng.random_range(1..7))
        } else {
            day_before
        };
        let at: NaiveDateTime = day
            .and_hms_opt(
                rng.random_range(8..22),
                rng.random_range(0..60),
                rng.random_range(0..60),
            )
            .expect("a time");
        // Popular customers, products and shops buy more (a square law).
        let skew = |rng: &mut ChaCha8Rng, n: u64| {
            let u: f64 = rng.random();
            1 + ((u * u) * n as f64) as u64 % n
        };
        let customer = if i % 500 == 7 {
            known + rng.random_range(1..=arriving)
        } else {
            skew(rng, known)
        };
        let product = PRODUCTS[skew(rng, PRODUCTS.len() as u64) as usize - 1];
        let shop = skew(rng, 40);
        let cents: u64 = rng.random_range(199..250_000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let row = if rng.random_bool(opts.fault_rate) {
            faulty(rng, customer, product, &amount, shop, at)
        } else if rng.random_bool(0.02) {
            format!(
                "{customer},{},{amount},{shop},{}",
                messy(rng, product),
                at.format("%Y-%m-%dT%H:%M:%S")
            )
        } else {
            format!("{customer},{product},{amount},{shop},{at}")
        };
        writeln!(out, "{row}")?;
        if i == 3 {
            // The same sale twice in one file.
            writeln!(out, "{row}")?;
            kept = Some(row);
        }
    }
    out.flush()?;
    Ok(kept)
}

/// A sales row with one of the faults the cleaning rules catch.
fn faulty(
    rng: &mut ChaCha8Rng,
    customer: u64,
    product: &str,
    amount: &str,
    shop: u64,
    at: NaiveDateTime,
) -> String {
    match rng.random_range(0..9) {
        0 => format!(",{product},{amount},{shop},{at}"),
        1 => format!("{customer},{product},,{shop},{at}"),
        2 => format!("{customer},{product},{amount},{shop},"),
        3 => format!("{customer},{product},-{amount},{shop},{at}"),
        4 => format!(
            "{customer},{product},99{},{shop},{at}",
            amount.replace('.', "")
        ),
        5 => format!(
            "{customer},{product},{amount},{shop},{}",
            at + Days::new(4000)
        ),
        6 => format!("{customer},{product},{amount}7,{shop},{at}"),
        7 => format!(
            "{customer},{product},{amount},{shop},{}",
            at.format("%d/%m/%Y")
        ),
        _ => format!("{customer},,{amount},shop-{shop},{at}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = WarehouseGenerateOptions {
            days: 3,
            customers: 50,
            sales_per_day: 300,
            fault_rate: 0.05,
            ..WarehouseGenerateOptions::default()
        };
        let first = generate(a.path(), &opts).unwrap();
        let second = generate(b.path(), &opts).unwrap();
        assert_eq!(first.len(), 3);
        for ((c1, s1), (c2, s2)) in first.iter().zip(&second) {
            assert_eq!(std::fs::read(c1).unwrap(), std::fs::read(c2).unwrap());
            assert_eq!(std::fs::read(s1).unwrap(), std::fs::read(s2).unwrap());
        }
        let day2 = std::fs::read_to_string(&first[1].1).unwrap();
        assert!(day2.starts_with("CustomerID,Product,SalesAmount,ShopId,TransactionDate\n"));
        // The header, the repeat from day 1, the sales, the in-file repeat.
        assert_eq!(day2.lines().count(), 1 + 1 + 300 + 1);
        assert!(first[0].0.ends_with("customers_2025-03-01.csv"));
    }
}
