//! Async pitfalls, in short: the rules that keep an async program from failing to compile,
//! hanging or stalling, each with an example that compiles (and, where breaking the rule is a
//! compile error, one that does not). Docs only; `examples/hazards.rs` shows the hangs live.
//!
//! # Nothing `!Send` lives across an `.await` in a spawned task
//!
//! `tokio::spawn` may move a task between threads at every `.await`, so everything the task
//! holds across one must be `Send`. An `Rc`, a `RefCell` borrow or a `std::sync::MutexGuard`
//! held across `.await` makes the future `!Send`, and the spawn does not compile:
//!
//! ```compile_fail
//! # #[tokio::main] async fn main() {
//! let task = tokio::spawn(async {
//!     let shared = std::rc::Rc::new(1);
//!     tokio::task::yield_now().await; // `shared` lives across this await
//!     println!("{shared}");
//! });
//! # task.await.unwrap(); }
//! ```
//!
//! Drop it before the `.await` (a block ends its life), or use its `Send` form (`Arc`,
//! `tokio::sync::Mutex`):
//!
//! ```
//! # #[tokio::main] async fn main() {
//! let task = tokio::spawn(async {
//!     let n = {
//!         let shared = std::rc::Rc::new(1);
//!         *shared
//!     }; // gone before the await
//!     tokio::task::yield_now().await;
//!     n
//! });
//! assert_eq!(task.await.unwrap(), 1);
//! # }
//! ```
//!
//! # A spawned task owns what it uses: `'static` means `Arc`, not `&`
//!
//! A spawned task may outlive the function that spawned it, so it cannot borrow that
//! function's locals:
//!
//! ```compile_fail
//! # #[tokio::main] async fn main() {
//! let names = vec!["a".to_string(), "b".to_string()];
//! let task = tokio::spawn(async { names.len() }); // borrows `names`
//! # task.await.unwrap(); }
//! ```
//!
//! Share it through an `Arc` and move a clone in:
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use std::sync::Arc;
//! let names = Arc::new(vec!["a".to_string(), "b".to_string()]);
//! let mine = names.clone();
//! let task = tokio::spawn(async move { mine.len() });
//! assert_eq!(task.await.unwrap(), names.len());
//! # }
//! ```
//!
//! # A recursive `async fn` boxes its recursive call
//!
//! An `async fn`'s future contains the futures it awaits; one that awaits itself would be
//! infinitely large:
//!
//! ```compile_fail,E0733
//! async fn depth(n: u64) -> u64 {
//!     if n == 0 { 0 } else { 1 + depth(n - 1).await }
//! }
//! ```
//!
//! `Box::pin` puts the recursive call's future on the heap:
//!
//! ```
//! async fn depth(n: u64) -> u64 {
//!     if n == 0 { 0 } else { 1 + Box::pin(depth(n - 1)).await }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! assert_eq!(depth(10).await, 10);
//! # }
//! ```
//!
//! # A `RefCell` (or thread-local) borrow never lives across an `.await`
//!
//! On one thread (`spawn_local`, `join!`, a current-thread runtime) it compiles, and another
//! future that runs while this one waits then finds the cell borrowed: a panic
//! (`BorrowMutError`) at run time, not a compile error. Borrow, use, and let the borrow end
//! before awaiting:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::cell::RefCell;
//! let hits = RefCell::new(0);
//! let a = async {
//!     *hits.borrow_mut() += 1; // the borrow ends with the statement
//!     tokio::task::yield_now().await;
//!     *hits.borrow_mut() += 1;
//! };
//! let b = async {
//!     *hits.borrow_mut() += 1; // runs while `a` waits: no borrow is alive
//! };
//! tokio::join!(a, b);
//! assert_eq!(*hits.borrow(), 3);
//! # }
//! ```
//!
//! # Nothing blocks inside async code
//!
//! `std::thread::sleep`, a blocking file or socket call, or 50 ms of computation holds the
//! worker thread: every other task on it waits (timers fire late, sockets go unread). Hand it
//! to a thread meant for it: [`crate::cpu::BlockingGate`] (bounded `spawn_blocking`) or
//! [`crate::cpu::CpuPool`] (rayon, with a bounded queue).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = corral::cpu::BlockingGate::new(2)?;
//! let sum = gate.run(|| (1..=1_000_000u64).sum::<u64>()).await?;
//! assert_eq!(sum, 500_000_500_000);
//! # Ok(()) }
//! ```
//!
//! # A lock with a deadline
//!
//! An async lock waits as long as its holder holds it. Where waiting forever is worse than
//! failing (a lock another task may hold across a long call), put a deadline on the wait:
//! `tokio::time::timeout` around `lock()`. Dropped when the deadline passes, the wait takes
//! nothing (tokio's locks are fair and cancel safe: the place in the queue is given up).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! let m = tokio::sync::Mutex::new(0);
//! let held = m.lock().await;
//! let waited = tokio::time::timeout(Duration::from_millis(100), m.lock()).await;
//! assert!(waited.is_err(), "held elsewhere: the wait gave up");
//! drop(held);
//! let mut g = tokio::time::timeout(Duration::from_millis(100), m.lock()).await.unwrap();
//! *g += 1;
//! # }
//! ```
//!
//! Locking twice in one task, or upgrading a read guard to a write one, waits for oneself:
//! `examples/hazards.rs` (5 and 6) shows both hanging, and their fixes.
