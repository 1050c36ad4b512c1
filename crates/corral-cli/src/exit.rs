//! How a command ends: its exit code, and the message for stderr when it cannot go on.

/// A command that cannot go on: the exit code and the message for stderr.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) u8, pub(crate) String);

/// `map_err(fail(code))`: any displayable error becomes a [`Fail`] with that exit code.
pub(crate) fn fail<E: std::fmt::Display>(code: u8) -> impl Fn(E) -> Fail {
    move |e| Fail(code, e.to_string())
}

/// Exit codes (also in `corral --help`, [`EXIT_CODES`]).
pub(crate) mod code {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const FATAL: u8 = 3;
    pub const INTERRUPTED: u8 = 130;
}

/// The exit codes, as `corral --help` shows them.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0    every job succeeded
  1    the run finished, some jobs failed (their results say why), or it halted
       (--halt-after-failures, --halt-on-failure-rate; --resume runs the rest)
  2    bad usage or input: bad option or config, unreadable jobs file, results file refused;
       a queue's login or certificate refused, its options not signed with the fleet's key,
       or a second collector
  3    fatal: results could not be written (disk full ...); rerun with --resume
  130  interrupted by Ctrl-C / SIGTERM; rerun with --resume to finish";
