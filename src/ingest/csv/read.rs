//! Reading a CSV file: opening it (gzip by content), the first pass that
//! checks it before anything loads (hash, encoding, size, header, months
//! present), and the reader both passes share.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use super::{ImportError, MAX_RECORD_BYTES};
use crate::domain::time::Month;
use crate::pg::copy::FieldCodec;

/// Opens the file for reading, transparently gunzipping `.gz` content, with
/// every raw byte read reported to `on_read` (for hashing and progress).
pub(crate) fn open_input(
    path: &Path,
    on_read: impl FnMut(&[u8]) + Send + 'static,
) -> Result<Box<dyn Read + Send>, ImportError> {
    let file_err = |e| ImportError::Read {
        file: path.display().to_string(),
        source: e,
    };
    let file = File::open(path).map_err(file_err)?;
    let mut raw = BufReader::with_capacity(
        256 * 1024,
        Tap {
            inner: file,
            on_read,
        },
    );
    let gz = raw.fill_buf().map_err(file_err)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            RecordBound::new(flate2::bufread::MultiGzDecoder::new(raw)),
        ))
    } else {
        Box::new(RecordBound::new(raw))
    })
}

/// A record longer than the limit, found while reading (`RecordBound`).
#[derive(Debug)]
pub(crate) struct RecordTooLong {
    pub line: u64,
}

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: record is larger than 1 MiB", self.line)
    }
}

impl std::error::Error for RecordTooLong {}

/// Fails the read as soon as one record (bytes between newlines outside
/// quotes) outgrows the limit: the CSV reader would otherwise hold the
/// whole record first, and a small gzip file can expand to gigabytes of
/// one record.
struct RecordBound<R> {
    inner: R,
    in_quotes: bool,
    run: usize,
    line: u64,
}

impl<R> RecordBound<R> {
    fn new(inner: R) -> RecordBound<R> {
        RecordBound {
            inner,
            in_quotes: false,
            run: 0,
            line: 1,
        }
    }
}

impl<R: Read> Read for RecordBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' => {
                    self.line += 1;
                    if !self.in_quotes {
                        self.run = 0;
                        continue;
                    }
                }
                _ => {}
            }
            self.run += 1;
            if self.run > MAX_RECORD_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    RecordTooLong { line: self.line },
                ));
            }
        }
        Ok(n)
    }
}

/// A reader that shows every chunk it reads to a callback.
struct Tap<R, F> {
    inner: R,
    on_read: F,
}

impl<R: Read, F: FnMut(&[u8])> Read for Tap<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn csv_reader(input: Box<dyn Read + Send>) -> csv::Reader<Box<dyn Read + Send>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        // Records of the wrong length are reported by clue with their line.
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(input)
}

/// What the scan learned about the file.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) sha256: String,
    pub(super) bytes: u64,
    pub(super) header: Vec<String>,
    pub(super) records: u64,
    pub(super) months: BTreeSet<Month>,
}

