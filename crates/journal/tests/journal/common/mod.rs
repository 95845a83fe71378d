//! Helpers shared by the PITR test binaries.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lifeboat_journal::catalog::{Catalog, CatalogOp};
use lifeboat_journal::PitrConfig;
use proptest::prelude::*;

/// A two-worker runtime, as the crate's other tests use.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A config under `root` with small segments and no background task.
pub fn config(root: &Path) -> PitrConfig {
    PitrConfig::builder()
        .wal_directory(root.join("wal"))
        .backup_directory(root.join("backups"))
        .wal_segment_size(4096)
        .no_background_backups()
        .backup_retention_count(100)
        .wal_retention(Duration::from_secs(7 * 86400))
        .build()
        .unwrap()
}

/// The reference model: folds ops from the initial state.
pub fn fold<'a>(ops: impl IntoIterator<Item = &'a CatalogOp>) -> Catalog {
    let mut c = Catalog::default();
    for op in ops {
        c.apply_op(op);
    }
    c
}

/// A deterministic op for index `i` (varied kinds, with creates and deletes that collide).
pub fn op(i: u64) -> CatalogOp {
    let n = format!("t{}", i % 7);
    match i % 9 {
        0 => CatalogOp::TopicCreated {
            name: n,
            partitions: (i % 5) as u32 + 1,
            config: BTreeMap::from([("retention.ms".into(), i.to_string())]),
        },
        1 => CatalogOp::TopicDeleted { name: n },
        2 => CatalogOp::TopicConfigUpdated {
            name: n,
            key: "k".into(),
            value: Some(i.to_string()),
        },
        3 => CatalogOp::ConsumerGroupCreated {
            group: format!("g{}", i % 3),
        },
        4 => CatalogOp::ConsumerGroupOffsetCommitted {
            group: format!("g{}", i % 3),
            topic: n,
            partition: (i % 4) as u32,
            offset: i,
        },
        5 => CatalogOp::UserCreated {
            name: format!("u{}", i % 4),
        },
        6 => CatalogOp::AclCreated {
            principal: format!("u{}", i % 4),
            resource: n,
            operation: "read".into(),
        },
        7 => CatalogOp::SchemaRegistered {
            subject: n,
            version: (i % 3) as u32,
            definition: format!("schema {i}"),
        },
        _ => CatalogOp::Custom {
            kind: "k".into(),
            data: i.to_le_bytes().to_vec(),
        },
    }
}

/// Random catalog operations over a small name space (so deletes and duplicates happen).
pub fn op_strategy() -> impl Strategy<Value = CatalogOp> {
    let name = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    prop_oneof![
        (name.clone(), 1u32..8).prop_map(|(name, partitions)| CatalogOp::TopicCreated {
            name,
            partitions,
            config: BTreeMap::from([("cleanup".to_string(), "delete".to_string())]),
        }),
        name.clone()
            .prop_map(|name| CatalogOp::TopicDeleted { name }),
        (name.clone(), proptest::option::of("[a-z]{1,4}")).prop_map(|(name, value)| {
            CatalogOp::TopicConfigUpdated {
                name,
                key: "k".into(),
                value,
            }
        }),
        name.clone()
            .prop_map(|group| CatalogOp::ConsumerGroupCreated { group }),
        (name.clone(), name.clone(), 0u32..3, any::<u64>()).prop_map(
            |(group, topic, partition, offset)| CatalogOp::ConsumerGroupOffsetCommitted {
                group,
                topic,
                partition,
                offset,
            }
        ),
        name.clone()
            .prop_map(|group| CatalogOp::ConsumerGroupDeleted { group }),
        (name.clone(), name.clone()).prop_map(|(principal, resource)| CatalogOp::AclCreated {
            principal,
            resource,
            operation: "write".into(),
        }),
        (name.clone(), name.clone()).prop_map(|(principal, resource)| CatalogOp::AclDeleted {
            principal,
            resource,
            operation: "write".into(),
        }),
        name.clone()
            .prop_map(|name| CatalogOp::UserCreated { name }),
        name.clone()
            .prop_map(|name| CatalogOp::UserDeleted { name }),
        (name.clone(), 0u32..3, "[a-z ]{0,20}").prop_map(|(subject, version, definition)| {
            CatalogOp::SchemaRegistered {
                subject,
                version,
                definition,
            }
        }),
        "[a-z]{0,6}".prop_map(|label| CatalogOp::Checkpoint { label }),
        (name, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(kind, data)| CatalogOp::Custom { kind, data }),
    ]
}
