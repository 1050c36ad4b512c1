//! Spend caps (`--max-cost`, `--max-requests`): what a run may spend in all, counted as it
//! goes — requests as they are sent, costs as they are settled — over what the results file
//! already holds when the run resumes. Once a cap is reached no new job starts (those under way
//! finish, so a run ends past its cap by at most what they spend), and the run ends halted:
//! `--resume` runs the rest, under the same cap (nothing more is spent) or a raised one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::settings::Settings;

/// The caps of a run and what it has spent against them.
pub(crate) struct Caps {
    max_cost: Option<u64>,
    max_requests: Option<u64>,
    cost: AtomicU64,
    requests: AtomicU64,
    /// Why the run stopped taking jobs: the first cap found reached.
    reached: OnceLock<String>,
}

impl Caps {
    /// The caps of `settings`, if it has any.
    pub(crate) fn of(settings: &Settings) -> Option<Self> {
        (settings.max_cost.is_some() || settings.max_requests.is_some()).then(|| Self {
            max_cost: settings.max_cost,
            max_requests: settings.max_requests,
            cost: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            reached: OnceLock::new(),
        })
    }

    /// What an earlier run of these jobs spent (the results file's `attempts` and `cost`).
    pub(crate) fn spent_before(&self, requests: u64, cost: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.cost.fetch_add(cost, Ordering::Relaxed);
    }

    /// A request is being sent.
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's cost was settled.
    pub(crate) fn spend(&self, cost: u64) {
        self.cost.fetch_add(cost, Ordering::Relaxed);
    }

    /// True once a cap is reached: no job may start. The first time, why is kept.
    pub(crate) fn reached(&self) -> bool {
        if self.reached.get().is_some() {
            return true;
        }
        let (cost, requests) = (
            self.cost.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        );
        let why = match (self.max_cost, self.max_requests) {
            (Some(max), _) if cost >= max => {
                format!("the jobs spent {cost} in costs (--max-cost {max})")
            }
            (_, Some(max)) if requests >= max => {
                format!("{requests} requests were sent (--max-requests {max})")
            }
            _ => return false,
        };
        let _ = self.reached.set(why);
        true
    }

    /// Why the run stopped taking jobs, if a cap was reached.
    pub(crate) fn why(&self) -> Option<&str> {
        self.reached.get().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_reached_by_what_was_spent_before_and_now() {
        let caps = Caps::of(&Settings {
            max_cost: Some(100),
            max_requests: Some(10),
            ..Settings::default()
        })
        .unwrap();
        caps.spent_before(3, 60);
        assert!(!caps.reached());
        caps.spend(39);
        caps.request();
        assert!(!caps.reached() && caps.why().is_none());
        caps.spend(1);
        assert!(caps.reached());
        assert_eq!(
            caps.why(),
            Some("the jobs spent 100 in costs (--max-cost 100)")
        );
        let caps = Caps::of(&Settings {
            max_requests: Some(2),
            ..Settings::default()
        })
        .unwrap();
        caps.request();
        assert!(!caps.reached());
        caps.request();
        assert!(caps.reached() && caps.why().unwrap().contains("--max-requests 2"));
        assert!(Caps::of(&Settings::default()).is_none());
    }
}
