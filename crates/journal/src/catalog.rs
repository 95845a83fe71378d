//! Worked example of a PITR state machine: a streaming platform's metadata catalog (topics,
//! consumer groups, ACLs, users, schemas). Used by the tests and the CLI.
//!
//! Apply semantics are deterministic (`BTreeMap`/`BTreeSet` only) and total: an operation on
//! a missing object (deleting an unknown topic, committing an offset for an unknown group), or
//! creating one that already exists, changes nothing but `noops`; it never panics.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pitr::state::{postcard_restore, postcard_snapshot, StateMachine};

/// One catalog change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogOp {
    /// A topic was created (no-op if it exists).
    TopicCreated {
        /// Topic name.
        name: String,
        /// Partition count.
        partitions: u32,
        /// Topic configuration.
        config: BTreeMap<String, String>,
    },
    /// A topic was deleted (no-op if missing; its groups' offsets are kept).
    TopicDeleted {
        /// Topic name.
        name: String,
    },
    /// One configuration key of a topic was set (`Some`) or removed (`None`).
    TopicConfigUpdated {
        /// Topic name (no-op if missing).
        name: String,
        /// Configuration key.
        key: String,
        /// New value, or `None` to remove the key.
        value: Option<String>,
    },
    /// A consumer group was created (no-op if it exists).
    ConsumerGroupCreated {
        /// Group id.
        group: String,
    },
    /// A group committed an offset (no-op if the group is missing; offsets may move back).
    ConsumerGroupOffsetCommitted {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Committed offset.
        offset: u64,
    },
    /// A consumer group was deleted with its offsets (no-op if missing).
    ConsumerGroupDeleted {
        /// Group id.
        group: String,
    },
    /// An ACL entry was added (no-op if present).
    AclCreated {
        /// Who.
        principal: String,
        /// On what.
        resource: String,
        /// May do what.
        operation: String,
    },
    /// An ACL entry was removed (no-op if absent).
    AclDeleted {
        /// Who.
        principal: String,
        /// On what.
        resource: String,
        /// May do what.
        operation: String,
    },
    /// A user was created (no-op if present).
    UserCreated {
        /// User name.
        name: String,
    },
    /// A user was deleted (no-op if missing).
    UserDeleted {
        /// User name.
        name: String,
    },
    /// A schema version was registered; versions are immutable (re-registering is a no-op).
    SchemaRegistered {
        /// Subject.
        subject: String,
        /// Version number.
        version: u32,
        /// Schema text.
        definition: String,
    },
    /// An application checkpoint marker (counted, last label kept).
    Checkpoint {
        /// Label.
        label: String,
    },
    /// Anything else: the last `data` per `kind` is kept.
    Custom {
        /// Kind of change.
        kind: String,
        /// Opaque data.
        data: Vec<u8>,
    },
}

/// A topic's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Partition count.
    pub partitions: u32,
    /// Configuration.
    pub config: BTreeMap<String, String>,
}

/// An ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// Who.
    pub principal: String,
    /// On what.
    pub resource: String,
    /// May do what.
    pub operation: String,
}

/// The catalog: the state recovered to a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Consumer groups: group → topic → partition → offset.
    pub groups: BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>,
    /// ACL entries.
    pub acls: BTreeSet<Acl>,
    /// User names.
    pub users: BTreeSet<String>,
    /// Schemas: subject → version → definition.
    pub schemas: BTreeMap<String, BTreeMap<u32, String>>,
    /// Checkpoints seen.
    pub checkpoints: u64,
    /// Label of the last checkpoint.
    pub last_checkpoint: Option<String>,
    /// Last custom data per kind.
    pub custom: BTreeMap<String, Vec<u8>>,
    /// Operations applied (no-ops included).
    pub applied: u64,
    /// Operations that changed nothing (missing or already existing object).
    pub noops: u64,
}

