//! CSV and JSONL log files with a column set fixed by the first row.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A value in a log row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Int(u64),
    Float(f64),
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => format!("{v}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Int(v) => serde_json::Value::from(*v),
            Cell::Float(v) => serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
        }
    }
}

/// An ordered row.
pub(crate) type Row = Vec<(String, Cell)>;

/// Appends rows to `<stem>.csv` and/or `<stem>.jsonl`.
#[derive(Debug)]
pub(crate) struct Logger {
    csv: Option<(PathBuf, Option<Vec<String>>)>,
    jsonl: Option<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

impl Logger {
    /// A logger appending to the given files; with `fresh`, existing files are removed first.
    pub(crate) fn new(csv: Option<PathBuf>, jsonl: Option<PathBuf>, fresh: bool) -> Result<Self> {
        if fresh {
            for p in csv.iter().chain(jsonl.iter()) {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(p)(e)),
                    _ => {}
                }
            }
        }
        Ok(Logger {
            csv: csv.map(|p| (p, None)),
            jsonl,
        })
    }

    /// Writes one row. The CSV columns are those of the file's header when it exists, else of
    /// this first row; keys outside the header are left out of the CSV (not of the JSONL).
    pub(crate) fn write(&mut self, row: &Row) -> Result<()> {
        if let Some((path, columns)) = &mut self.csv {
            if columns.is_none() {
                let existing = File::open(&*path)
                    .ok()
                    .and_then(|f| BufReader::new(f).lines().next())
                    .and_then(|l| l.ok())
                    .filter(|l| !l.trim().is_empty());
                let mut f = append(path)?;
                let cols: Vec<String> = match existing {
                    Some(h) => h.split(',').map(str::to_string).collect(),
                    None => {
                        let cols: Vec<String> = row.iter().map(|(k, _)| k.clone()).collect();
                        writeln!(f, "{}", cols.join(",")).map_err(io(path))?;
                        cols
                    }
                };
                *columns = Some(cols);
            }
            let map: BTreeMap<&str, &Cell> = row.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let line: Vec<String> = columns
                .iter()
                .flatten()
                .map(|c| map.get(c.as_str()).map(|v| v.csv()).unwrap_or_default())
                .collect();
            let mut f = append(path)?;
            writeln!(f, "{}", line.join(",")).map_err(io(path))?;
        }
        if let Some(path) = &self.jsonl {
            let obj: serde_json::Map<String, serde_json::Value> =
                row.iter().map(|(k, v)| (k.clone(), v.json())).collect();
            let mut f = append(path)?;
            writeln!(f, "{}", serde_json::Value::Object(obj)).map_err(io(path))?;
        }
        Ok(())
    }
}
