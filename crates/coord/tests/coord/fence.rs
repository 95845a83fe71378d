//! Resource-side fencing: a write carrying a stale token is rejected atomically with the
//! write — in memory and in PostgreSQL (the stale writer's whole transaction rolls back).

use std::time::Duration;

use lifeboat_coord::{
    Error, Fence, FencingToken, LeaderConfig, LeaderElection, MemoryFence, PostgresFence,
};
use tokio_postgres::NoTls;

fn pg_url() -> Option<String> {
    match std::env::var("LIFEBOAT_TEST_PG") {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("LIFEBOAT_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("LIFEBOAT_REQUIRE_PG=1 but LIFEBOAT_TEST_PG is not set")
        }
        _ => {
            eprintln!("skipping: set LIFEBOAT_TEST_PG to run the PostgreSQL fence test");
            None
        }
    }
}

fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos()
    )
}

#[tokio::test]
async fn memory_fence_rejects_stale_tokens_without_writing() {
    let fence = MemoryFence::new(Vec::<&str>::new());
    fence
        .write(FencingToken(2), |v| v.push("t2"))
        .expect("first write");
    fence
        .write(FencingToken(2), |v| v.push("t2 again"))
        .expect("same term writes again");
    let err = fence
        .write(FencingToken(1), |v| v.push("stale"))
        .expect_err("stale write accepted");
    assert!(matches!(
        err,
        Error::Fenced {
            seen: FencingToken(2),
            presented: FencingToken(1)
        }
    ));
    assert!(err.is_not_leader() && !err.is_retryable());
    fence
        .write(FencingToken(3), |v| v.push("t3"))
        .expect("newer term");
    assert_eq!(fence.read(|v| v.clone()), ["t2", "t2 again", "t3"]);
    assert!(fence.admit(FencingToken(2)).await.is_err());
    assert_eq!(
        fence.highest().await.expect("highest"),
        Some(FencingToken(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fence_rolls_back_the_stale_writers_transaction() {
    let Some(url) = pg_url() else { return };
    // Real tokens from a real election: the old leader becomes a zombie writer.
    let ns = unique("fence");
    let cfg = |node: &str| {
        LeaderConfig::postgres(url.clone())
            .namespace(ns.clone())
            .node_id(node)
            .lease_duration(Duration::from_secs(4))
            .renew_interval(Duration::from_secs(1))
            .renew_deadline(Duration::from_secs(2))
            .safety_margin(Duration::from_millis(500))
    };
    let old_leader = LeaderElection::new_without_env(cfg("old"))
        .await
        .expect("election");
    let new_leader = LeaderElection::new_without_env(cfg("new"))
        .await
        .expect("election");
    let old = old_leader
        .acquire_leadership()
        .await
        .expect("old leads")
        .fencing_token();
    old_leader.resign().await.expect("resign");
    let new = new_leader
        .acquire_leadership()
        .await
        .expect("new leads")
        .fencing_token();
    assert!(new > old);

    let (mut a, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect a");
    tokio::spawn(conn);
    let (mut b, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect b");
    tokio::spawn(conn);
    PostgresFence::create_schema(&a).await.expect("schema");
    let table = unique("guarded");
    a.batch_execute(&format!(
        "CREATE TABLE {table} (writer text NOT NULL, token bigint NOT NULL)"
    ))
    .await
    .expect("create table");
    let fence = PostgresFence::new(unique("resource"));
    let insert = format!("INSERT INTO {table} (writer, token) VALUES ($1, $2)");

    // The old leader starts a transaction, writes, checks the fence (locking its row)...
    let ta = a.transaction().await.expect("begin a");
    ta.execute(&insert, &[&"old-1", &(old.0 as i64)])
        .await
        .expect("write");
    fence
        .guarded(&ta, old)
        .await
        .expect("first writer with the old token passes");
    // ...while the new leader's guarded write waits on that row lock until A commits.
    let new_writer = {
        let fence = fence.clone();
        let insert = insert.clone();
        tokio::spawn(async move {
            let tb = b.transaction().await.expect("begin b");
            tb.execute(&insert, &[&"new-1", &(new.0 as i64)])
                .await
                .expect("write");
            fence.guarded(&tb, new).await.expect("new token passes");
            tb.commit().await.expect("commit b");
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !new_writer.is_finished(),
        "fence row was not locked by the open transaction"
    );
    ta.commit().await.expect("commit a");
    new_writer.await.expect("new writer");

    // Now the zombie writes again with its old token: rejected, and its insert rolls back.
    let ta = a.transaction().await.expect("begin a");
    ta.execute(&insert, &[&"old-2 (must vanish)", &(old.0 as i64)])
        .await
        .expect("write");
    let err = fence
        .guarded(&ta, old)
        .await
        .expect_err("stale token accepted");
    match err {
        Error::Fenced { seen, presented } => assert_eq!((seen, presented), (new, old)),
        other => panic!("expected Fenced, got {other}"),
    }
    drop(ta); // rollback
    let rows: Vec<String> = a
        .query(&format!("SELECT writer FROM {table} ORDER BY writer"), &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["new-1", "old-1"]);

    // The Fence trait over its own connection agrees.
    let shared = PostgresFence::connect(&url, fence_name(&fence))
        .await
        .expect("connect");
    assert_eq!(shared.highest().await.expect("highest"), Some(new));
    assert!(matches!(shared.admit(old).await, Err(Error::Fenced { .. })));
    shared.admit(new).await.expect("current token admitted");
    a.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

fn fence_name(f: &PostgresFence) -> String {
    f.name().to_owned()
}
