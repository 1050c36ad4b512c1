//! `corral report`: a results file read again, as the summary, JSON, CSV or an HTML page; and
//! the HTML page `corral run --report` and `corral demo` write at the end of a run.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use corral_engine::sink;
use corral_report::{html, table, Tally};

use crate::exit::{code as exit, Fail};

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The results file (as `corral run -o` writes it); `-` reads standard input.
    pub(crate) results: PathBuf,
    /// Print the summary as JSON (the fields of `corral run --summary-json`, each host with its
    /// jobs' outcomes).
    #[arg(long, conflicts_with = "csv")]
    pub(crate) json: bool,
    /// Print the per-host table as CSV, one row per host, the busiest first.
    #[arg(long)]
    pub(crate) csv: bool,
    /// Also write a self-contained HTML report (charts over time, per-host table, the slowest
    /// and the failed jobs) to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) html: Option<PathBuf>,
}

/// Examples shown by `corral report --help`.
pub(crate) const REPORT_EXAMPLES: &str = "\
Examples:
  corral report results.jsonl                      # the summary `corral run` ends with
  corral report results.jsonl --html report.html   # and a page to open in a browser
  corral report results.jsonl --json | jq .hosts   # for machines
  corral report results.jsonl --csv > hosts.csv    # the per-host table";

pub(crate) async fn report_cmd(args: ReportArgs) -> Result<u8, Fail> {
    let ReportArgs {
        results,
        json,
        csv,
        html: html_path,
    } = args;
    // Reading a large file is blocking work: off the runtime's thread.
    tokio::task::spawn_blocking(move || {
        let tally = read(&results)?;
        if let Some(out) = &html_path {
            write_html(&tally, &results, out)?;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let written = if json {
            serde_json::to_writer_pretty(&mut out, &tally.summary())
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else if csv {
            table::hosts_csv(&tally, &mut out).map_err(std::io::Error::other)
        } else {
            write!(out, "{}", tally.summary().render())
        };
        written.map_err(|e| Fail(exit::FATAL, format!("cannot write the report: {e}")))?;
        if let Some(p) = &html_path {
            eprintln!("corral: report written to {}", p.display());
        }
        Ok(exit::OK)
    })
    .await
    .map_err(|e| Fail(exit::FATAL, e.to_string()))?
}

/// Reads a results file (`-`: standard input) into a tally.
fn read(results: &Path) -> Result<Tally, Fail> {
    let shown = results.display();
    let tally = if results.as_os_str() == "-" {
        Tally::read(std::io::stdin().lock())
    } else {
        let file = File::open(results)
            .map_err(|e| Fail(exit::BAD_INPUT, format!("cannot read {shown}: {e}")))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Fail(
                exit::BAD_INPUT,
                format!("{shown} is a directory, not a results file"),
            ));
        }
        Tally::read(BufReader::with_capacity(1 << 16, file))
    };
    tally.map_err(|e| Fail(exit::BAD_INPUT, format!("{shown}: {e}")))
}

/// The summary of a results file, as `corral run` ends with, and as JSON (what
/// `--summary-json` writes): how `collect` ends.
/// Also returns the failed jobs' count.
pub(crate) fn summary_of(results: &Path) -> Result<(String, Vec<u8>, u64), Fail> {
    let summary = read(results)?.summary();
    Ok((
        summary.render(),
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
        summary.failed,
    ))
}

/// Reads `results` and writes its HTML report to `out`: what `corral run --report` does at
/// the end of a run.
pub(crate) fn report_html(results: &Path, out: &Path) -> Result<(), Fail> {
    let tally = read(results)?;
    write_html(&tally, results, out)
}

/// Writes the page whole or not at all (a temporary file renamed over `out`), and never over
/// the results file it reports on.
fn write_html(tally: &Tally, results: &Path, out: &Path) -> Result<(), Fail> {
    let same = match (std::fs::metadata(results), std::fs::metadata(out)) {
        (Ok(a), Ok(b)) => sink::identity(&a) == sink::identity(&b),
        _ => false,
    };
    if same {
        return Err(Fail(
            exit::BAD_INPUT,
            format!(
                "--html {} is the results file itself: choose another file",
                out.display()
            ),
        ));
    }
    let name = results
        .file_name()
        .map_or_else(|| "-".into(), |n| n.to_string_lossy());
    let page = html::page(tally, &name).map_err(|e| Fail(exit::FATAL, e.to_string()))?;
    let cannot = |e: std::io::Error| {
        Fail(
            exit::FATAL,
            format!("cannot write the report {}: {e}", out.display()),
        )
    };
    corral_engine::files::write_whole(out, page.as_ref()).map_err(cannot)
}
