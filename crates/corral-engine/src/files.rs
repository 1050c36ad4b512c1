//! The files a run reads for its options and the files it writes.
//!
//! Three rules, because a run's directory is not always only the user's:
//! - an option file (`--cacert`, `--config`, `--template @FILE` ...) is read only when it is a
//!   regular file of at most [`MAX_OPTION_FILE`] bytes (`--cacert /dev/zero` grew to 24 GB);
//! - a file corral creates or appends to is never opened through a symbolic link planted where
//!   it should be ([`open`]: `O_NOFOLLOW`); a link to a device or pipe (`-o /dev/stdout`) is
//!   the user's own choice and is kept;
//! - no output may be an input or another output, and nothing may lie inside the bodies
//!   directory ([`check`]), decided before any request is sent.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The most an option file may hold: far above any PEM bundle, config or template.
pub const MAX_OPTION_FILE: u64 = 16 << 20;

/// Why an option file was not read, or why a run's files were refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The option names something other than a regular file (a device, a pipe, a directory).
    #[error("{option} {}: not a regular file", path.display())]
    NotRegular {
        /// The option, e.g. `--cacert`.
        option: String,
        /// The file it names.
        path: PathBuf,
    },
    /// The option's file is larger than [`MAX_OPTION_FILE`].
    #[error("{option} {}: larger than {} MiB", path.display(), MAX_OPTION_FILE >> 20)]
    TooLarge {
        /// The option.
        option: String,
        /// The file it names.
        path: PathBuf,
    },
    /// The option's file could not be read.
    #[error("{option} {}: {source}", path.display())]
    Io {
        /// The option.
        option: String,
        /// The file it names.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Two of the run's files are one: an output would overwrite an input or another output.
    #[error("{first} and {second} are the same file: choose another one")]
    Same {
        /// The first option and its file, as the user wrote them (`-o out.jsonl`).
        first: String,
        /// The second.
        second: String,
    },
    /// A file of the run lies inside the bodies directory, where a body could overwrite it.
    #[error(
        "{inner} is inside {dir}, where a saved body could overwrite it: choose another place"
    )]
    Inside {
        /// The option and file inside the directory.
        inner: String,
        /// The directory's option and path.
        dir: String,
    },
}

