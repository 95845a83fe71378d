//! The `--backend` and `--fence` command-line forms.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::NodeError;

/// Which coordination store the node campaigns in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// `embedded:<dir>`: flock + token file in a directory on this host.
    Embedded(PathBuf),
    /// `postgres:<url>` (the `postgres:` prefix may be omitted for `postgres://` URLs).
    Postgres(String),
    /// `etcd:<endpoint>[,<endpoint>…]`.
    Etcd(Vec<String>),
}

/// The resource the leader writes to, guarded by its fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceSpec {
    /// `file:<path>`: append `<token> <node> <seq>` lines under an exclusive flock, refusing
    /// a token lower than the last line's.
    File(PathBuf),
    /// `postgres:<url>`: insert a row into `lifeboat_node_writes` in one transaction with
    /// `PostgresFence::guarded` (fence name = namespace).
    Postgres(String),
}

const BACKEND_FORMS: &str =
    "expected embedded:<dir>, postgres:<url> or etcd:<endpoint>[,<endpoint>...]";
const FENCE_FORMS: &str = "expected file:<path> or postgres:<url>";

impl FromStr for BackendSpec {
    type Err = NodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| NodeError::Spec {
            what: "backend",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad(BACKEND_FORMS))?;
        if rest.trim().is_empty() {
            return Err(bad(BACKEND_FORMS));
        }
        match kind {
            "embedded" => Ok(Self::Embedded(PathBuf::from(rest))),
            "postgres" | "postgresql" => Ok(Self::Postgres(rest.to_owned())),
            "etcd" => Ok(Self::Etcd(
                rest.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            _ => Err(bad(BACKEND_FORMS)),
        }
    }
}

impl BackendSpec {
    /// The store as an operator wrote it, for messages: `etcd:<endpoints>`, `embedded:<dir>`,
    /// `postgres:<url>` with any password replaced by `***`.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(dir) => format!("embedded:{}", dir.display()),
            Self::Postgres(url) => format!("postgres:{}", redact_password(url)),
            Self::Etcd(endpoints) => format!("etcd:{}", endpoints.join(",")),
        }
    }
}

/// Hides the password of a `postgres://user:pass@host` URL or a `password=…` key/value.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl FromStr for FenceSpec {
    type Err = NodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NodeError::Spec {
            what: "fence",
            value: s.to_owned(),
            reason: FENCE_FORMS.to_owned(),
        };
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        match s.split_once(':') {
            Some(("file", p)) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
            Some(("postgres" | "postgresql", u)) if !u.is_empty() => {
                Ok(Self::Postgres(u.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backends_and_fences() {
        assert_eq!(
            "embedded:/tmp/x".parse::<BackendSpec>().unwrap(),
            BackendSpec::Embedded("/tmp/x".into())
        );
        assert_eq!(
            "postgres://u@h:1/db".parse::<BackendSpec>().unwrap(),
            BackendSpec::Postgres("postgres://u@h:1/db".into())
        );
        assert_eq!(
            "etcd:http://a:1, http://b:2"
                .parse::<BackendSpec>()
                .unwrap(),
            BackendSpec::Etcd(vec!["http://a:1".into(), "http://b:2".into()])
        );
        assert!("zookeeper:x".parse::<BackendSpec>().is_err());
        assert!("embedded:".parse::<BackendSpec>().is_err());
        assert_eq!(
            "file:/tmp/f".parse::<FenceSpec>().unwrap(),
            FenceSpec::File("/tmp/f".into())
        );
        let pg: BackendSpec = "postgres://u:secret@h:1/db".parse().unwrap();
        assert_eq!(pg.describe(), "postgres:postgres://u:***@h:1/db");
        let kv = BackendSpec::Postgres("host=h password=secret user=u".into());
        assert_eq!(kv.describe(), "postgres:host=h password=*** user=u");
        let e = "s3://x".parse::<FenceSpec>().unwrap_err().to_string();
        assert!(e.contains("file:<path>"), "{e}");
    }
}
