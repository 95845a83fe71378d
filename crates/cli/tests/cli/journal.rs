//! `lifeboat journal …` against journals written by the real `PitrManager`: stats, verify
//! (clean and damaged), backups, recover to LSN / time / latest, dump, and recovery from an
//! archive after the local directories are deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use lifeboat_journal::archive::Archive;
use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::{PitrConfig, PitrManager};

fn lifeboat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .env_remove("PITR_WAL_DIR")
        .env_remove("PITR_BACKUP_DIR")
        .env_remove("PITR_ARCHIVE")
        .env_remove("PITR_ARCHIVE_KEY_FILE")
        .output()
        .expect("run lifeboat")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn op(i: u64) -> CatalogOp {
    match i % 4 {
        0 => CatalogOp::TopicCreated {
            name: format!("t{}", i % 11),
            partitions: (i % 5) as u32 + 1,
            config: BTreeMap::from([("retention.ms".into(), i.to_string())]),
        },
        1 => CatalogOp::UserCreated {
            name: format!("u{i}"),
        },
        2 => CatalogOp::TopicDeleted {
            name: format!("t{}", (i + 3) % 11),
        },
        _ => CatalogOp::SchemaRegistered {
            subject: format!("s{}", i % 3),
            version: i as u32,
            definition: format!("{{\"n\":{i}}}"),
        },
    }
}

fn fold(ops: &[CatalogOp]) -> Catalog {
    let mut c = Catalog::default();
    for o in ops {
        c.apply_op(o);
    }
    c
}

/// Writes `n` ops with a base backup after op `backup_at`; returns the ops and the
/// timestamp (Unix ns) of every record, by LSN - 1.
fn write_journal(root: &Path, n: u64, backup_at: u64) -> (Vec<CatalogOp>, Vec<i64>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = PitrConfig::builder()
        .wal_directory(root.join("wal"))
        .backup_directory(root.join("backups"))
        .wal_segment_size(64 * 1024)
        .no_background_backups()
        .build()
        .unwrap();
    let ops: Vec<CatalogOp> = (0..n).map(op).collect();
    rt.block_on(async {
        let pitr = PitrManager::<Catalog>::open(config).await.unwrap();
        for (i, o) in ops.iter().enumerate() {
            let lsn = pitr.log_change(o.clone()).await.unwrap().get();
            assert_eq!(lsn, i as u64 + 1);
            if lsn == backup_at {
                pitr.create_base_backup().await.unwrap();
            }
        }
    });
    // The dropped writer's spare-segment thread may still be removing its `*.seg.tmp`.
    for _ in 0..200 {
        let spare = std::fs::read_dir(root.join("wal")).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg.tmp")
        });
        if !spare {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let times = lifeboat_journal::read_from(&root.join("wal"), 1)
        .unwrap()
        .iter()
        .map(|r| r.timestamp_nanos)
        .collect();
    (ops, times)
}

