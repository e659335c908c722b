//! A batch's files as received: CSV (plain or gzip) or Parquet, told apart
//! by content, read whole into rows of text with their line numbers (a
//! Parquet file's row numbers), the header (the schema's column names)
//! matched to the columns the warehouse expects, the bytes hashed (a
//! batch's identity).

use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::WarehouseError;
use crate::ingest::csv::MAX_RECORD_BYTES;
use crate::ingest::csv::read::{csv_reader, open_input};

/// One file of a batch.
#[derive(Debug)]
pub struct BatchFile {
    pub path: String,
    pub sha256: String,
    /// The rows in file order: their line and their fields in the expected
    /// columns' order (a missing field is empty).
    pub rows: Vec<RawRow>,
}

#[derive(Debug, Clone)]
pub struct RawRow {
    pub line: i64,
    pub fields: Vec<String>,
    /// Why the row cannot be read as the header says, if it cannot.
    pub unreadable: Option<String>,
}

/// Reads `path`, whose header must name every one of `columns` (in any
/// order and case, surrounded by any spaces).
pub fn read(path: &Path, columns: &[&str]) -> Result<BatchFile, WarehouseError> {
    let file = path.display().to_string();
    let mut head = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = std::io::Read::read(&mut f, &mut head);
    }
    if &head == b"PAR1" {
        return read_parquet(path, columns);
    }
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let tap = hasher.clone();
    let input = open_input(path, move |bytes| {
        tap.lock()
            .expect("the hasher is not poisoned")
            .update(bytes)
    })
    .map_err(|e| WarehouseError::Input {
        file: file.clone(),
        line: None,
        reason: e.to_string(),
    })?;
    let mut reader = csv_reader(input);
    let mut record = csv::ByteRecord::new();
    let io = |line: Option<i64>, e: csv::Error| WarehouseError::Input {
        file: file.clone(),
        line,
        reason: e.to_string(),
    };
    if !reader
        .read_byte_record(&mut record)
        .map_err(|e| io(Some(1), e))?
    {
        return Err(WarehouseError::Input {
            file,
            line: None,
            reason: "is empty (expected a header line and data rows)".into(),
        });
    }
    let header: Vec<String> = record
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect();
    let places = places(&file, &header, columns)?;
    let mut rows = Vec::new();
    loop {
        let line = record.position().map_or(0, |p| p.line() as i64) + 1;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(io(Some(line), e)),
        }
        let line = record.position().map_or(line, |p| p.line() as i64);
        if record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(WarehouseError::Input {
                file,
                line: Some(line),
                reason: format!("a record is longer than {MAX_RECORD_BYTES} bytes"),
            });
        }
        if record.len() == 1 && record.get(0).is_some_and(|f| f.is_empty()) {
            continue; // a blank line
        }
        let mut unreadable = (record.len() != header.len()).then(|| {
            format!(
                "has {} fields where the header has {}",
                record.len(),
                header.len()
            )
        });
        let fields = places
            .iter()
            .map(|&i| {
                let bytes = record.get(i).unwrap_or_default();
                match std::str::from_utf8(bytes) {
                    Ok(text) => text.to_owned(),
                    Err(_) => {
                        unreadable.get_or_insert_with(|| "is not UTF-8 text".to_owned());
                        String::from_utf8_lossy(bytes).into_owned()
                    }
                }
            })
            .collect();
        rows.push(RawRow {
            line,
            fields,
            unreadable,
        });
    }
    drop(reader);
    let sha256 = hex::encode(
        Arc::try_unwrap(hasher)
            .map(|m| {
                m.into_inner()
                    .expect("the hasher is not poisoned")
                    .finalize()
            })
            .unwrap_or_else(|shared| shared.lock().expect("not poisoned").clone().finalize()),
    );
    Ok(BatchFile {
        path: file,
        sha256,
        rows,
    })
}

/// Where each expected column is in `header` (any case).
fn places(file: &str, header: &[String], columns: &[&str]) -> Result<Vec<usize>, WarehouseError> {
    columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(c))
                .ok_or_else(|| WarehouseError::Input {
                    file: file.to_owned(),
                    line: Some(1),
                    reason: format!(
                        "the header has no column {c} (it has {}; expected {})",
                        header.join(", "),
                        columns.join(", ")
                    ),
                })
        })
        .collect()
}

/// A Parquet file: its columns found by name, each value as the text it
/// stands for (numbers as written, timestamps as `YYYY-MM-DD HH:MM:SS`,
/// NULL as empty); a row is numbered from 1.
fn read_parquet(path: &Path, columns: &[&str]) -> Result<BatchFile, WarehouseError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = path.display().to_string();
    let bad = |reason: String| WarehouseError::Input {
        file: file.clone(),
        line: None,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let header: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let places = places(&file, &header, columns)?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let line = i as i64 + 1;
        let row = row.map_err(|e| WarehouseError::Input {
            file: file.clone(),
            line: Some(line),
            reason: e.to_string(),
        })?;
        let values = row.into_columns();
        let mut unreadable = None;
        let fields = places
            .iter()
            .map(|&p| match values.get(p).map(|(_, f)| text_of(f)) {
                Some(Ok(text)) => text,
                Some(Err(why)) => {
                    unreadable.get_or_insert(why);
                    String::new()
                }
                None => String::new(),
            })
            .collect();
        out.push(RawRow {
            line,
            fields,
            unreadable,
        });
    }
    Ok(BatchFile {
        path: file,
        sha256,
        rows: out,
    })
}

/// A Parquet value as the text a CSV file would hold.
fn text_of(field: &parquet::record::Field) -> Result<String, String> {
    use parquet::record::Field;
    let instant = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
            .ok_or_else(|| format!("has a timestamp out of range ({micros} µs)"))
    };
    Ok(match field {
        Field::Null => String::new(),
        Field::Bool(v) => v.to_string(),
        Field::Byte(v) => v.to_string(),
        Field::Short(v) => v.to_string(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::UByte(v) => v.to_string(),
        Field::UShort(v) => v.to_string(),
        Field::UInt(v) => v.to_string(),
        Field::ULong(v) => v.to_string(),
        Field::Float16(v) => v.to_string(),
        Field::Float(v) => v.to_string(),
        Field::Double(v) => v.to_string(),
        Field::Decimal(_) | Field::TimeMillis(_) | Field::TimeMicros(_) => field.to_string(),
        Field::Str(v) => v.clone(),
        Field::Bytes(v) => std::str::from_utf8(v.data())
            .map(str::to_owned)
            .map_err(|_| "is not UTF-8 text".to_owned())?,
        Field::Date(days) => chrono::NaiveDate::from_epoch_days(*days)
            .map(|d| d.to_string())
            .ok_or_else(|| format!("has a date out of range ({days} days)"))?,
        Field::TimestampMillis(ms) => instant(ms.saturating_mul(1000))?,
        Field::TimestampMicros(us) => instant(*us)?,
        Field::Group(_) | Field::ListInternal(_) | Field::MapInternal(_) => {
            return Err("has a nested value where a plain one belongs".into());
        }
    })
}
