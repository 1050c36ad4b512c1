//! # corral-report
//!
//! A corral results file, read again: the summary `corral run` ends with, for a file from
//! yesterday, a partial run or a fleet's collector; the per-host table as CSV; and a
//! self-contained HTML page with charts over time (`corral report`, `corral run --report`).
//!
//! | module | what it is |
//! |---|---|
//! | [`record`] | one result line, as a report reads it |
//! | [`tally`] | a whole file streamed into totals, per-host counts, a timeline and lists, in flat memory |
//! | [`timeline`] | jobs and latency percentiles per second, downsampled for long runs |
//! | [`html`] | the page: SVG charts drawn by `plotters`, tables, no script, nothing fetched |
//! | [`table`] | the per-host table as CSV |
//!
//! ```
//! let results = "{\"line\":1,\"url\":\"http://a.test/\",\"ok\":true,\"status\":200,\"attempts\":1,\"latency_ms\":3.5,\"elapsed_ms\":3.6,\"started_at\":\"2026-11-26T10:00:00.000Z\"}\n";
//! let tally = corral_report::Tally::read(results.as_bytes()).unwrap();
//! print!("{}", tally.summary().render());
//! let page = corral_report::html::page(&tally, "results.jsonl").unwrap();
//! assert!(page.contains("<svg"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod html;
pub mod record;
pub mod table;
pub mod tally;
pub mod timeline;

pub use tally::Tally;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The results file could not be read.
    #[error("cannot read the results: {0}")]
    Read(#[from] std::io::Error),
    /// A histogram could not be made or merged (it cannot happen with the fixed bounds used).
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// A chart could not be drawn.
    #[error("cannot draw the chart {chart:?}: {message}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// What plotters said.
        message: String,
    },
    /// The CSV could not be written.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
}

impl From<hdrhistogram::CreationError> for ReportError {
    fn from(e: hdrhistogram::CreationError) -> Self {
        ReportError::Histogram(e.to_string())
    }
}

impl From<hdrhistogram::AdditionError> for ReportError {
    fn from(e: hdrhistogram::AdditionError) -> Self {
        ReportError::Histogram(e.to_string())
    }
}
