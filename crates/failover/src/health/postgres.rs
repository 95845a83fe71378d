//! PostgreSQL health check: connect and `SELECT 1`.

use async_trait::async_trait;

use super::HealthChecker;
use crate::error::BoxError;

/// Connects with a libpq-style connection string (no TLS) and runs `SELECT 1`.
#[derive(Clone)]
pub struct PostgresHealthChecker {
    conn: String,
}

impl std::fmt::Debug for PostgresHealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password.
        f.write_str("PostgresHealthChecker")
    }
}

impl PostgresHealthChecker {
    /// A checker for `conn` (`host=127.0.0.1 port=5432 user=postgres dbname=postgres`).
    pub fn new(conn: impl Into<String>) -> Self {
        Self { conn: conn.into() }
    }
}

#[async_trait]
impl HealthChecker for PostgresHealthChecker {
    fn describe(&self) -> String {
        let cfg: Result<tokio_postgres::Config, _> = self.conn.parse();
        match cfg {
            Ok(c) => format!("postgres {:?}:{:?}", c.get_hosts(), c.get_ports()),
            Err(_) => "postgres (unparsable connection string)".into(),
        }
    }

    async fn check(&self) -> Result<(), BoxError> {
        let (client, connection) = tokio_postgres::connect(&self.conn, tokio_postgres::NoTls)
            .await
            .map_err(explain)?;
        let conn_task = tokio::spawn(connection);
        let result = client.simple_query("SELECT 1").await;
        drop(client);
        conn_task.abort();
        result.map_err(explain)?;
        Ok(())
    }
}

/// `tokio_postgres::Error` displays only "db error"; the server's message is what helps.
fn explain(e: tokio_postgres::Error) -> BoxError {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()).into(),
        None => match std::error::Error::source(&e) {
            Some(src) => format!("{e}: {src}").into(),
            None => e.to_string().into(),
        },
    }
}
