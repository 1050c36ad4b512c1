//! Bodies kept byte-exact: UTF-8 stays `body`, anything else is `body_base64`; `--compressed`
//! decodes gzip, deflate and br on both clients and caps the decoded size (a bomb is cut);
//! `--save-body-dir` writes each body to its own file.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::Value;

/// The mock's `binary=N` body.
fn binary(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

fn decoded(r: &Value) -> Vec<u8> {
    let b64 = r["body_base64"]
        .as_str()
        .unwrap_or_else(|| panic!("no body_base64: {r}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn binary_bodies_are_base64_and_text_stays_text() {
    let mock = Mock::start("fast");
    let fast = mock.url("fast");
    let dir = tempfile::tempdir().unwrap();
    let jobs = write_jobs(
        dir.path(),
        &[
            format!(r#"{{"url":"{fast}/bin?binary=3000"}}"#),
            format!(r#"{{"url":"{fast}/text?size=10"}}"#),
        ],
    );
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(&jobs, &out, &["--save-body"]);
    assert_exit(&o, 0);
    let rs = results(&out);
    let by_line = |l: u64| rs.iter().find(|r| r["line"] == l).unwrap();
    assert!(by_line(1).get("body").is_none(), "{}", by_line(1));
    assert_eq!(decoded(by_line(1)), binary(3000));
    assert_eq!(by_line(2)["body"], "..........");
    assert!(by_line(2).get("body_base64").is_none());
}

#[test]
fn compressed_bodies_are_decoded_byte_exact_on_both_clients_and_a_bomb_is_cut() {
    let mock = Mock::start("fast");
    let fast = mock.url("fast");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = ["gzip", "deflate", "br"]
        .iter()
        .map(|e| format!(r#"{{"url":"{fast}/c/{e}?binary=50000&encoding={e}"}}"#))
        .chain([format!(r#"{{"url":"{fast}/bomb?bomb=64"}}"#)])
        .collect();
    let jobs = write_jobs(dir.path(), &lines);
    let out = dir.path().join("out.jsonl");
    // The lean client, then reqwest (through a proxy: the mock answers for the host itself).
    for extra in [vec![], vec!["--proxy", fast]] {
        let mut args = vec!["--save-body", "--compressed", "--overwrite"];
        args.extend(extra.iter().copied());
        let o = run_quiet(&jobs, &out, &args);
        assert_exit(&o, 0);
        let rs = results(&out);
        for l in 1..=3u64 {
            let r = rs.iter().find(|r| r["line"] == l).unwrap();
            assert_eq!(r["body_bytes"], 50_000, "{extra:?} {r}");
            assert_eq!(decoded(r), binary(50_000), "{extra:?} line {l}");
        }
        // 64 MiB of zeros in ~64 KiB of gzip: cut at the 1 MiB cap, decoded.
        let bomb = rs.iter().find(|r| r["line"] == 4).unwrap();
        assert_eq!(bomb["truncated"], true, "{extra:?}");
        assert_eq!(bomb["body_bytes"], 1 << 20, "{extra:?}");
        let last = mock.stats("fast")["recent"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(
            last["headers"]["accept-encoding"], "gzip, deflate, br",
            "{last}"
        );
    }
    // Without --compressed: nothing asked for, nothing decoded.
    let o = run_quiet(&jobs, &out, &["--overwrite"]);
    assert_exit(&o, 0);
    let bomb = results(&out).into_iter().find(|r| r["line"] == 4).unwrap();
    assert!(bomb["body_bytes"].as_u64().unwrap() < 1 << 20, "{bomb}");
    let last = mock.stats("fast")["recent"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(last["headers"].get("accept-encoding").is_none(), "{last}");
}

#[test]
fn save_body_dir_writes_each_body_to_its_own_file() {
    let mock = Mock::start("fast");
    let fast = mock.url("fast");
    let dir = tempfile::tempdir().unwrap();
    let bodies = dir.path().join("bodies");
    let jobs = write_jobs(
        dir.path(),
        &[
            format!(r#"{{"id":"inv-1","url":"{fast}/a?binary=70000"}}"#),
            format!(r#"{{"id":"../../etc/x","url":"{fast}/b?size=5"}}"#),
            format!(r#"{{"url":"{fast}/c?binary=300&encoding=gzip"}}"#),
        ],
    );
    let out = dir.path().join("out.jsonl");
    let o = run_quiet(
        &jobs,
        &out,
        &["--save-body-dir", path_str(&bodies), "--compressed"],
    );
    assert_exit(&o, 0);
    let rs = results(&out);
    let file = |l: u64| {
        let r = rs.iter().find(|r| r["line"] == l).unwrap();
        assert!(
            r.get("body").is_none() && r.get("body_base64").is_none(),
            "{r}"
        );
        std::path::PathBuf::from(r["body_file"].as_str().unwrap_or_else(|| panic!("{r}")))
    };
    assert_eq!(file(1), bodies.join("1-inv-1.body"));
    assert_eq!(std::fs::read(file(1)).unwrap(), binary(70_000));
    assert_eq!(
        file(2),
        bodies.join("2.body"),
        "an unsafe id is not in the name"
    );
    assert_eq!(std::fs::read(file(2)).unwrap(), b".....");
    assert_eq!(std::fs::read(file(3)).unwrap(), binary(300), "decoded");
    assert_eq!(std::fs::read_dir(&bodies).unwrap().count(), 3);
}
