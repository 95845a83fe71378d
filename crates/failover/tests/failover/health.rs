//! The built-in health checkers against real loopback servers and processes, including
//! endpoints that hang (bounded by the timeout) and PostgreSQL when `LIFEBOAT_TEST_PG` is set.

use std::sync::Arc;
use std::time::Duration;

use lifeboat_failover::{
    check_bounded, CommandHealthChecker, HealthChecker, HttpHealthChecker, PostgresHealthChecker,
    TcpHealthChecker,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_millis(300);

/// A tiny HTTP responder: answers every request with `status`, or never answers (`None`).
async fn http_server(status: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match status {
                    Some(s) => {
                        let resp = format!(
                            "HTTP/1.1 {s}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                    // Hang: keep the connection open and silent.
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    format!("http://{addr}/health")
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

fn arc(c: impl HealthChecker) -> Arc<dyn HealthChecker> {
    Arc::new(c)
}

#[tokio::test]
async fn http_2xx_is_healthy_other_statuses_and_silence_are_not() {
    let ok = arc(HttpHealthChecker::new(http_server(Some("200 OK")).await));
    let o = check_bounded(&ok, TIMEOUT).await;
    assert!(o.healthy, "{o:?}");
    assert!(o.detail.is_none());
    assert!(o.at <= std::time::SystemTime::now());

    let no_content = arc(HttpHealthChecker::new(
        http_server(Some("204 No Content")).await,
    ));
    assert!(check_bounded(&no_content, TIMEOUT).await.healthy);

    let down = arc(HttpHealthChecker::new(
        http_server(Some("503 Service Unavailable")).await,
    ));
    let o = check_bounded(&down, TIMEOUT).await;
    assert!(!o.healthy);
    assert!(o.detail.as_deref().unwrap().contains("503"), "{o:?}");

    let refused = arc(HttpHealthChecker::new(format!(
        "http://{}/health",
        closed_port().await
    )));
    let o = check_bounded(&refused, TIMEOUT).await;
    assert!(!o.healthy);
    let detail = o.detail.unwrap();
    assert!(detail.to_lowercase().contains("refused"), "{detail}");

    let hang = arc(HttpHealthChecker::new(http_server(None).await));
    let o = check_bounded(&hang, TIMEOUT).await;
    assert!(!o.healthy);
    assert!(
        o.took >= TIMEOUT && o.took < TIMEOUT * 5,
        "took {:?}",
        o.took
    );
    assert!(o.detail.unwrap().contains("no answer within"));
}

#[tokio::test]
async fn tcp_connect() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = arc(TcpHealthChecker::new(l.local_addr().unwrap().to_string()));
    assert!(check_bounded(&up, TIMEOUT).await.healthy);
    let down = arc(TcpHealthChecker::new(closed_port().await));
    let o = check_bounded(&down, TIMEOUT).await;
    assert!(!o.healthy);
    assert!(o.detail.unwrap().contains("tcp"));
}

#[tokio::test]
async fn command_exit_status_and_a_hanging_command() {
    assert!(
        check_bounded(&arc(CommandHealthChecker::new("true")), TIMEOUT)
            .await
            .healthy
    );
    let o = check_bounded(&arc(CommandHealthChecker::new("exit 3")), TIMEOUT).await;
    assert!(!o.healthy);
    assert!(o.detail.unwrap().contains('3'));
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let hang = arc(CommandHealthChecker::new(format!(
        "sleep 2; touch '{}'",
        marker.display()
    )));
    let o = check_bounded(&hang, TIMEOUT).await;
    assert!(!o.healthy);
    assert!(o.took < Duration::from_secs(2), "took {:?}", o.took);
    // The timed-out command was killed, not left running.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !marker.exists(),
        "the hanging check kept running after its timeout"
    );
}

#[tokio::test]
async fn postgres_select_1() {
    // A server that accepts and never speaks: the check fails at the timeout.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let silent = arc(PostgresHealthChecker::new(format!(
        "host=127.0.0.1 port={port} user=x dbname=x connect_timeout=60"
    )));
    let o = check_bounded(&silent, TIMEOUT).await;
    assert!(!o.healthy);
    assert!(o.took >= TIMEOUT && o.took < TIMEOUT * 5);

    let Ok(url) = std::env::var("LIFEBOAT_TEST_PG") else {
        assert!(
            std::env::var("LIFEBOAT_REQUIRE_PG").as_deref() != Ok("1"),
            "LIFEBOAT_REQUIRE_PG=1 but LIFEBOAT_TEST_PG is unset"
        );
        eprintln!("skipping the live PostgreSQL check: LIFEBOAT_TEST_PG is unset");
        return;
    };
    let pg = arc(PostgresHealthChecker::new(url));
    let o = check_bounded(&pg, Duration::from_secs(5)).await;
    assert!(o.healthy, "{o:?}");
    // The same server, asked for a database that does not exist: connect fails.
    let mut cfg: tokio_postgres::Config =
        std::env::var("LIFEBOAT_TEST_PG").unwrap().parse().unwrap();
    cfg.dbname("no_such_database_here");
    let (host, port) = match (&cfg.get_hosts()[0], cfg.get_ports()[0]) {
        (tokio_postgres::config::Host::Tcp(h), p) => (h.clone(), p),
        _ => return,
    };
    let user = cfg.get_user().unwrap_or("postgres").to_owned();
    let wrong_db = arc(PostgresHealthChecker::new(format!(
        "host={host} port={port} user={user} dbname=no_such_database_here"
    )));
    let o = check_bounded(&wrong_db, Duration::from_secs(5)).await;
    assert!(!o.healthy);
    let detail = o.detail.unwrap();
    assert!(detail.contains("no_such_database_here"), "{detail}");
}
