//! Results over time: jobs finished and their latency, per window of one second, in memory
//! that does not grow with the file.
//!
//! Each window keeps its counts and a small latency histogram (two significant figures: a
//! percentile is within 1 %). A run that lasts longer than [`MAX_WINDOWS`] seconds gets wider
//! windows: when one more would be needed, neighbours merge pairwise and the width doubles (1 s,
//! 2 s, 4 s ...). So a report of a day-long, 10-million-line run holds at most `MAX_WINDOWS`
//! histograms (about 13 KiB each), and its charts at most that many points. Lines come in the
//! order jobs finished, which is nearly but not quite time order (and a resumed run appends
//! later times): windows are keyed by time, not by arrival.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::ReportError;

/// The most windows kept; past it, windows double in width.
pub const MAX_WINDOWS: usize = 600;

/// Longest latency a window records (longer ones count as this): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Jobs finished within one window.
#[derive(Debug, Clone)]
struct Window {
    ok: u64,
    failed: u64,
    latency_us: Histogram<u32>,
}

/// One window's figures, for a chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The window's start, in seconds after the timeline's origin.
    pub at_s: f64,
    /// Jobs that finished ok in it, per second.
    pub ok_per_s: f64,
    /// Jobs that finished failed in it, per second.
    pub failed_per_s: f64,
    /// Latency percentiles of its jobs with a response, in milliseconds (p50, p90, p99);
    /// `None` when none had one.
    pub latency_ms: Option<[f64; 3]>,
}

/// Jobs finished over time, in windows of [`Timeline::width`].
#[derive(Debug)]
pub struct Timeline {
    /// Window width in seconds: 1, doubled each time the windows are too many.
    width_s: i64,
    /// Windows by their start second divided by the width (time since the Unix epoch).
    windows: BTreeMap<i64, Window>,
    max_windows: usize,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::with_max_windows(MAX_WINDOWS)
    }
}

impl Timeline {
    /// A timeline that keeps at most `max` windows (at least 2).
    pub fn with_max_windows(max: usize) -> Self {
        Self {
            width_s: 1,
            windows: BTreeMap::new(),
            max_windows: max.max(2),
        }
    }

