//! The fenced resources a leader writes to: every write carries the term's token and is
//! refused, atomically with the write, when a newer token has already written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use lifeboat_coord::{FencingToken, PostgresFence};
use nix::fcntl::{Flock, FlockArg};
use tokio_postgres::{Client, NoTls};

use crate::error::{NodeError, Result};
use crate::spec::FenceSpec;

/// What the resource said to one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written with this token.
    Accepted,
    /// Refused: the resource has already accepted this higher token.
    Rejected {
        /// The highest token the resource has seen.
        seen: u64,
    },
}

/// An open fenced resource.
pub enum Resource {
    /// A local file of `<token> <node> <seq>` lines.
    File(PathBuf),
    /// A PostgreSQL table guarded by a fence row.
    Postgres {
        /// Our own connection (the election's is separate).
        client: Client,
        /// The fence row, named after the namespace.
        fence: PostgresFence,
        /// The namespace, stored with each row.
        namespace: String,
    },
}

const WRITES_SQL: &str = "
CREATE TABLE IF NOT EXISTS lifeboat_node_writes (
    namespace text NOT NULL,
    token     bigint NOT NULL,
    node      text NOT NULL,
    seq       bigint NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
)";

impl Resource {
    /// Opens (and for PostgreSQL, creates the tables of) the resource `spec`.
    pub async fn open(spec: &FenceSpec, namespace: &str) -> Result<Self> {
        match spec {
            FenceSpec::File(path) => Ok(Self::File(path.clone())),
            FenceSpec::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!("fence connection ended: {e}");
                    }
                });
                PostgresFence::create_schema(&client).await?;
                // Serialise DDL with other nodes (concurrent CREATE IF NOT EXISTS can fail).
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock(7451); {WRITES_SQL}; COMMIT;"
                    ))
                    .await?;
                Ok(Self::Postgres {
                    client,
                    fence: PostgresFence::new(namespace),
                    namespace: namespace.to_owned(),
                })
            }
        }
    }

    /// Writes record `seq` of `node` with `token`, unless a newer token has written.
    pub async fn write(
        &mut self,
        token: FencingToken,
        node: &str,
        seq: u64,
    ) -> Result<WriteOutcome> {
        match self {
            Self::File(path) => {
                let path = path.clone();
                let node = node.to_owned();
                tokio::task::spawn_blocking(move || file_write(&path, token.get(), &node, seq))
                    .await
                    .expect("fence file task panicked")
            }
            Self::Postgres {
                client,
                fence,
                namespace,
            } => {
                let txn = client.transaction().await?;
                match fence.guarded(&txn, token).await {
                    Ok(()) => {}
                    Err(lifeboat_coord::Error::Fenced { seen, .. }) => {
                        return Ok(WriteOutcome::Rejected { seen: seen.get() })
                    }
                    Err(e) => return Err(e.into()),
                }
                txn.execute(
                    "INSERT INTO lifeboat_node_writes (namespace, token, node, seq) \
                     VALUES ($1, $2, $3, $4)",
                    &[namespace, &(token.get() as i64), &node, &(seq as i64)],
                )
                .await?;
                txn.commit().await?;
                Ok(WriteOutcome::Accepted)
            }
        }
    }
}

/// One parsed line of a fence file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// The writer's token.
    pub token: u64,
    /// The writer.
    pub node: String,
    /// The writer's sequence number.
    pub seq: u64,
}

/// Reads every record of a fence file (for tests and checks).
pub fn read_file_records(path: &Path) -> Result<Vec<FileRecord>> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeError::FenceIo {
        path: path.to_owned(),
        source,
    })?;
    parse_records(path, &text)
}

fn parse_records(path: &Path, text: &str) -> Result<Vec<FileRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad = || NodeError::FenceFormat {
                path: path.to_owned(),
                line: i + 1,
                text: l.to_owned(),
            };
            let mut parts = l.split_whitespace();
            let token = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
            let node = parts.next().ok_or_else(bad)?.to_owned();
            let seq = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
            Ok(FileRecord { token, node, seq })
        })
        .collect()
}

/// Under an exclusive flock: compare with the last record's token, append if not older.
fn file_write(path: &Path, token: u64, node: &str, seq: u64) -> Result<WriteOutcome> {
    let io = |source| NodeError::FenceIo {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let mut file: Flock<File> = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io(std::io::Error::from(errno)))?;
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_to_string(&mut text).map_err(io)?;
    let seen = parse_records(path, &text)?.last().map(|r| r.token);
    if let Some(seen) = seen.filter(|&s| token < s) {
        return Ok(WriteOutcome::Rejected { seen });
    }
    file.write_all(format!("{token} {node} {seq}\n").as_bytes())
        .map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(WriteOutcome::Accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fence_refuses_older_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fence");
        assert_eq!(file_write(&p, 3, "a", 0).unwrap(), WriteOutcome::Accepted);
        assert_eq!(file_write(&p, 3, "a", 1).unwrap(), WriteOutcome::Accepted);
        assert_eq!(file_write(&p, 5, "b", 0).unwrap(), WriteOutcome::Accepted);
        assert_eq!(
            file_write(&p, 3, "a", 2).unwrap(),
            WriteOutcome::Rejected { seen: 5 }
        );
        let recs = read_file_records(&p).unwrap();
        assert_eq!(recs.iter().map(|r| r.token).collect::<Vec<_>>(), [3, 3, 5]);
        std::fs::write(&p, "garbage\n").unwrap();
        let e = file_write(&p, 9, "c", 0).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
