//! A batch's files as received: CSV, plain or gzip (by content), read
//! whole into rows of text with their line numbers, the header matched to
//! the columns the warehouse expects, the bytes hashed (a batch's identity).

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
        return Err(WarehouseError::Input {
            file,
            line: None,
            reason: "is a Parquet file; clue reads batches as CSV (plain or gzip) for now".into(),
        });
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
    let places = columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(c))
                .ok_or_else(|| WarehouseError::Input {
                    file: file.clone(),
                    line: Some(1),
                    reason: format!(
                        "the header has no column {c} (it has {}; expected {})",
                        header.join(", "),
                        columns.join(", ")
                    ),
                })
        })
        .collect::<Result<Vec<usize>, _>>()?;
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