fn recovered(path: &Path) -> Catalog {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn stats_verify_backups_recover_dump_on_a_local_journal() {
    let d = tempfile::tempdir().unwrap();
    let (ops, times) = write_journal(d.path(), 3000, 1200);
    let wal = d.path().join("wal");
    let bk = d.path().join("backups");
    let (w, b) = (wal.to_str().unwrap(), bk.to_str().unwrap());
    let (wal_before, backups_before) = (tree(&wal), tree(&bk));

    let st: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
        "--json",
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "stats",
    ])))
    .unwrap();
    assert_eq!(st["last_lsn"], 3000);
    assert_eq!(st["first_lsn"], 1);
    assert_eq!(st["entries"], 3000);
    assert_eq!(st["backups"], 1);
    assert_eq!(st["newest_backup_lsn"], 1200);
    assert!(st["segments"].as_u64().unwrap() > 1, "{st}");

    let v: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
        "--json",
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "verify",
    ])))
    .unwrap();
    assert_eq!(v["is_valid"], true);
    assert_eq!(v["verified_entries"], 3000);
    assert_eq!(v["backups_checked"], 1);

    let bl: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
        "--json",
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "backups",
    ])))
    .unwrap();
    assert_eq!(bl.as_array().unwrap().len(), 1);
    assert_eq!(bl[0]["start_lsn"], 1200);

    // To an LSN before the backup (replay from the start) and after it (backup + replay).
    for (target, want_backup) in [(700u64, false), (2500, true)] {
        let out = d.path().join(format!("state-{target}.json"));
        let r: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
            "--json",
            "journal",
            "--wal-dir",
            w,
            "--backup-dir",
            b,
            "recover",
            "--to-lsn",
            &target.to_string(),
            "--out",
            out.to_str().unwrap(),
        ])))
        .unwrap();
        assert_eq!(r["lsn"], target);
        assert_eq!(r["base_backup_id"].is_string(), want_backup, "{r}");
        assert_eq!(recovered(&out), fold(&ops[..target as usize]));
    }

    // To a time: exactly the records stamped at or before it.
    let t = times[1999];
    let out = d.path().join("state-time.json");
    ok(&lifeboat(&[
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "recover",
        "--to-time",
        &t.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let upto = times.iter().filter(|&&x| x <= t).count();
    assert_eq!(recovered(&out), fold(&ops[..upto]));
    // The same instant in RFC 3339 gives the same state.
    let rfc = jiff::Timestamp::from_nanosecond(i128::from(t))
        .unwrap()
        .to_string();
    let out2 = d.path().join("state-rfc.json");
    ok(&lifeboat(&[
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "recover",
        "--to-time",
        &rfc,
        "--out",
        out2.to_str().unwrap(),
    ]));
    assert_eq!(recovered(&out2), recovered(&out));

    let latest = d.path().join("state-latest.json");
    ok(&lifeboat(&[
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "recover",
        "--latest",
        "--out",
        latest.to_str().unwrap(),
    ]));
    assert_eq!(recovered(&latest), fold(&ops));

    // Beyond the end of the log: a clear error naming the last LSN, nothing written.
    let beyond = d.path().join("beyond.json");
    let o = lifeboat(&[
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "recover",
        "--to-lsn",
        "5000",
        "--out",
        beyond.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("3000") && err.contains("after the end"),
        "{err}"
    );
    assert!(!beyond.exists());
    // A time after the last record is refused the same way, not clamped to the end.
    let late = (times[2999] + 3_600_000_000_000).to_string();
    let o = lifeboat(&[
        "journal",
        "--wal-dir",
        w,
        "--backup-dir",
        b,
        "recover",
        "--to-time",
        &late,
        "--out",
        beyond.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--to-time") && err.contains("after the end") && err.contains("3000"),
        "{err}"
    );
    assert!(!beyond.exists());

    let dump = ok(&lifeboat(&[
        "--json",
        "journal",
        "--wal-dir",
        w,
        "dump",
        "--from-lsn",
        "5",
        "--limit",
        "3",
    ]));
    let lines: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["lsn"], 5 + i as u64);
        assert_eq!(l["op"], serde_json::to_value(&ops[4 + i]).unwrap());
    }
    // Read-only: every command above left the journal's directories exactly as they were.
    assert_eq!(tree(&wal), wal_before);
    assert_eq!(tree(&bk), backups_before);
}

#[test]
fn verify_names_the_damaged_lsn_and_exits_4() {
    let d = tempfile::tempdir().unwrap();
    write_journal(d.path(), 2000, 100);
    let wal = d.path().join("wal");
    let segs = lifeboat_journal::segment::list_segments(&wal).unwrap();
    assert!(segs.len() >= 3);
    // Damage the middle of a closed segment.
    let (first, path) = &segs[1];
    let len = std::fs::metadata(path).unwrap().len();
    lifeboat_testkit::flip_byte(path, len / 2).unwrap();
    let o = lifeboat(&[
        "--json",
        "journal",
        "--wal-dir",
        wal.to_str().unwrap(),
        "--backup-dir",
        d.path().join("backups").to_str().unwrap(),
        "verify",
    ]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["is_valid"], false);
    let bad = v["errors"][0]["lsn"].as_u64().unwrap();
    let next = segs[2].0;
    assert!(
        (*first..next).contains(&bad),
        "damage at {bad} outside segment {first}..{next}"
    );
}

#[test]
fn recover_from_the_archive_after_losing_the_local_directories() {
    let d = tempfile::tempdir().unwrap();
    let (ops, _) = write_journal(d.path(), 2500, 900);
    let arch = d.path().join("archive");
    let key_file = d.path().join("archive.key");
    let key = lifeboat_journal::archive::ArchiveKey::generate();
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let archived_upto = rt.block_on(async {
        let a = Archive::open(arch.to_str().unwrap(), Some(key))
            .await
            .unwrap();
        a.sync(&d.path().join("wal"), &d.path().join("backups"))
            .await
            .unwrap()
            .archived_upto_lsn
            .get()
    });
    assert!(
        archived_upto > 900 && archived_upto < 2500,
        "{archived_upto}"
    );
    let (a, k) = (arch.to_str().unwrap(), key_file.to_str().unwrap());

    let st: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
        "--json",
        "journal",
        "--archive",
        a,
        "--archive-key-file",
        k,
        "stats",
    ])))
    .unwrap();
    assert_eq!(st["archived_upto_lsn"], archived_upto);
    assert_eq!(st["encrypted"], true);
    assert_eq!(st["backups"], 1);

    std::fs::remove_dir_all(d.path().join("wal")).unwrap();
    std::fs::remove_dir_all(d.path().join("backups")).unwrap();

    let out = d.path().join("state.json");
    let r: serde_json::Value = serde_json::from_str(&ok(&lifeboat(&[
        "--json",
        "journal",
        "--archive",
        a,
        "--archive-key-file",
        k,
        "recover",
        "--latest",
        "--out",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(r["lsn"], archived_upto);
    assert!(r["base_backup_id"].is_string());
    assert_eq!(recovered(&out), fold(&ops[..archived_upto as usize]));

    let v = ok(&lifeboat(&[
        "journal",
        "--archive",
        a,
        "--archive-key-file",
        k,
        "verify",
    ]));
    assert!(v.contains("ok:"), "{v}");

    // Without the key: a clear refusal, not garbage.
    let o = lifeboat(&[
        "journal",
        "--archive",
        a,
        "recover",
        "--latest",
        "--out",
        "-",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("key"), "{err}");
}

/// Every path under `dir` with its size and modification time.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

fn failed(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "succeeded:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn read_only_commands_refuse_a_wal_dir_without_a_journal_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let foreign = root.join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("cat.jpg"), b"not a journal").unwrap();
    let file = root.join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = root.join("missing");
    let out = root.join("state.json");
    let before = tree(root);
    for (dir, why) in [
        (&empty, "holds no segment files"),
        (&foreign, "holds no segment files"),
        (&file, "not a directory"),
        (&missing, "does not exist"),
    ] {
        let w = dir.to_str().unwrap();
        let cmds: [&[&str]; 5] = [
            &["verify"],
            &["stats"],
            &["recover", "--latest", "--out", out.to_str().unwrap()],
            &["dump"],
            &["backups"],
        ];
        for cmd in cmds {
            let mut args = vec!["journal", "--wal-dir", w];
            args.extend_from_slice(cmd);
            let err = failed(&lifeboat(&args));
            assert!(
                err.contains("no journal in") && err.contains(w) && err.contains(why),
                "{cmd:?} on {w}: {err}"
            );
            assert!(
                !err.contains("ok:") && !err.contains("recovered to"),
                "{err}"
            );
        }
    }
    assert_eq!(tree(root), before, "a read-only command wrote something");
}

#[test]
fn a_nonexistent_archive_is_an_error_and_nothing_is_created() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let empty = root.join("empty-archive");
    std::fs::create_dir(&empty).unwrap();
    let out = root.join("state.json");
    let before = tree(root);
    for loc in [root.join("no-such-archive"), empty.clone()] {
        let a = loc.to_str().unwrap();
        let cmds: [&[&str]; 3] = [
            &["stats"],
            &["verify"],
            &["recover", "--latest", "--out", out.to_str().unwrap()],
        ];
        for cmd in cmds {
            let mut args = vec!["journal", "--archive", a];
            args.extend_from_slice(cmd);
            let err = failed(&lifeboat(&args));
            assert!(
                err.contains("no journal archive") && err.contains("--archive"),
                "{cmd:?} on {a}: {err}"
            );
        }
    }
    assert_eq!(tree(root), before, "reading an archive created something");
    assert!(!root.join("no-such-archive").exists());
    assert!(!empty.join("archive.json").exists());
}

#[test]
fn a_target_before_the_oldest_recoverable_point_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write_journal(d.path(), 3000, 1200);
    let wal = d.path().join("wal");
    // What WAL retention does: drop the segments the backup at LSN 1200 no longer needs.
    let segs = lifeboat_journal::segment::list_segments(&wal).unwrap();
    for pair in segs.windows(2) {
        if pair[1].0 <= 1201 {
            std::fs::remove_file(&pair[0].1).unwrap();
        }
    }
    let (w, b) = (
        wal.to_str().unwrap().to_owned(),
        d.path().join("backups").to_str().unwrap().to_owned(),
    );
    let out = d.path().join("early.json");
    let err = failed(&lifeboat(&[
        "journal",
        "--wal-dir",
        &w,
        "--backup-dir",
        &b,
        "recover",
        "--to-lsn",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(
        err.contains("--to-lsn 5")
            && err.contains("before the oldest recoverable point")
            && err.contains("1200"),
        "{err}"
    );
    assert!(!out.exists());
    // From the backup on, recovery still works.
    ok(&lifeboat(&[
        "journal",
        "--wal-dir",
        &w,
        "--backup-dir",
        &b,
        "recover",
        "--to-lsn",
        "1500",
        "--out",
        out.to_str().unwrap(),
    ]));
}
