//! Shard placement plans over synthetic and XML topologies (golden plans and
//! invariants), the XML round trip of this machine, and the per-shard buffer pool.

use std::{collections::BTreeSet, path::PathBuf};

use shardline::numa::{
    Binding, BufferPool, NumaError, Placement, Plan, PlanOptions, ShardPlace, Topology,
};

fn synthetic(spec: &str) -> Topology {
    Topology::from_synthetic(spec).expect("valid synthetic topology")
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn plan(topology: &Topology, shards: usize, placement: Placement) -> Plan {
    Plan::new(
        topology,
        &PlanOptions {
            placement,
            ..PlanOptions::new(shards)
        },
    )
    .expect("plan fits")
}

/// (pu, core, node, package) per shard, shard order.
fn places(plan: &Plan) -> Vec<(usize, usize, usize, usize)> {
    plan.shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(s.shard, i, "shards are listed in order");
            (s.pu, s.core, s.node, s.package)
        })
        .collect()
}

fn count_by(plan: &Plan, key: impl Fn(&ShardPlace) -> usize) -> Vec<usize> {
    let mut counts = Vec::new();
    for s in &plan.shards {
        let k = key(s);
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += 1;
    }
    counts
}

/// Invariants every plan without oversubscription must hold.
fn check_invariants(topology: &Topology, plan: &Plan, allowed: &BTreeSet<usize>) {
    let pus: BTreeSet<usize> = plan.shards.iter().map(|s| s.pu).collect();
    assert_eq!(pus.len(), plan.shards.len(), "one shard per PU: {plan:?}");
    assert!(
        pus.is_subset(allowed),
        "plan leaves the allowed set {allowed:?}: {plan:?}"
    );
    // Distinct physical cores before any sibling: while shards fit on distinct allowed
    // cores, no core repeats; past that, every allowed core is used.
    let cores: BTreeSet<usize> = plan.shards.iter().map(|s| s.core).collect();
    let allowed_cores = allowed_core_count(topology, allowed);
    assert_eq!(
        cores.len(),
        plan.shards.len().min(allowed_cores),
        "cores repeat before every core has a shard: {plan:?}"
    );
    // Siblings come after all first PUs: once a core repeats, no new core appears.
    let mut seen = BTreeSet::new();
    let mut repeated = false;
    for s in &plan.shards {
        if !seen.insert(s.core) {
            repeated = true;
        } else {
            assert!(!repeated, "a new core after a sibling: {plan:?}");
        }
    }
}

/// Allowed physical cores, found through single-shard plans pinned to each PU.
fn allowed_core_count(topology: &Topology, allowed: &BTreeSet<usize>) -> usize {
    let cores: BTreeSet<usize> = allowed
        .iter()
        .map(|&pu| {
            Plan::new(
                topology,
                &PlanOptions {
                    placement: Placement::Cpus(vec![pu]),
                    allowed: Some(allowed.iter().copied().collect()),
                    ..PlanOptions::new(1)
                },
            )
            .expect("a listed allowed PU is placeable")
            .shards[0]
                .core
        })
        .collect();
    cores.len()
}

/// Compact keeps each node's shards in one contiguous run of shard indexes and fills
/// nodes in order.
fn check_contiguous(plan: &Plan) {
    let mut finished = BTreeSet::new();
    let mut current = None;
    for s in &plan.shards {
        if current != Some(s.node) {
            if let Some(prev) = current {
                finished.insert(prev);
            }
            assert!(
                !finished.contains(&s.node),
                "node {} comes back after another node: {plan:?}",
                s.node
            );
            current = Some(s.node);
        }
    }
}

/// Spread keeps the shard counts of nodes with room within one of each other.
fn check_balanced(plan: &Plan, node_cores: &[usize]) {
    let counts = count_by(plan, |s| s.node);
    for (a, &ca) in counts.iter().enumerate() {
        for (b, &cb) in counts.iter().enumerate() {
            if ca > cb + 1 {
                assert!(
                    cb >= node_cores[b],
                    "node {a} has {ca} shards, node {b} only {cb} with room: {plan:?}"
                );
            }
        }
    }
}