pub(super) fn progress_bar(enabled: bool, path: &Path) -> ProgressBar {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// First pass: content hash, text and encoding checks, header, and the
/// months present in the partition key column.
pub(super) fn scan(
    path: &Path,
    month_field: impl Fn(&[String]) -> Option<(usize, FieldCodec)>,
    bar: &ProgressBar,
) -> Result<Scan, ImportError> {
    let file = path.display().to_string();
    // Hashing runs beside the parse, on the other core: one after the other
    // they would take twice as long.
    let hashing = {
        let path = path.to_owned();
        std::thread::spawn(move || -> io::Result<(String, u64)> {
            let mut f = File::open(path)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Ok((hex::encode(hasher.finalize()), total))
        })
    };
    let b = bar.clone();
    let mut head = Vec::with_capacity(8192);
    let input = open_input(path, move |chunk| b.inc(chunk.len() as u64))?;
    let mut input = BufReader::new(input);
    // Look at the start of the (decompressed) content before parsing it.
    {
        let start = input.fill_buf().map_err(|e| ImportError::Read {
            file: file.clone(),
            source: e,
        })?;
        head.extend_from_slice(&start[..start.len().min(8192)]);
    }
    if head.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty { file });
    }
    if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        return Err(ImportError::NotText {
            file,
            what: "it is UTF-16 encoded; convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8".into(),
        });
    }
    if head.contains(&0) {
        return Err(ImportError::NotText {
            file,
            what: "it contains binary data".into(),
        });
    }
    let mut reader = csv_reader(Box::new(input));
    let mut record = csv::ByteRecord::new();
    let mut header: Option<Vec<String>> = None;
    let mut key: Option<(usize, FieldCodec)> = None;
    let mut records = 0u64;
    let mut months = BTreeSet::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&file, e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(ImportError::Malformed {
                file,
                line,
                reason: "record is larger than 1 MiB; this does not look like a sales CSV file"
                    .into(),
            });
        }
        let fields = utf8_fields(&file, line, &record)?;
        match &header {
            None => {
                let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
                key = month_field(&names);
                header = Some(names);
            }
            Some(_) => {
                records += 1;
                // Only values the load will accept (type, rules, what
                // PostgreSQL can store) ask for a partition.
                if let Some((index, codec)) = &key
                    && let Some(Ok(day)) =
                        fields.get(*index).map(|v| codec.parse(v).map(|v| v.day()))
                {
                    months.extend(day.map(Month::of));
                }
            }
        }
    }
    let header = header.ok_or_else(|| ImportError::Empty { file: file.clone() })?;
    let (sha256, bytes) = hashing
        .join()
        .map_err(|_| ImportError::Read {
            file: file.clone(),
            source: io::Error::other("the hashing thread panicked"),
        })?
        .map_err(|e| ImportError::Read {
            file: file.clone(),
            source: e,
        })?;
    Ok(Scan {
        sha256,
        bytes,
        header,
        records,
        months,
    })
}

pub(super) fn csv_error(file: &str, e: csv::Error) -> ImportError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => {
            if let Some(long) = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<RecordTooLong>())
            {
                return ImportError::Malformed {
                    file: file.to_owned(),
                    line: long.line,
                    reason: "record is larger than 1 MiB".into(),
                };
            }
            ImportError::Read {
                file: file.to_owned(),
                source,
            }
        }
        other => ImportError::Malformed {
            file: file.to_owned(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

pub(super) fn utf8_fields<'r>(
    file: &str,
    line: u64,
    record: &'r csv::ByteRecord,
) -> Result<Vec<&'r str>, ImportError> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f).map_err(|_| ImportError::Encoding {
                file: file.to_owned(),
                line,
                column: i + 1,
            })
        })
        .collect()
}

/// Refuses inputs that cannot be read twice, before reading them.
pub(super) fn check_regular_file(path: &Path) -> Result<(), ImportError> {
    use std::os::unix::fs::FileTypeExt;
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ImportError::Read {
        file: file.clone(),
        source: e,
    })?;
    let t = meta.file_type();
    let what = if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_dir() {
        "directory"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        return Ok(());
    };
    Err(ImportError::NotAFile { file, what })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every record's fields, or the reader's refusal; the bound holds
    /// (a record is never longer than it allows).
    fn read_all(bytes: Vec<u8>) -> Result<usize, String> {
        let input: Box<dyn Read + Send> = Box::new(RecordBound::new(std::io::Cursor::new(bytes)));
        let mut reader = csv_reader(input);
        let mut record = csv::ByteRecord::new();
        let mut n = 0;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => return Ok(n),
                Ok(true) => {
                    assert!(record.as_slice().len() <= MAX_RECORD_BYTES + 2);
                    n += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Random bytes, quotes and separators are read or refused.
        #[test]
        fn random_csv_is_read_or_refused(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), any::<u8>()],
                0..4096,
            )
        ) {
            let _ = read_all(bytes);
        }
    }

    /// One record past the limit (an unclosed quote, or no newline) is
    /// refused while streaming, with the line it began on.
    #[test]
    fn a_record_past_the_limit_is_refused_while_streaming() {
        let mut open_quote = b"a,b\n\"".to_vec();
        open_quote.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        let err = read_all(open_quote).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let long = vec![b'y'; MAX_RECORD_BYTES + 10];
        assert!(read_all(long).is_err());
        assert_eq!(read_all(b"a,b\n\"c\nd\",e\n".to_vec()), Ok(2));
    }
}