impl Catalog {
    /// Applies one operation; returns whether it changed anything besides the counters.
    pub fn apply_op(&mut self, op: &CatalogOp) -> bool {
        self.applied += 1;
        let changed = match op {
            CatalogOp::TopicCreated {
                name,
                partitions,
                config,
            } => {
                !self.topics.contains_key(name) && {
                    self.topics.insert(
                        name.clone(),
                        Topic {
                            partitions: *partitions,
                            config: config.clone(),
                        },
                    );
                    true
                }
            }
            CatalogOp::TopicDeleted { name } => self.topics.remove(name).is_some(),
            CatalogOp::TopicConfigUpdated { name, key, value } => match self.topics.get_mut(name) {
                None => false,
                Some(t) => match value {
                    Some(v) => t.config.insert(key.clone(), v.clone()).as_ref() != Some(v),
                    None => t.config.remove(key).is_some(),
                },
            },
            CatalogOp::ConsumerGroupCreated { group } => {
                !self.groups.contains_key(group) && {
                    self.groups.insert(group.clone(), BTreeMap::new());
                    true
                }
            }
            CatalogOp::ConsumerGroupOffsetCommitted {
                group,
                topic,
                partition,
                offset,
            } => match self.groups.get_mut(group) {
                None => false,
                Some(g) => {
                    // get_mut first: no key clone on the hot path (replay speed).
                    match g.get_mut(topic) {
                        Some(parts) => parts.insert(*partition, *offset),
                        None => g
                            .entry(topic.clone())
                            .or_default()
                            .insert(*partition, *offset),
                    };
                    true
                }
            },
            CatalogOp::ConsumerGroupDeleted { group } => self.groups.remove(group).is_some(),
            CatalogOp::AclCreated {
                principal,
                resource,
                operation,
            } => self.acls.insert(Acl {
                principal: principal.clone(),
                resource: resource.clone(),
                operation: operation.clone(),
            }),
            CatalogOp::AclDeleted {
                principal,
                resource,
                operation,
            } => self.acls.remove(&Acl {
                principal: principal.clone(),
                resource: resource.clone(),
                operation: operation.clone(),
            }),
            CatalogOp::UserCreated { name } => self.users.insert(name.clone()),
            CatalogOp::UserDeleted { name } => self.users.remove(name),
            CatalogOp::SchemaRegistered {
                subject,
                version,
                definition,
            } => {
                let versions = self.schemas.entry(subject.clone()).or_default();
                !versions.contains_key(version) && {
                    versions.insert(*version, definition.clone());
                    true
                }
            }
            CatalogOp::Checkpoint { label } => {
                self.checkpoints += 1;
                self.last_checkpoint = Some(label.clone());
                true
            }
            CatalogOp::Custom { kind, data } => {
                self.custom.insert(kind.clone(), data.clone());
                true
            }
        };
        if !changed {
            self.noops += 1;
        }
        changed
    }
}

impl StateMachine for Catalog {
    type Op = CatalogOp;

    fn apply(&mut self, op: &CatalogOp) {
        self.apply_op(op);
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard_snapshot(self)
    }

    fn restore(bytes: &[u8]) -> Result<Self, String> {
        postcard_restore(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_objects_are_counted_noops() {
        let mut c = Catalog::default();
        assert!(!c.apply_op(&CatalogOp::TopicDeleted { name: "t".into() }));
        assert!(!c.apply_op(&CatalogOp::ConsumerGroupOffsetCommitted {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset: 5,
        }));
        assert!(c.apply_op(&CatalogOp::TopicCreated {
            name: "t".into(),
            partitions: 3,
            config: BTreeMap::new(),
        }));
        assert!(!c.apply_op(&CatalogOp::TopicCreated {
            name: "t".into(),
            partitions: 9,
            config: BTreeMap::new(),
        }));
        assert_eq!(c.topics["t"].partitions, 3);
        assert_eq!((c.applied, c.noops), (4, 3));
        let back = Catalog::restore(&c.snapshot()).unwrap();
        assert_eq!(back, c);
    }
}