#[test]
fn this_machine_shape() {
    let topology = synthetic("pack:1 numa:1 core:2 pu:1");
    assert_eq!((topology.package_count(), topology.node_count()), (1, 1));
    assert_eq!((topology.core_count(), topology.pus()), (2, vec![0, 1]));
    assert!(!topology.is_real());

    let two = plan(&topology, 2, Placement::Compact);
    assert_eq!(places(&two), vec![(0, 0, 0, 0), (1, 1, 0, 0)]);
    assert_eq!(places(&plan(&topology, 2, Placement::Spread)), places(&two));
    assert_eq!(two.acceptor, None);
    assert_eq!(two.nodes.len(), 1);
    assert_eq!(two.nodes[0].shards, vec![0, 1]);
    assert_eq!(two.nodes[0].memory_bytes, 1 << 30);

    // One shard leaves a spare core for the acceptor; two do not.
    let with_acceptor = |shards| {
        Plan::new(
            &topology,
            &PlanOptions {
                acceptor: true,
                ..PlanOptions::new(shards)
            },
        )
        .expect("fits")
    };
    let one = with_acceptor(1);
    let acceptor = one.acceptor.expect("asked for");
    assert_eq!(
        (acceptor.pu, acceptor.core, acceptor.shared_with_shard),
        (1, 1, None)
    );
    let full = with_acceptor(2);
    let acceptor = full.acceptor.expect("asked for");
    assert_eq!((acceptor.pu, acceptor.shared_with_shard), (0, Some(0)));

    assert_eq!(
        full.table(),
        "plan: 2 shards on synthetic \"pack:1 numa:1 core:2 pu:1\", placement compact\n\
         shard    pu  core  node  package\n\
        \x20   0     0     0     0        0\n\
        \x20   1     1     1     0        0\n\
        \x20node     memory  shards\n\
        \x20   0    1.0 GiB  0-1\n\
         acceptor: pu 0 (core 0, node 0, package 0): no spare PU, shares shard 0's PU\n"
    );
}

