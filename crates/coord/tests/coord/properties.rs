//! Property tests against the in-memory reference model: a simulated store clock (the "true"
//! time), nodes whose local clocks drift within a bound, random request latency, and random
//! interleavings of acquire / renew / resign / fenced writes, including zombies acting on
//! old terms.
//!
//! Properties (research study §12.4): P1 at most one holder per token; P2 tokens strictly
//! increase; P3 validity windows (grant → local deadline) of different terms never overlap
//! while drift < margin; P4 a stale token is always rejected by the fence, atomically;
//! P17 a resign with a stale token never affects another term.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::executor::block_on;
use lifeboat_coord::{Backend, FencingToken, ManualClock, MemoryFence, MemoryStore, NodeId};
use proptest::prelude::*;

const NS: &str = "prop";
const LEASE_MS: f64 = 10_000.0;
const MARGIN_MS: f64 = 1_500.0;
/// Maximum clock-rate error: a local clock runs at a rate in [1 − ρ, 1 + ρ]. The holder's
/// window is (lease − margin) / (1 − ρ) of true time at most, which must stay below the
/// lease: (10 − 1.5) / 0.9 = 9.44 s < 10 s.
const MAX_DRIFT: f64 = 0.10;
const NODES: usize = 4;

#[derive(Clone, Debug)]
enum Action {
    Acquire,
    Renew,
    Resign,
    /// Renew or resign with a token from an older term of this node, or another node's.
    ZombieRenew {
        back: u64,
    },
    ZombieResign {
        back: u64,
    },
    /// A write through the fence with the node's latest token, whether valid or not.
    Write,
}

#[derive(Clone, Debug)]
struct Op {
    node: usize,
    action: Action,
    /// True time that passes before the op is sent.
    wait_ms: u64,
    /// Request latency: the store handles the call this long after it was sent.
    latency_ms: u64,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Acquire),
        4 => Just(Action::Renew),
        1 => Just(Action::Resign),
        1 => (1u64..4).prop_map(|back| Action::ZombieRenew { back }),
        1 => (0u64..4).prop_map(|back| Action::ZombieResign { back }),
        3 => Just(Action::Write),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    (0..NODES, action(), 0u64..4_000, 0u64..400).prop_map(|(node, action, wait_ms, latency_ms)| {
        Op {
            node,
            action,
            wait_ms,
            latency_ms,
        }
    })
}

/// One node's local clock: `local = offset + rate × true`.
#[derive(Clone, Copy, Debug)]
struct LocalClock {
    offset: f64,
    rate: f64,
}

impl LocalClock {
    fn local(&self, true_ms: f64) -> f64 {
        self.offset + self.rate * true_ms
    }
    fn true_time_of(&self, local_ms: f64) -> f64 {
        (local_ms - self.offset) / self.rate
    }
}

/// A node's belief about its current term.
#[derive(Clone, Copy, Debug)]
struct Term {
    token: FencingToken,
    /// Local deadline: last successful (renew or acquire) send time + lease − margin.
    local_deadline: f64,
}

/// The window during which a term's holder believed itself leader, in true time.
#[derive(Clone, Copy, Debug)]
struct Window {
    node: usize,
    start: f64,
    end: f64,
}

struct Sim {
    clock: ManualClock,
    store: MemoryStore,
    clocks: Vec<LocalClock>,
    terms: Vec<Option<Term>>,
    history: Vec<Vec<FencingToken>>,
    windows: BTreeMap<FencingToken, Window>,
    fence: MemoryFence<Vec<FencingToken>>,
    max_accepted: Option<FencingToken>,
}

impl Sim {
    fn now(&self) -> f64 {
        self.clock.now_ms()
    }

    fn valid(&self, node: usize, true_ms: f64) -> Option<Term> {
        let local = self.clocks[node].local(true_ms);
        self.terms[node].filter(|t| local < t.local_deadline)
    }

    /// Ends `node`'s belief at true time `at` (resign, rejection).
    fn end_term(&mut self, node: usize, at: f64) {
        if let Some(t) = self.terms[node].take() {
            let w = self
                .windows
                .get_mut(&t.token)
                .expect("window of a held term");
            w.end = w.end.min(at);
        }
    }