    /// Counts a job that finished at `at_ms` (milliseconds since the Unix epoch), `ok` or not,
    /// with the latency of its last response if it had one.
    pub fn add(
        &mut self,
        at_ms: i64,
        ok: bool,
        latency: Option<Duration>,
    ) -> Result<(), ReportError> {
        let mut key = at_ms.div_euclid(1000).div_euclid(self.width_s);
        while !self.windows.contains_key(&key) && self.windows.len() >= self.max_windows {
            self.coarsen()?;
            key = at_ms.div_euclid(1000).div_euclid(self.width_s);
        }
        let w = match self.windows.entry(key) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(Window {
                ok: 0,
                failed: 0,
                latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)?,
            }),
        };
        if ok {
            w.ok += 1;
        } else {
            w.failed += 1;
        }
        if let Some(l) = latency {
            let us = u64::try_from(l.as_micros()).unwrap_or(u64::MAX);
            w.latency_us.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
        Ok(())
    }

    /// Doubles the width: each pair of neighbouring windows becomes one.
    fn coarsen(&mut self) -> Result<(), ReportError> {
        self.width_s = self.width_s.saturating_mul(2);
        let old = std::mem::take(&mut self.windows);
        for (k, w) in old {
            match self.windows.entry(k.div_euclid(2)) {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let into = o.get_mut();
                    into.ok += w.ok;
                    into.failed += w.failed;
                    into.latency_us.add(&w.latency_us)?;
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(w);
                }
            }
        }
        Ok(())
    }

    /// The width of each window.
    pub fn width(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.width_s).unwrap_or(u64::MAX))
    }

    /// Windows kept.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when no job was counted.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Every window from the first to the last, in time order, its start in seconds after
    /// `origin_ms` (milliseconds since the Unix epoch). Windows in which no job finished are
    /// there too, with zeros: a chart shows the gap as a gap, not as a line across it.
    pub fn points(&self, origin_ms: i64) -> Vec<Point> {
        let width = self.width_s as f64;
        let at = |k: i64| (k as f64 * width) - origin_ms as f64 / 1000.0;
        // A gap of more than a few windows (a resumed run the next day) is shown by its edges
        // only, so a chart does not draw thousands of empty windows.
        let mut out = Vec::with_capacity(self.windows.len() * 2);
        let mut prev: Option<i64> = None;
        for (&k, w) in &self.windows {
            if let Some(p) = prev {
                for empty in (p + 1..k).take(2).chain((p + 3).max(k - 1)..k) {
                    out.push(Point {
                        at_s: at(empty),
                        ok_per_s: 0.0,
                        failed_per_s: 0.0,
                        latency_ms: None,
                    });
                }
            }
            let h = &w.latency_us;
            let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
            out.push(Point {
                at_s: at(k),
                ok_per_s: w.ok as f64 / width,
                failed_per_s: w.failed as f64 / width,
                latency_ms: (!h.is_empty()).then(|| [q(0.5), q(0.9), q(0.99)]),
            });
            prev = Some(k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_654_920_000; // a whole second

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn counts_and_percentiles_per_second() {
        let mut t = Timeline::default();
        // Second 0: 100 ok with 1..=100 ms, one failed without a response.
        for i in 1..=100u64 {
            t.add(T0 + i as i64 * 5, true, ms(i)).unwrap();
        }
        t.add(T0 + 999, false, None).unwrap();
        // Second 2: 4 failed at 500 ms; second 1 empty.
        for _ in 0..4 {
            t.add(T0 + 2_500, false, ms(500)).unwrap();
        }
        let p = t.points(T0);
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(
            (p[0].at_s, p[0].ok_per_s, p[0].failed_per_s),
            (0.0, 100.0, 1.0)
        );
        let [p50, p90, p99] = p[0].latency_ms.unwrap();
        assert!((p50 - 50.0).abs() <= 0.5, "{p50}");
        assert!((p90 - 90.0).abs() <= 0.9, "{p90}");
        assert!((p99 - 99.0).abs() <= 1.0, "{p99}");
        assert_eq!(
            (p[1].at_s, p[1].ok_per_s, p[1].latency_ms),
            (1.0, 0.0, None)
        );
        assert_eq!((p[2].at_s, p[2].failed_per_s), (2.0, 4.0));
        assert!((p[2].latency_ms.unwrap()[0] - 500.0).abs() <= 5.0);
    }

    #[test]
    fn lines_out_of_order_land_in_their_own_window() {
        let mut t = Timeline::default();
        t.add(T0 + 3_000, true, ms(1)).unwrap();
        t.add(T0 + 1_000, true, ms(1)).unwrap();
        t.add(T0 + 3_100, true, ms(1)).unwrap();
        let p = t.points(T0);
        let busy: Vec<(f64, f64)> = p
            .iter()
            .filter(|p| p.ok_per_s > 0.0)
            .map(|p| (p.at_s, p.ok_per_s))
            .collect();
        assert_eq!(busy, [(1.0, 1.0), (3.0, 2.0)]);
    }

    #[test]
    fn a_long_run_is_downsampled_into_wider_windows_with_the_same_totals() {
        let mut t = Timeline::with_max_windows(10);
        // 100 seconds, 10 jobs each: windows of 16 s, 7 of them (0..100 in 16 s steps).
        for s in 0..100i64 {
            for j in 0..10 {
                t.add(T0 + s * 1000 + j, j % 2 == 0, ms(10)).unwrap();
            }
        }
        assert_eq!(t.width(), Duration::from_secs(16));
        assert!(t.len() <= 10, "{}", t.len());
        let p = t.points(T0);
        let total: f64 = p.iter().map(|p| (p.ok_per_s + p.failed_per_s) * 16.0).sum();
        assert_eq!(total, 1000.0);
        let ok: f64 = p.iter().map(|p| p.ok_per_s * 16.0).sum();
        assert_eq!(ok, 500.0);
    }

    #[test]
    fn a_gap_of_a_day_is_drawn_by_its_edges() {
        let mut t = Timeline::default();
        t.add(T0, true, ms(1)).unwrap();
        t.add(T0 + 86_400_000, true, ms(1)).unwrap();
        let p = t.points(T0);
        assert!(p.len() <= 6, "{}", p.len());
        assert_eq!(p.first().unwrap().at_s, 0.0);
        assert_eq!(p.last().unwrap().at_s, 86_400.0);
        assert!(p[1..p.len() - 1].iter().all(|p| p.ok_per_s == 0.0));
    }
}