#[test]
fn more_shards_than_pus_is_an_error_unless_oversubscribed() {
    let topology = synthetic("pack:1 numa:1 core:2 pu:1");
    let err = Plan::new(&topology, &PlanOptions::new(3)).expect_err("3 shards on 2 PUs");
    assert!(
        matches!(
            err,
            NumaError::TooManyShards {
                shards: 3,
                available: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("run 2 shards or fewer"), "{message}");
    assert!(message.contains("oversubscription"), "{message}");

    let over = Plan::new(
        &topology,
        &PlanOptions {
            oversubscribe: true,
            ..PlanOptions::new(5)
        },
    )
    .expect("oversubscription was asked for");
    assert_eq!(over.pus(), vec![0, 1, 0, 1, 0]);
    assert!(over.table().contains("oversubscribed: shards 2-4"));

    assert!(matches!(
        Plan::new(&topology, &PlanOptions::new(0)),
        Err(NumaError::NoShards)
    ));
}

#[test]
fn two_packages_of_eight_cores_with_smt() {
    let topology = synthetic("pack:2 numa:1 core:8 pu:2");
    let sixteen = plan(&topology, 16, Placement::Compact);
    // The must-show: 16 shards, 8 per package, each on its own physical core.
    assert_eq!(sixteen.shards.len(), 16);
    assert_eq!(count_by(&sixteen, |s| s.package), vec![8, 8]);
    assert_eq!(
        sixteen.pus(),
        (0..16).map(|i| i * 2).collect::<Vec<_>>(),
        "first PU of each core"
    );
    assert_eq!(
        sixteen.shards.iter().map(|s| s.core).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    let all: BTreeSet<usize> = topology.pus().into_iter().collect();
    check_invariants(&topology, &sixteen, &all);
    check_contiguous(&sixteen);

    let golden = "plan: 16 shards on synthetic \"pack:2 numa:1 core:8 pu:2\", placement compact\n\
                  shard    pu  core  node  package\n\
                 \x20   0     0     0     0        0\n\
                 \x20   1     2     1     0        0\n\
                 \x20   2     4     2     0        0\n\
                 \x20   3     6     3     0        0\n\
                 \x20   4     8     4     0        0\n\
                 \x20   5    10     5     0        0\n\
                 \x20   6    12     6     0        0\n\
                 \x20   7    14     7     0        0\n\
                 \x20   8    16     8     1        1\n\
                 \x20   9    18     9     1        1\n\
                 \x20  10    20    10     1        1\n\
                 \x20  11    22    11     1        1\n\
                 \x20  12    24    12     1        1\n\
                 \x20  13    26    13     1        1\n\
                 \x20  14    28    14     1        1\n\
                 \x20  15    30    15     1        1\n\
                 \x20node     memory  shards\n\
                 \x20   0    1.0 GiB  0-7\n\
                 \x20   1    1.0 GiB  8-15\n\
                  acceptor: none\n";
    assert_eq!(sixteen.table(), golden);

    // All 32 PUs: siblings only after every core has a shard, in the same order.
    let full = plan(&topology, 32, Placement::Compact);
    check_invariants(&topology, &full, &all);
    assert_eq!(
        full.pus()[16..],
        (0..16).map(|i| i * 2 + 1).collect::<Vec<_>>()[..]
    );

    // Spread alternates nodes (here also packages).
    let spread = plan(&topology, 4, Placement::Spread);
    assert_eq!(
        places(&spread),
        vec![(0, 0, 0, 0), (16, 8, 1, 1), (2, 1, 0, 0), (18, 9, 1, 1)]
    );

    // The acceptor takes the sibling beside shard 0 when every core has a shard.
    let acceptor = Plan::new(
        &topology,
        &PlanOptions {
            acceptor: true,
            ..PlanOptions::new(16)
        },
    )
    .expect("fits")
    .acceptor
    .expect("asked for");
    assert_eq!(
        (
            acceptor.pu,
            acceptor.core,
            acceptor.node,
            acceptor.shared_with_shard
        ),
        (1, 0, 0, None)
    );
}

#[test]
fn four_nodes_in_two_packages() {
    let topology = synthetic("pack:2 numa:2 core:8 pu:2");
    assert_eq!((topology.package_count(), topology.node_count()), (2, 4));
    let all: BTreeSet<usize> = topology.pus().into_iter().collect();

    // Spread deals nodes alternating packages: node 0 (pkg 0), node 2 (pkg 1), 1, 3.
    let four = plan(&topology, 4, Placement::Spread);
    assert_eq!(
        places(&four),
        vec![(0, 0, 0, 0), (32, 16, 2, 1), (16, 8, 1, 0), (48, 24, 3, 1)]
    );
    let two = plan(&topology, 2, Placement::Spread);
    assert_eq!(count_by(&two, |s| s.package), vec![1, 1]);

    for shards in [1, 3, 4, 7, 16, 31, 32, 33, 64] {
        let spread = plan(&topology, shards, Placement::Spread);
        check_invariants(&topology, &spread, &all);
        check_balanced(&spread, &[8, 8, 8, 8]);
        let compact = plan(&topology, shards, Placement::Compact);
        check_invariants(&topology, &compact, &all);
        if shards <= 32 {
            check_contiguous(&compact);
        }
    }

    let compact = plan(&topology, 16, Placement::Compact);
    assert_eq!(count_by(&compact, |s| s.node), vec![8, 8]);
    assert_eq!(compact.nodes.len(), 4);
    assert_eq!(compact.nodes[0].shards, (0..8).collect::<Vec<_>>());
    assert_eq!(compact.nodes[1].shards, (8..16).collect::<Vec<_>>());
    assert!(compact.nodes[2].shards.is_empty());
    assert_eq!(
        count_by(&plan(&topology, 16, Placement::Spread), |s| s.node),
        vec![4; 4]
    );
}

#[test]
fn unequal_nodes_from_xml() {
    let topology = Topology::from_xml_file(&fixture("unequal-nodes.xml")).expect("fixture loads");
    assert!(!topology.is_real());
    assert_eq!((topology.node_count(), topology.core_count()), (2, 8));
    let all: BTreeSet<usize> = topology.pus().into_iter().collect();
    assert_eq!(all, (0..16).collect());

    // Spread: round-robin while node 1 has cores, then node 0 alone.
    let spread = plan(&topology, 8, Placement::Spread);
    assert_eq!(spread.pus(), vec![0, 12, 2, 14, 4, 6, 8, 10]);
    assert_eq!(count_by(&spread, |s| s.node), vec![6, 2]);
    check_balanced(&spread, &[6, 2]);
    check_invariants(&topology, &spread, &all);

    let four = plan(&topology, 4, Placement::Spread);
    assert_eq!(count_by(&four, |s| s.node), vec![2, 2]);

    // Compact: node 0's six cores, then node 1's two, then siblings.
    let compact = plan(&topology, 12, Placement::Compact);
    assert_eq!(compact.pus(), vec![0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7]);
    check_invariants(&topology, &compact, &all);
    assert_eq!(
        plan(&topology, 6, Placement::Compact)
            .shards
            .iter()
            .map(|s| s.node)
            .collect::<Vec<_>>(),
        vec![0; 6]
    );

    assert_eq!(
        compact
            .nodes
            .iter()
            .map(|n| n.memory_bytes)
            .collect::<Vec<_>>(),
        vec![48 << 30, 16 << 30]
    );
    let table = compact.table();
    assert!(table.contains("   48.0 GiB"), "{table}");
    assert!(table.contains("   16.0 GiB"), "{table}");
    assert!(compact.topology.starts_with("XML "), "{}", compact.topology);
}

#[test]
fn allowed_cpuset_excludes_pus() {
    let topology = synthetic("pack:2 numa:1 core:4 pu:2");
    // Core 0 fully, core 1 half, core 4 (package 1) fully: as taskset -c 0,1,3,8,9.
    let allowed = vec![0, 1, 3, 8, 9];
    let options = |shards, placement| PlanOptions {
        shards,
        placement,
        allowed: Some(allowed.clone()),
        oversubscribe: false,
        acceptor: true,
    };
    let set: BTreeSet<usize> = allowed.iter().copied().collect();
    for shards in 1..=5 {
        for placement in [Placement::Compact, Placement::Spread] {
            let p = Plan::new(&topology, &options(shards, placement)).expect("fits");
            check_invariants(&topology, &p, &set);
            let acceptor = p.acceptor.expect("asked for");
            assert!(
                set.contains(&acceptor.pu),
                "acceptor outside the cpuset: {p:?}"
            );
        }
    }
    let compact = Plan::new(&topology, &options(5, Placement::Compact)).expect("fits");
    assert_eq!(compact.pus(), vec![0, 3, 8, 1, 9]);
    let spread = Plan::new(&topology, &options(3, Placement::Spread)).expect("fits");
    assert_eq!(spread.pus(), vec![0, 8, 3]);
    // Three shards leave PU 1 (sibling of shard 0) and 9 (sibling of shard 1) spare.
    let acceptor = spread.acceptor.expect("asked for");
    assert_eq!((acceptor.pu, acceptor.shared_with_shard), (1, None));

    let err = Plan::new(&topology, &options(6, Placement::Compact)).expect_err("only 5 PUs");
    assert!(
        matches!(err, NumaError::TooManyShards { available: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0-1,3,8-9"), "{err}");

    let err = Plan::new(&topology, &options(2, Placement::Cpus(vec![0, 2])))
        .expect_err("PU 2 is outside the cpuset");
    assert!(
        matches!(err, NumaError::PuNotAllowed { pu: 2, .. }),
        "{err:?}"
    );

    let explicit =
        Plan::new(&topology, &options(3, Placement::Cpus(vec![9, 0, 3]))).expect("allowed");
    assert_eq!(
        places(&explicit),
        vec![(9, 4, 1, 1), (0, 0, 0, 0), (3, 1, 0, 0)]
    );
    assert_eq!(explicit.placement, "cpus=9,0,3");

    let err = Plan::new(
        &topology,
        &PlanOptions {
            allowed: Some(vec![0, 99]),
            ..PlanOptions::new(1)
        },
    )
    .expect_err("no PU 99");
    assert!(
        matches!(err, NumaError::UnknownPu { pu: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn explicit_cpus_duplicates_need_oversubscription() {
    let topology = synthetic("pack:1 numa:1 core:4 pu:1");
    let cpus = Placement::Cpus(vec![1, 1]);
    let strict = PlanOptions {
        placement: cpus.clone(),
        ..PlanOptions::new(2)
    };
    assert!(matches!(
        Plan::new(&topology, &strict),
        Err(NumaError::DuplicatePu { pu: 1 })
    ));
    let over = PlanOptions {
        oversubscribe: true,
        ..strict
    };
    assert_eq!(
        Plan::new(&topology, &over).expect("asked for").pus(),
        vec![1, 1]
    );

    let short = PlanOptions {
        placement: Placement::Cpus(vec![3, 2]),
        ..PlanOptions::new(3)
    };
    assert!(matches!(
        Plan::new(&topology, &short),
        Err(NumaError::TooManyShards { available: 2, .. })
    ));
}

#[test]
fn json_has_the_documented_shape() {
    let topology = synthetic("pack:2 numa:1 core:8 pu:2");
    let p = Plan::new(
        &topology,
        &PlanOptions {
            acceptor: true,
            ..PlanOptions::new(2)
        },
    )
    .expect("fits");
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).expect("valid JSON");
    assert_eq!(
        json["shards"][0],
        serde_json::json!({"shard": 0, "pu": 0, "core": 0, "node": 0, "package": 0})
    );
    assert_eq!(
        json["shards"][1],
        serde_json::json!({"shard": 1, "pu": 2, "core": 1, "node": 0, "package": 0})
    );
    assert_eq!(
        json["acceptor"],
        serde_json::json!({"pu": 4, "core": 2, "node": 0, "package": 0, "shared_with_shard": null})
    );
    assert_eq!(json["placement"], "compact");
    assert_eq!(json["nodes"][1]["shards"], serde_json::json!([]));
}

#[test]
fn real_topology_survives_an_xml_round_trip() {
    let real = Topology::current().expect("this machine's topology");
    assert!(real.is_real());
    let allowed = real.allowed_pus();
    assert!(!allowed.is_empty());

    let path = std::env::temp_dir().join(format!("shardline-numa-{}.xml", std::process::id()));
    std::fs::write(&path, real.export_xml().expect("export")).expect("write temp file");
    let loaded = Topology::from_arg(path.to_str().expect("utf-8 temp path"));
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.expect("the export loads back");
    assert!(!loaded.is_real());
    assert_eq!(loaded.pus(), real.pus());
    assert_eq!(loaded.core_count(), real.core_count());
    assert_eq!(loaded.node_count(), real.node_count());

    for placement in [Placement::Compact, Placement::Spread] {
        let options = PlanOptions {
            placement,
            allowed: Some(allowed.clone()),
            acceptor: true,
            ..PlanOptions::new(allowed.len())
        };
        let a = Plan::new(&real, &options).expect("plan on this machine");
        let b = Plan::new(&loaded, &options).expect("plan on its export");
        assert_eq!(a.shards, b.shards);
        assert_eq!(a.acceptor, b.acceptor);
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.topology, "this machine");
    }
    // The default allowed set of a real topology is this thread's affinity.
    let default = Plan::new(&real, &PlanOptions::new(1)).expect("one shard fits");
    assert!(allowed.contains(&default.shards[0].pu));
}

#[test]
fn topology_arguments() {
    assert!(Topology::from_arg("pack:2 core:2 pu:1").is_ok());
    let xml = Topology::from_arg(fixture("unequal-nodes.xml").to_str().expect("utf-8"))
        .expect("existing file is XML");
    assert_eq!(xml.node_count(), 2);
    assert!(matches!(
        Topology::from_arg("no-such-machine.xml"),
        Err(NumaError::Xml { .. })
    ));
    assert!(matches!(
        Topology::from_arg("pack:two"),
        Err(NumaError::Synthetic { .. })
    ));
    assert!(Topology::from_arg_or_env(Some("pack:1 core:3 pu:1")).is_ok());
    let exported = synthetic("pack:2 numa:2 core:2 pu:2")
        .export_xml()
        .expect("export");
    let back = Topology::from_xml_str(&exported).expect("loads back");
    assert_eq!(
        (back.package_count(), back.node_count(), back.core_count()),
        (2, 4, 8)
    );
}

#[test]
fn pool_on_this_machine() {
    let topology = Topology::current().expect("this machine's topology");
    let mut pool = BufferPool::new(&topology, Some(0), 4096, 8).expect("pool");
    match pool.binding() {
        Binding::Bound { node } => assert_eq!(*node, 0),
        Binding::FirstTouch { reason } => assert!(!reason.is_empty(), "fallback says why"),
        Binding::Unbound { reason } => panic!("this machine is real: {reason}"),
    }
    assert_eq!(pool.region_len(), 4096 * 8);

    let taken: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
    assert_eq!(taken.len(), 8);
    assert_eq!(pool.exhausted_events(), 1, "the take that ended the loop");
    assert_eq!(pool.take(), None);
    assert_eq!(pool.exhausted_events(), 2);
    for (i, &id) in taken.iter().enumerate() {
        pool.buf_mut(id).fill(u8::try_from(i).expect("8 buffers"));
    }
    for &id in &taken {
        pool.give_back(id);
    }
    assert_eq!(pool.available(), 8);
    let again = pool.take().expect("recovered");
    assert_eq!(pool.buf(again).len(), 4096);

    let locality = pool.check_locality(&topology);
    assert_eq!(locality.pages, 8);
    assert_eq!(locality.off_node_pages, 0, "{locality:?}");
    if locality.unknown.is_none() {
        assert!(locality.is_on_node(), "{locality:?}");
    }
}
