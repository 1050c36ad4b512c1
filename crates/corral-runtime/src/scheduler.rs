//! The scheduling core: one MPMC queue per priority level, worker threads that take from their
//! own level first and then steal from the levels that allow it, and parking without lost
//! wake-ups.
//!
//! No `unsafe` here: queues are `crossbeam_deque::Injector`s, tasks are `async_task::Runnable`s,
//! and parking is `std::thread::park`/`unpark` plus one mutex-protected list of idle workers.
//!
//! **Parking protocol.** A worker that finds no work (1) adds itself to `idle` and increments
//! `sleeping`, (2) issues a SeqCst fence, (3) looks at the queues once more, and only then (4)
//! parks. A spawner (a) pushes, (b) issues a SeqCst fence, (c) reads `sleeping` and, if non-zero,
//! takes one eligible idle worker out of the list and unparks it. Either the worker's re-check in
//! (3) sees the pushed task, or the spawner's read in (c) sees the worker: the two fences forbid
//! both reads from missing. `unpark` before `park` is not lost (the thread's token is set), so a
//! worker unparked between (3) and (4) returns from `park` at once. The mutex is only taken
//! when someone is idle: a busy runtime spawns without locking.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::Thread;

use async_task::Runnable;
use crossbeam_deque::{Injector, Steal};

/// Number of priority levels.
pub(crate) const LEVELS: usize = 3;

struct Idle {
    level: usize,
    thread: Thread,
}

pub(crate) struct Shared {
    queues: [Injector<Runnable>; LEVELS],
    /// `stealable[l]`: workers of other levels may run level `l`'s tasks.
    stealable: [bool; LEVELS],
    idle: Mutex<Vec<Idle>>,
    sleeping: AtomicUsize,
    shutdown: AtomicBool,
}

impl Shared {
    pub(crate) fn new(stealable: [bool; LEVELS]) -> Self {
        Self {
            queues: std::array::from_fn(|_| Injector::new()),
            stealable,
            idle: Mutex::new(Vec::new()),
            sleeping: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Queues a runnable task on `level` and wakes one idle worker allowed to run it.
    pub(crate) fn push(&self, level: usize, task: Runnable) {
        if self.is_shut_down() {
            drop(task); // cancels it; its JoinHandle reports Cancelled
            return;
        }
        self.queues[level].push(task);
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) > 0 {
            self.wake_one(level);
        }
    }

    fn wake_one(&self, level: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A worker of the task's own level first; otherwise, if the level lets others steal,
        // the idle worker of the highest level (it is the most likely to stay idle).
        let pick = idle.iter().position(|w| w.level == level).or_else(|| {
            if self.stealable[level] {
                idle.iter()
                    .enumerate()
                    .min_by_key(|(_, w)| w.level)
                    .map(|(i, _)| i)
            } else {
                None
            }
        });
        if let Some(i) = pick {
            let worker = idle.swap_remove(i);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            drop(idle);
            worker.thread.unpark();
        }
    }

    fn levels_for(&self, level: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(level).chain((0..LEVELS).filter(move |&l| l != level && self.stealable[l]))
    }

    fn find(&self, level: usize) -> Option<Runnable> {
        for l in self.levels_for(level) {
            loop {
                match self.queues[l].steal() {
                    Steal::Success(task) => return Some(task),
                    Steal::Empty => break,
                    Steal::Retry => continue,
                }
            }
        }
        None
    }

    fn has_work(&self, level: usize) -> bool {
        self.levels_for(level).any(|l| !self.queues[l].is_empty())
    }

    /// The loop of one worker thread of `level`; returns at shutdown.
    pub(crate) fn run_worker(&self, level: usize) {
        let me = std::thread::current();
        loop {
            if self.is_shut_down() {
                return;
            }
            if let Some(task) = self.find(level) {
                // A panic inside the task's future is caught by the task itself (and reported
                // through its JoinHandle); this guard also keeps the worker alive if a task's
                // output or waker panics on drop.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| task.run()));
                continue;
            }
            {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.push(Idle {
                    level,
                    thread: me.clone(),
                });
                self.sleeping.fetch_add(1, Ordering::SeqCst);
            }
            fence(Ordering::SeqCst);
            if !self.shutdown.load(Ordering::SeqCst) && !self.has_work(level) {
                std::thread::park();
            }
            self.leave_idle(&me);
        }
    }

    /// Removes this worker from the idle list if a spawner has not already done so.
    fn leave_idle(&self, me: &Thread) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = idle.iter().position(|w| w.thread.id() == me.id()) {
            idle.swap_remove(i);
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Stops intake; workers see it on their next turn (the caller unparks them).
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Drops every queued task (cancelling it). Called after the workers have stopped.
    pub(crate) fn drain(&self) -> usize {
        let mut dropped = 0;
        for q in &self.queues {
            loop {
                match q.steal() {
                    Steal::Success(task) => {
                        dropped += 1;
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| drop(task)));
                    }
                    Steal::Empty => break,
                    Steal::Retry => continue,
                }
            }
        }
        dropped
    }
}
