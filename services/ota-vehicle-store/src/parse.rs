//! Import file formats. NDJSON: one vehicle record (JSON object) per line.
//! CSV: a header `vin,model,model_year,platform,gateway,protocol,region,
//! country,tags` (any subset, any order, `vin` required) plus any
//! `ecu.<NAME>.hw`, `ecu.<NAME>.sw` and `attr.<KEY>` columns; tags are
//! separated by `;`; an empty cell says nothing about its field.
//!
//! Parsing is line by line so that a file of any size streams through in
//! constant memory and every problem is reported with its line number.

use std::str::FromStr;

use ota_common::vehicle::VehiclePatch;

use crate::ImportItem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" | "json" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            other => Err(format!(
                "unknown import format {other:?}: expected csv or ndjson"
            )),
        }
    }
}

impl Format {
    /// Guesses from a file name or a content type.
    pub fn detect(name_or_type: &str) -> Option<Self> {
        let s = name_or_type.to_ascii_lowercase();
        if s.ends_with(".csv") || s.contains("text/csv") {
            Some(Self::Csv)
        } else if s.ends_with(".ndjson")
            || s.ends_with(".jsonl")
            || s.contains("ndjson")
            || s.contains("jsonl")
        {
            Some(Self::Ndjson)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct HeaderError {
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Column {
    Vin,
    Text(TextField),
    ModelYear,
    Tags,
    EcuHw(String),
    EcuSw(String),
    Attr(String),
}

#[derive(Debug, Clone, Copy)]
enum TextField {
    Model,
    Platform,
    Gateway,
    Protocol,
    Region,
    Country,
}

pub struct LineParser {
    format: Format,
    columns: Option<Vec<Column>>,
    line: u64,
}

impl LineParser {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            columns: None,
            line: 0,
        }
    }

    /// Parses the next line of the file (without its newline). Returns None
    /// for blank lines and the CSV header; an error only for a CSV header that
    /// makes the rest of the file unreadable.
    pub fn next_line(&mut self, raw: &[u8]) -> Result<Option<ImportItem>, HeaderError> {
        self.line += 1;
        let line = self.line;
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t.trim_end_matches('\r'),
            Err(e) => {
                return Ok(Some(ImportItem::Rejected {
                    line,
                    vin: String::new(),
                    reason: format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
                }))
            }
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        match self.format {
            Format::Ndjson => Ok(Some(parse_json(line, text))),
            Format::Csv => match &self.columns {
                None => {
                    self.columns =
                        Some(parse_header(text).map_err(|reason| HeaderError { line, reason })?);
                    Ok(None)
                }
                Some(cols) => Ok(Some(parse_csv_row(line, text, cols))),
            },
        }
    }

    /// A line that could not even be read (e.g. too long): counted with its
    /// number so later lines keep theirs.
    pub fn reject_line(&mut self, reason: String) -> ImportItem {
        self.line += 1;
        ImportItem::Rejected {
            line: self.line,
            vin: String::new(),
            reason,
        }
    }
}

fn parse_json(line: u64, text: &str) -> ImportItem {
    match serde_json::from_str::<VehiclePatch>(text) {
        Ok(patch) => ImportItem::Record { line, patch },
        Err(e) => {
            // Name the VIN when the line is JSON but not a valid record.
            let vin = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("vin")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            let reason = match e.classify() {
                serde_json::error::Category::Data => format!("invalid record: {e}"),
                _ => format!("invalid JSON: {e}"),
            };
            ImportItem::Rejected { line, vin, reason }
        }
    }
}

fn parse_header(text: &str) -> Result<Vec<Column>, String> {
    let cells = split_csv(text).map_err(|e| format!("unreadable CSV header: {e}"))?;
    let mut cols = Vec::with_capacity(cells.len());
    for cell in cells {
        let name = cell.trim();
        let col = match name {
            "vin" => Column::Vin,
            "model" => Column::Text(TextField::Model),
            "model_year" => Column::ModelYear,
            "platform" => Column::Text(TextField::Platform),
            "gateway" => Column::Text(TextField::Gateway),
            "protocol" => Column::Text(TextField::Protocol),
            "region" => Column::Text(TextField::Region),
            "country" => Column::Text(TextField::Country),
            "tags" => Column::Tags,
            _ => {
                if let Some(rest) = name.strip_prefix("ecu.") {
                    match rest.rsplit_once('.') {
                        Some((ecu, "hw")) if !ecu.is_empty() => Column::EcuHw(ecu.to_owned()),
                        Some((ecu, "sw")) if !ecu.is_empty() => Column::EcuSw(ecu.to_owned()),
                        _ => {
                            return Err(format!(
                                "column {name:?}: expected ecu.<NAME>.hw or ecu.<NAME>.sw"
                            ))
                        }
                    }
                } else if let Some(key) = name.strip_prefix("attr.").filter(|k| !k.is_empty()) {
                    Column::Attr(key.to_owned())
                } else {
                    return Err(format!(
                        "unknown column {name:?}: expected vin, model, model_year, platform, gateway, protocol, region, country, tags, ecu.<NAME>.hw, ecu.<NAME>.sw or attr.<KEY>"
                    ));
                }
            }
        };
        cols.push(col);
    }
    if !cols.iter().any(|c| matches!(c, Column::Vin)) {
        return Err("the CSV header has no \"vin\" column".into());
    }
    Ok(cols)
}

fn split_csv(text: &str) -> Result<Vec<String>, csv::Error> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    match rdr.records().next() {
        Some(rec) => Ok(rec?.iter().map(str::to_owned).collect()),
        None => Ok(Vec::new()),
    }
}

fn parse_csv_row(line: u64, text: &str, cols: &[Column]) -> ImportItem {
    let reject = |vin: String, reason: String| ImportItem::Rejected { line, vin, reason };
    let cells = match split_csv(text) {
        Ok(c) => c,
        Err(e) => return reject(String::new(), format!("invalid CSV: {e}")),
    };
    let vin = cols
        .iter()
        .zip(&cells)
        .find(|(c, _)| matches!(c, Column::Vin))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if cells.len() != cols.len() {
        return reject(
            vin,
            format!(
                "expected {} fields as in the header, got {}",
                cols.len(),
                cells.len()
            ),
        );
    }
    let mut p = VehiclePatch {
        vin: vin.clone(),
        ..Default::default()
    };
    for (col, cell) in cols.iter().zip(cells) {
        let cell = cell.trim();
        if cell.is_empty() {
            continue;
        }
        match col {
            Column::Vin => {}
            Column::Text(f) => {
                let slot = match f {
                    TextField::Model => &mut p.model,
                    TextField::Platform => &mut p.platform,
                    TextField::Gateway => &mut p.gateway,
                    TextField::Protocol => &mut p.protocol,
                    TextField::Region => &mut p.region,
                    TextField::Country => &mut p.country,
                };
                *slot = Some(cell.to_owned());
            }
            Column::ModelYear => match cell.parse() {
                Ok(y) => p.model_year = Some(y),
                Err(_) => return reject(vin, format!("model_year {cell:?} is not an integer")),
            },
            Column::Tags => {
                p.tags = Some(
                    cell.split(';')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            Column::EcuHw(ecu) => p.ecus.entry(ecu.clone()).or_default().hw = Some(cell.to_owned()),
            Column::EcuSw(ecu) => p.ecus.entry(ecu.clone()).or_default().sw = Some(cell.to_owned()),
            Column::Attr(key) => {
                p.attributes.insert(key.clone(), cell.to_owned());
            }
        }
    }
    ImportItem::Record { line, patch: p }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(item: Option<ImportItem>) -> (u64, VehiclePatch) {
        match item {
            Some(ImportItem::Record { line, patch }) => (line, patch),
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn rejected(item: Option<ImportItem>) -> (u64, String) {
        match item {
            Some(ImportItem::Rejected { line, reason, .. }) => (line, reason),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn csv_with_ecus_attributes_and_tags() {
        let mut p = LineParser::new(Format::Csv);
        assert!(p
            .next_line(b"vin,model,model_year,tags,ecu.BMS.hw,ecu.BMS.sw,attr.color")
            .unwrap()
            .is_none());
        let (line, v) = record(
            p.next_line(b"WVWZZZE1ZMP000001,ID.4,2023,fleet-a;test,H2,2.2.0,blue\r")
                .unwrap(),
        );
        assert_eq!(line, 2);
        assert_eq!(v.model.as_deref(), Some("ID.4"));
        assert_eq!(v.model_year, Some(2023));
        assert_eq!(v.tags, Some(vec!["fleet-a".into(), "test".into()]));
        assert_eq!(v.ecus["BMS"].sw.as_deref(), Some("2.2.0"));
        assert_eq!(v.attributes["color"], "blue");
    }

    #[test]
    fn csv_errors_name_line_and_field() {
        let mut p = LineParser::new(Format::Csv);
        p.next_line(b"vin,model_year").unwrap();
        let (line, reason) = rejected(p.next_line(b"WVWZZZE1ZMP000001,soon").unwrap());
        assert_eq!(
            (line, reason.as_str()),
            (2, "model_year \"soon\" is not an integer")
        );
        let (line, reason) = rejected(p.next_line(b"WVWZZZE1ZMP000001").unwrap());
        assert_eq!(
            (line, reason.as_str()),
            (3, "expected 2 fields as in the header, got 1")
        );
    }

    #[test]
    fn csv_header_problems_stop_the_file() {
        let err = LineParser::new(Format::Csv)
            .next_line(b"vin,modle")
            .unwrap_err();
        assert_eq!(err.line, 1);
        assert!(
            err.reason.starts_with("unknown column \"modle\""),
            "{}",
            err.reason
        );
        let err = LineParser::new(Format::Csv)
            .next_line(b"model")
            .unwrap_err();
        assert_eq!(err.reason, "the CSV header has no \"vin\" column");
    }

    #[test]
    fn ndjson_blank_lines_keep_numbering_and_bad_lines_are_named() {
        let mut p = LineParser::new(Format::Ndjson);
        assert!(p.next_line(b"").unwrap().is_none());
        let (line, _) = record(p.next_line(br#"{"vin":"WVWZZZE1ZMP000001"}"#).unwrap());
        assert_eq!(line, 2);
        let (line, reason) = rejected(p.next_line(b"{not json").unwrap());
        assert_eq!(line, 3);
        assert!(reason.starts_with("invalid JSON"), "{reason}");
        let (line, reason) = rejected(p.next_line(&[0xff, 0xfe]).unwrap());
        assert_eq!((line, reason.as_str()), (4, "not valid UTF-8 (byte 1)"));
    }

    #[test]
    fn detects_formats() {
        assert_eq!(Format::detect("fleet.csv"), Some(Format::Csv));
        assert_eq!(Format::detect("application/x-ndjson"), Some(Format::Ndjson));
        assert_eq!(Format::detect("fleet.txt"), None);
        assert!("xml".parse::<Format>().is_err());
    }
}
