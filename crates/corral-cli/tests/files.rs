//! The run's own files: none written through a link planted where it should be, no output
//! allowed to clobber an input or another output, option files read only when regular and
//! of sane size. The attacker here is whoever else can write in the run's directory.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn no_file_is_written_through_a_planted_link() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let outside = d.join("outside");
    std::fs::write(&outside, "precious\n").unwrap();
    let jobs = mock.write_gets(d, "fast", 3, "");

    // The results file itself.
    let out = d.join("out.jsonl");
    symlink(&outside, &out).unwrap();
    let o = run_quiet(&jobs, &out, &[]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("symbolic link") && err.contains("out.jsonl"),
        "{err}"
    );
    std::fs::remove_file(&out).unwrap();

    // A body file where a saved body would go.
    let bodies = d.join("bodies");
    std::fs::create_dir(&bodies).unwrap();
    symlink(&outside, bodies.join("2.body")).unwrap();
    let o = run_quiet(&jobs, &out, &["--save-body-dir", path_str(&bodies)]);
    assert_exit(&o, 1);
    let rs = results(&out);
    assert_exactly_once(&rs, 3);
    let two = rs.iter().find(|r| r["line"] == 2).unwrap();
    assert!(
        two["error"]["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{two}"
    );
    assert!(bodies.join("1.body").is_file() && bodies.join("3.body").is_file());

    // The side file of --resume --retry-failed is refused...
    let retried = d.join("out.jsonl.retried");
    symlink(&outside, &retried).unwrap();
    let o = run_quiet(&jobs, &out, &["--resume", "--retry-failed"]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("symbolic link") && err.contains("retried"),
        "{err}"
    );
    assert_exactly_once(&results(&out), 3);
    assert!(!d.join(".out.jsonl.repair").exists());
    std::fs::remove_file(&retried).unwrap();
    // ... and a link where its temporary copy goes is removed, not followed: the results file
    // stays a file (it was replaced by the link) and the link's target is untouched.
    let repair = d.join(".out.jsonl.repair");
    symlink(&outside, &repair).unwrap();
    let o = run_quiet(&jobs, &out, &["--resume", "--retry-failed"]);
    assert_exit(&o, 0);
    assert!(!is_link(&out), "the results file was replaced by the link");
    assert_exactly_once(&results(&out), 3);
    assert!(!repair.exists());

    // The summary and the report replace a link, never write through it.
    let summary = d.join("summary.json");
    let report = d.join("report.html");
    symlink(&outside, &summary).unwrap();
    let outside2 = d.join("outside2");
    std::fs::write(&outside2, "precious\n").unwrap();
    symlink(&outside2, &report).unwrap();
    let o = run_quiet(
        &jobs,
        &out,
        &[
            "--overwrite",
            "--summary-json",
            path_str(&summary),
            "--report",
            path_str(&report),
        ],
    );
    assert_exit(&o, 0);
    assert!(!is_link(&summary) && !is_link(&report));
    assert!(std::fs::read_to_string(&report).unwrap().contains("<html"));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
    assert_eq!(std::fs::read_to_string(&outside2).unwrap(), "precious\n");
}

#[test]
fn no_output_may_clobber_an_input_or_another_output() {
    let mock = Mock::start("fast");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jobs = mock.write_gets(d, "fast", 3, "");
    let jobs_text = std::fs::read_to_string(&jobs).unwrap();
    let out = d.join("out.jsonl");
    let bodies = d.join("bodies");
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--summary-json".into(), path_str(&out).into()],
            "-o",
            "--summary-json",
        ),
        (
            vec!["--report".into(), path_str(&jobs).into()],
            "jobs file",
            "--report",
        ),
        (
            vec!["--summary-json".into(), path_str(&jobs).into()],
            "jobs file",
            "--summary-json",
        ),
        (
            vec!["--report".into(), path_str(&out).into()],
            "-o",
            "--report",
        ),
        (
            vec!["--save-body-dir".into(), path_str(d).into()],
            "jobs file",
            "--save-body-dir",
        ),
    ];
    for (extra, first, second) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let o = run_quiet(&jobs, &out, &extra);
        assert_exit(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(first) && err.contains(second),
            "{extra:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&jobs).unwrap(), jobs_text);
        assert!(!out.exists(), "{extra:?}: written before the check");
        let _ = std::fs::remove_dir_all(&bodies);
    }
    assert_eq!(mock.stats("fast")["requests"], 0, "a request was sent");

    // `corral run jobs >> jobs` never ended: standard output is an output too.
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .open(&jobs)
        .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["run", "-q", path_str(&jobs)])
        .stdout(Stdio::from(appended))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("standard output"), "{err}");
    assert_eq!(std::fs::read_to_string(&jobs).unwrap(), jobs_text);
}

#[test]
fn option_files_that_are_not_regular_files_are_refused_by_option() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(dir.path(), &["http://127.0.0.1:9/".into()]);
    let out = dir.path().join("out.jsonl");
    for (option, value) in [
        ("--cacert", "/dev/zero"),
        ("--config", "/dev/zero"),
        ("--template", "@/dev/zero"),
    ] {
        let mut args = vec![option, value];
        if option == "--template" {
            args.push("--csv");
        }
        let o = corral_within(
            20,
            &[
                &["run", "-q", path_str(&jobs), "-o"],
                &[path_str(&out)][..],
                &args[..],
            ]
            .concat(),
        );
        assert_exit(&o, 2);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(option) && err.contains("not a regular file"),
            "{option}: {err}"
        );
    }
}