/// Reads the file `option` names whole, if it is a regular file of at most
/// [`MAX_OPTION_FILE`] bytes.
pub fn read_option(option: &str, path: &Path) -> Result<Vec<u8>, FileError> {
    let io_err = |source| FileError::Io {
        option: option.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            option: option.to_string(),
            path: path.to_path_buf(),
        });
    }
    let too_large = || FileError::TooLarge {
        option: option.to_string(),
        path: path.to_path_buf(),
    };
    if meta.len() > MAX_OPTION_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded again while read: the file may grow after its size was looked at.
    file.take(MAX_OPTION_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_OPTION_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_option`] for a text file (UTF-8).
pub fn read_option_text(option: &str, path: &Path) -> Result<String, FileError> {
    String::from_utf8(read_option(option, path)?).map_err(|e| FileError::Io {
        option: option.to_string(),
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// Whether `path` may be opened following links: only when it is a link to a device, pipe or
/// socket (`/dev/stdout`). A link to a file or directory, or one that leads nowhere, is
/// refused with the path; anything else is opened with `O_NOFOLLOW` (`false`).
fn follow(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(t) if !t.is_file() && !t.is_dir() => Ok(true),
            _ => Err(link(path)),
        },
        _ => Ok(false),
    }
}

fn link(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; corral does not write through links (name the file itself)",
            path.display()
        ),
    )
}

/// The `open(2)` flag that refuses a link as the last part of a path.
#[cfg(unix)]
const NO_FOLLOW: i32 = libc::O_NOFOLLOW;

/// Opens a file the run writes with `options`, never through a symbolic link planted at
/// `path` (see [`follow`]); a link put there between the check and the open fails the open.
pub fn open(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    if !follow(path)? {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(NO_FOLLOW);
    }
    options.open(path).map_err(|e| loop_is_link(e, path))
}

/// [`open`] on tokio's blocking pool.
pub async fn open_async(
    options: &mut tokio::fs::OpenOptions,
    path: &Path,
) -> io::Result<tokio::fs::File> {
    #[cfg(unix)]
    if !follow(path)? {
        options.custom_flags(NO_FOLLOW);
    }
    options.open(path).await.map_err(|e| loop_is_link(e, path))
}

/// `O_NOFOLLOW` on a link fails with `ELOOP`: said as what it is.
fn loop_is_link(e: io::Error, path: &Path) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return link(path);
    }
    e
}

/// Writes `bytes` as the whole of `path` (a summary, a report): through a new temporary file
/// beside it and a rename, so a link at `path` is replaced, never written through, and a
/// reader never sees half a file. A device or pipe (`/dev/stdout`) is written directly.
pub fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return OpenOptions::new().write(true).open(path)?.write_all(bytes);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp); // a leftover of a crashed run of this pid, or a link
    let written = open(OpenOptions::new().write(true).create_new(true), &tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// One file of a run, for [`check`]: an input, an output or the bodies directory.
#[derive(Debug)]
pub struct Place {
    shown: String,
    role: Role,
    at: At,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Input,
    Output,
    Dir,
}

/// Where a place is: a file that exists (its device and inode, and its path when it has
/// one), a file to be made (its parent's real path and its name), or nothing to compare (a
/// device, a pipe, a terminal: two outputs to `/dev/null` are fine).
#[derive(Debug)]
enum At {
    File {
        id: (u64, u64),
        path: Option<PathBuf>,
    },
    New(PathBuf),
    Nothing,
}

impl Place {
    /// A file the run reads, named by `option` (`jobs file`, `--config` ...).
    pub fn input(option: &str, path: &Path) -> Self {
        Self::at(option, path, Role::Input)
    }

    /// A file the run writes.
    pub fn output(option: &str, path: &Path) -> Self {
        Self::at(option, path, Role::Output)
    }

    /// The directory saved bodies are written to.
    pub fn bodies(option: &str, dir: &Path) -> Self {
        Self::at(option, dir, Role::Dir)
    }

    /// Standard input, when it is a file.
    pub fn stdin() -> Self {
        Self::fd("standard input", Role::Input, io::stdin())
    }

    /// Standard output, when it is a file (`corral run jobs >> jobs` never ended).
    pub fn stdout() -> Self {
        Self::fd("standard output", Role::Output, io::stdout())
    }

    #[cfg(unix)]
    fn fd(shown: &str, role: Role, fd: impl std::os::fd::AsFd) -> Self {
        let at = fd
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| File::from(fd).metadata())
            .ok()
            .filter(|m| m.is_file())
            .map_or(At::Nothing, |m| At::File {
                id: crate::sink::identity(&m),
                path: None,
            });
        Self {
            shown: shown.to_string(),
            role,
            at,
        }
    }

    fn at(option: &str, path: &Path, role: Role) -> Self {
        let at = match std::fs::metadata(path) {
            Ok(m) if m.is_file() || m.is_dir() => At::File {
                id: crate::sink::identity(&m),
                path: std::fs::canonicalize(path).ok(),
            },
            Ok(_) => At::Nothing,
            Err(_) => {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                let parent = std::fs::canonicalize(parent.unwrap_or(Path::new(".")));
                match (parent, path.file_name()) {
                    (Ok(dir), Some(name)) => At::New(dir.join(name)),
                    _ => At::Nothing,
                }
            }
        };
        Self {
            shown: format!("{option} {}", path.display()),
            role,
            at,
        }
    }

    fn same(&self, other: &Place) -> bool {
        match (&self.at, &other.at) {
            (At::File { id: a, .. }, At::File { id: b, .. }) => a == b,
            (At::New(a), At::New(b)) => a == b,
            _ => false,
        }
    }

    fn path(&self) -> Option<&Path> {
        match &self.at {
            At::File { path, .. } => path.as_deref(),
            At::New(p) => Some(p),
            At::Nothing => None,
        }
    }
}

/// Refuses a run whose outputs would overwrite one of its inputs or each other, or whose
/// files lie inside its bodies directory (the first clash found, naming both).
pub fn check(places: &[Place]) -> Result<(), FileError> {
    for (i, a) in places.iter().enumerate() {
        for b in &places[i + 1..] {
            let writes = a.role != Role::Input || b.role != Role::Input;
            if writes && a.same(b) {
                return Err(FileError::Same {
                    first: a.shown.clone(),
                    second: b.shown.clone(),
                });
            }
        }
    }
    for dir in places.iter().filter(|p| p.role == Role::Dir) {
        let Some(root) = dir.path() else { continue };
        for inner in places.iter().filter(|p| p.role != Role::Dir) {
            if inner.path().is_some_and(|p| p.starts_with(root)) {
                return Err(FileError::Inside {
                    inner: inner.shown.clone(),
                    dir: dir.shown.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "corral-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn option_files_that_are_not_regular_or_too_large_are_refused_by_name() {
        let e = read_option("--cacert", Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, FileError::NotRegular { .. }), "{e}");
        assert_eq!(e.to_string(), "--cacert /dev/zero: not a regular file");
        let d = dir();
        let big = d.join("big.pem");
        let f = File::create(&big).unwrap();
        f.set_len(MAX_OPTION_FILE + 1).unwrap();
        let e = read_option("--cert", &big).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
        assert!(e.to_string().starts_with("--cert "), "{e}");
        f.set_len(5).unwrap();
        assert_eq!(read_option("--cert", &big).unwrap(), vec![0; 5]);
        let e = read_option("--config", &d.join("none")).unwrap_err();
        assert!(matches!(e, FileError::Io { .. }), "{e}");
    }

    #[test]
    fn a_link_where_a_written_file_should_be_is_refused_and_its_target_untouched() {
        let d = dir();
        let target = d.join("precious");
        std::fs::write(&target, "keep").unwrap();
        let planted = d.join("out.jsonl");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let e = open(OpenOptions::new().create(true).append(true), &planted).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = open(
            OpenOptions::new().create(true).write(true).truncate(true),
            &planted,
        )
        .unwrap_err();
        assert!(e.to_string().contains("out.jsonl"), "{e}");
        // A dangling link too: it would create its target.
        let dangling = d.join("body");
        std::os::unix::fs::symlink(d.join("elsewhere"), &dangling).unwrap();
        assert!(open(OpenOptions::new().create(true).write(true), &dangling).is_err());
        assert!(!d.join("elsewhere").exists());
        // write_whole replaces the link, not its target.
        write_whole(&planted, b"summary").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&planted).unwrap(), "summary");
        assert!(!std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        // A link to a device is the user's choice.
        let null = d.join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        open(OpenOptions::new().append(true), &null).unwrap();
        write_whole(&null, b"x").unwrap();
    }

    #[test]
    fn outputs_may_not_be_inputs_or_each_other_nor_lie_in_the_bodies_dir() {
        let d = dir();
        let jobs = d.join("jobs.jsonl");
        std::fs::write(&jobs, "{}\n").unwrap();
        let bodies = d.join("bodies");
        std::fs::create_dir_all(&bodies).unwrap();
        let out = d.join("out.jsonl");
        // The same file by another name, and a file not yet made, are both seen.
        let other_name = d.join("bodies/../jobs.jsonl");
        let e = check(&[
            Place::input("jobs file", &jobs),
            Place::output("--summary-json", &other_name),
        ])
        .unwrap_err();
        assert!(matches!(e, FileError::Same { .. }), "{e}");
        assert!(e.to_string().contains("jobs file"), "{e}");
        let e = check(&[
            Place::input("jobs file", &jobs),
            Place::output("-o", &out),
            Place::output("--report", &d.join("./out.jsonl")),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "-o {} and --report {} are the same file: choose another one",
                out.display(),
                d.join("./out.jsonl").display()
            )
        );
        let e = check(&[
            Place::bodies("--save-body-dir", &bodies),
            Place::output("-o", &bodies.join("out.jsonl")),
        ])
        .unwrap_err();
        assert!(matches!(e, FileError::Inside { .. }), "{e}");
        let e = check(&[
            Place::input("jobs file", &d.join("bodies/../bodies/../jobs.jsonl")),
            Place::bodies("--save-body-dir", &d),
        ])
        .unwrap_err();
        assert!(matches!(e, FileError::Inside { .. }), "{e}");
        // Two inputs may be one file; distinct outputs and devices are fine.
        check(&[
            Place::input("jobs file", &jobs),
            Place::input("--config", &jobs),
            Place::output("-o", &out),
            Place::output("--summary-json", &d.join("summary.json")),
            Place::output("--report", Path::new("/dev/null")),
            Place::output("--summary-json", Path::new("/dev/null")),
            Place::bodies("--save-body-dir", &bodies),
        ])
        .unwrap();
    }
}