    fn step(&mut self, op: &Op) {
        self.clock.advance(Duration::from_millis(op.wait_ms));
        let node = op.node;
        let id = NodeId(format!("n{node}"));
        let lc = self.clocks[node];
        let send_true = self.now();
        let send_local = lc.local(send_true);
        // A node whose local deadline passed knows it is no longer leader.
        if self.terms[node].is_some() && self.valid(node, send_true).is_none() {
            self.terms[node] = None;
        }
        self.clock.advance(Duration::from_millis(op.latency_ms));
        let lease = Duration::from_millis(LEASE_MS as u64);
        match &op.action {
            Action::Acquire => {
                if self.terms[node].is_some() {
                    return;
                }
                let grant = block_on(self.store.try_acquire(NS, &id, lease)).expect("memory");
                if let Some(g) = grant {
                    // P2: strictly increasing across all grants.
                    if let Some((&last, _)) = self.windows.iter().next_back() {
                        assert!(g.token > last, "token {} after {}", g.token, last);
                    }
                    // P1: a token is granted once.
                    assert!(
                        !self.windows.contains_key(&g.token),
                        "token {} twice",
                        g.token
                    );
                    let deadline = send_local + LEASE_MS - MARGIN_MS;
                    self.terms[node] = Some(Term {
                        token: g.token,
                        local_deadline: deadline,
                    });
                    self.history[node].push(g.token);
                    // The holder learns of the grant when the answer arrives; the store
                    // granted at `now`. Count the window from the grant, conservatively.
                    self.windows.insert(
                        g.token,
                        Window {
                            node,
                            start: self.now(),
                            end: lc.true_time_of(deadline),
                        },
                    );
                }
            }
            Action::Renew => {
                let Some(term) = self.terms[node] else { return };
                match block_on(self.store.renew(NS, &id, term.token, lease)) {
                    Ok(_) => {
                        let deadline = send_local + LEASE_MS - MARGIN_MS;
                        let t = self.terms[node].as_mut().expect("held");
                        t.local_deadline = t.local_deadline.max(deadline);
                        let w = self.windows.get_mut(&term.token).expect("window");
                        w.end = w.end.max(lc.true_time_of(t.local_deadline));
                    }
                    Err(e) => {
                        assert!(e.is_not_leader(), "{e}");
                        let at = self.now();
                        self.end_term(node, at);
                    }
                }
            }
            Action::Resign => {
                let Some(term) = self.terms[node] else { return };
                // The holder stops acting before it sends the release.
                self.end_term(node, send_true);
                let before = block_on(self.store.current(NS)).expect("memory");
                let released = block_on(self.store.resign(NS, &id, term.token)).expect("memory");
                let after = block_on(self.store.current(NS)).expect("memory");
                match before {
                    Some(b) if b.node_id == id && b.token == term.token => {
                        assert!(released && after.is_none())
                    }
                    // P17: not our term (any more): nothing changes.
                    other => {
                        assert!(!released);
                        assert_eq!(
                            other.map(|i| (i.node_id, i.token)),
                            after.map(|i| (i.node_id, i.token))
                        );
                    }
                }
            }
            Action::ZombieRenew { back } | Action::ZombieResign { back } => {
                let hist = &self.history[node];
                let Some(&old) = hist.len().checked_sub(1 + *back as usize).map(|i| &hist[i])
                else {
                    return;
                };
                let before = block_on(self.store.current(NS)).expect("memory");
                let current_is_old = before
                    .as_ref()
                    .is_some_and(|b| b.node_id == id && b.token == old);
                if current_is_old {
                    return; // not a zombie call after all
                }
                if matches!(op.action, Action::ZombieRenew { .. }) {
                    let e = block_on(self.store.renew(NS, &id, old, lease))
                        .expect_err("renew of an old term succeeded");
                    assert!(e.is_not_leader());
                } else {
                    assert!(!block_on(self.store.resign(NS, &id, old)).expect("memory"));
                }
                let after = block_on(self.store.current(NS)).expect("memory");
                // P17: the current term is untouched (expiry aside: same clock instant).
                assert_eq!(
                    before.map(|i| (i.node_id, i.token)),
                    after.map(|i| (i.node_id, i.token))
                );
            }
            Action::Write => {
                // Zombies included: the node writes with its latest token whether or not it
                // is still valid; the fence must be the final arbiter.
                let Some(&token) = self.history[node].last() else {
                    return;
                };
                let result = self.fence.write(token, |log| log.push(token));
                let stale = self.max_accepted.is_some_and(|m| token < m);
                match result {
                    Ok(()) => {
                        assert!(!stale, "stale token {token} accepted");
                        self.max_accepted = Some(token);
                    }
                    Err(lifeboat_coord::Error::Fenced { seen, presented }) => {
                        assert!(stale, "fresh token {token} rejected");
                        assert_eq!((Some(seen), presented), (self.max_accepted, token));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
    }

    fn check_windows(&self) {
        // P3: windows of different terms, in grant order, never overlap.
        let windows: Vec<(FencingToken, Window)> =
            self.windows.iter().map(|(t, w)| (*t, *w)).collect();
        for pair in windows.windows(2) {
            let ((ta, a), (tb, b)) = (pair[0], pair[1]);
            assert!(
                a.end <= b.start,
                "term {ta} (n{}) believed valid until {:.1} ms but term {tb} (n{}) was granted \
                 at {:.1} ms",
                a.node,
                a.end,
                b.node,
                b.start
            );
        }
        // P4: the fenced log only ever saw non-decreasing tokens (atomic check + write).
        self.fence.read(|log| {
            assert!(
                log.windows(2).all(|w| w[0] <= w[1]),
                "fenced log out of order: {log:?}"
            )
        });
    }
}

trait NowMs {
    fn now_ms(&self) -> f64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> f64 {
        use lifeboat_coord::Clock;
        self.boot().as_secs_f64() * 1000.0
    }
}

fn clocks() -> impl Strategy<Value = Vec<LocalClock>> {
    proptest::collection::vec(
        (0.0f64..1e6, -MAX_DRIFT..MAX_DRIFT).prop_map(|(offset, d)| LocalClock {
            offset,
            rate: 1.0 + d,
        }),
        NODES,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn election_model_properties(clocks in clocks(), ops in proptest::collection::vec(op(), 1..250)) {
        let clock = ManualClock::new();
        let mut sim = Sim {
            store: MemoryStore::new(Arc::new(clock.clone())),
            clock,
            clocks,
            terms: vec![None; NODES],
            history: vec![Vec::new(); NODES],
            windows: BTreeMap::new(),
            fence: MemoryFence::new(Vec::new()),
            max_accepted: None,
        };
        for op in &ops {
            sim.step(op);
        }
        sim.check_windows();
    }
}

/// The bound matters: with drift beyond margin / lease, a slow local clock keeps a holder
/// acting after the store expired its lease, and the window check catches it. This shows
/// the property test can fail.
#[test]
fn drift_beyond_the_margin_is_detected() {
    let clock = ManualClock::new();
    let mut sim = Sim {
        store: MemoryStore::new(Arc::new(clock.clone())),
        clock,
        // n0's clock runs at 0.8: its 8.5 s local window lasts 10.6 s of true time.
        clocks: vec![
            LocalClock {
                offset: 0.0,
                rate: 0.8,
            },
            LocalClock {
                offset: 0.0,
                rate: 1.0,
            },
        ],
        terms: vec![None; 2],
        history: vec![Vec::new(); 2],
        windows: BTreeMap::new(),
        fence: MemoryFence::new(Vec::new()),
        max_accepted: None,
    };
    let ops = [
        Op {
            node: 0,
            action: Action::Acquire,
            wait_ms: 0,
            latency_ms: 0,
        },
        Op {
            node: 1,
            action: Action::Acquire,
            wait_ms: 10_001,
            latency_ms: 0,
        },
    ];
    for op in &ops {
        sim.step(op);
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.check_windows()));
    assert!(caught.is_err(), "overlapping windows were not detected");
}
