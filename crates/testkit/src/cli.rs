//! Running the `lifeboat` binary against one repository from integration tests.
//!
//! Every command gets `LIFEBOAT_PASSWORD` and
//! `-r <repo>`; `LIFEBOAT_REPOSITORY`, `LIFEBOAT_PASSWORD_FILE` and `LIFEBOAT_KEY_FILE` from the
//! caller's environment are removed so a developer's own settings cannot leak in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The password [`Lifeboat::new`] uses.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// The `lifeboat` binary bound to one repository and password.
#[derive(Debug, Clone)]
pub struct Lifeboat {
    bin: PathBuf,
    repo: PathBuf,
    password: String,
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossy UTF-8.
    pub stdout: String,
    /// Standard error, lossy UTF-8.
    pub stderr: String,
    /// What was run, for messages.
    pub args: Vec<String>,
}

impl Run {
    /// Panics with the command's output unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "lifeboat {:?}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON, panicking with the output if it does not parse.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "lifeboat {:?}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.args, self.stdout, self.stderr
            )
        })
    }
}

impl Lifeboat {
    /// `bin` is usually `env!("CARGO_BIN_EXE_lifeboat")`; `repo` a local directory path.
    pub fn new(bin: impl Into<PathBuf>, repo: impl Into<PathBuf>) -> Self {
        Lifeboat {
            bin: bin.into(),
            repo: repo.into(),
            password: TEST_PASSWORD.into(),
        }
    }

    /// The same binary and repository with another password.
    pub fn with_password(&self, password: &str) -> Self {
        Lifeboat {
            password: password.into(),
            ..self.clone()
        }
    }

    /// The same binary and password with another repository.
    pub fn with_repo(&self, repo: impl Into<PathBuf>) -> Self {
        Lifeboat {
            repo: repo.into(),
            ..self.clone()
        }
    }

    /// The repository path.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// A command for `lifeboat -r REPO ARGS…`, environment prepared, not yet spawned.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("LIFEBOAT_PASSWORD", &self.password)
            .env_remove("LIFEBOAT_REPOSITORY")
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env_remove("LIFEBOAT_KEY_FILE")
            .arg("-r")
            .arg(&self.repo)
            .args(args);
        c
    }

    /// Runs `lifeboat -r REPO ARGS…` to completion.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let out: Output = self
            .command(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// Runs and asserts exit code 0.
    #[track_caller]
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let r = self.run(args);
        r.expect_code(0);
        r
    }

    /// `lifeboat init` with the cheapest accepted key derivation (tests only), asserting
    /// success.
    #[track_caller]
    pub fn init(&self) {
        self.ok(&["init", "--kdf-memory-mib", "8", "--kdf-iterations", "1"]);
    }

    /// `lifeboat backup --json PATHS…`, asserting success; returns the new snapshot id.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> String {
        let mut args: Vec<&std::ffi::OsStr> = vec!["backup".as_ref(), "--json".as_ref()];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        let r = self.ok(&args);
        r.json()["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("backup --json has no snapshot id: {}", r.stdout))
            .to_owned()
    }

    /// `lifeboat snapshots --json`, asserting success; the snapshot ids, oldest first.
    #[track_caller]
    pub fn snapshot_ids(&self) -> Vec<String> {
        let r = self.ok(&["snapshots", "--json"]);
        r.json()
            .as_array()
            .unwrap_or_else(|| panic!("snapshots --json is not an array: {}", r.stdout))
            .iter()
            .map(|s| {
                s["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("snapshot without id: {s}"))
                    .to_owned()
            })
            .collect()
    }

    /// `lifeboat restore SNAPSHOT --target TARGET EXTRA…` (not asserted).
    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "restore".as_ref(),
            snapshot.as_ref(),
            "--target".as_ref(),
            target.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run(&args)
    }

    /// `lifeboat check --json EXTRA…` (not asserted); returns the run and its parsed report.
    #[track_caller]
    pub fn check(&self, extra: &[&str]) -> (Run, serde_json::Value) {
        let mut args = vec!["check", "--json"];
        args.extend_from_slice(extra);
        let r = self.run(&args);
        let j = r.json();
        (r, j)
    }
}
