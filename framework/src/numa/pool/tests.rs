//! Unit tests of the node-bound buffer pool.
use super::*;

fn synthetic() -> Topology {
    Topology::from_synthetic("pack:1 numa:2 core:2 pu:1").expect("valid synthetic topology")
}

#[test]
fn buffers_come_back_and_exhaustion_recovers() {
    let topology = synthetic();
    let mut pool = BufferPool::new(&topology, Some(1), 100, 3).expect("pool");
    assert!(matches!(pool.binding(), Binding::Unbound { .. }));
    assert_eq!(pool.region_len(), 300);
    assert_eq!(pool.base().as_ptr() as usize % page_size(), 0);
    let ids: Vec<BufId> = (0..3).map(|_| pool.take().expect("free buffer")).collect();
    assert_eq!(pool.available(), 0);
    assert_eq!(pool.take(), None);
    assert_eq!(pool.take(), None);
    assert_eq!(pool.exhausted_events(), 2);
    pool.give_back(ids[1]);
    assert_eq!(pool.available(), 1);
    assert_eq!(pool.take(), Some(ids[1]));
    for id in ids {
        pool.give_back(id);
    }
    assert_eq!(pool.available(), 3);
    assert_eq!(pool.exhausted_events(), 2);
}

#[test]
fn buffers_are_disjoint_and_writable() {
    let topology = synthetic();
    let mut pool = BufferPool::new(&topology, None, 10, 4).expect("pool");
    let a = pool.take().expect("free");
    let b = pool.take().expect("free");
    pool.buf_mut(a).fill(0xaa);
    pool.buf_mut(b).fill(0xbb);
    assert!(pool.buf(a).iter().all(|&x| x == 0xaa));
    assert!(pool.buf(b).iter().all(|&x| x == 0xbb));
    assert_eq!(pool.buf(a).len(), 10);
    let start = |id: BufId| pool.buf(id).as_ptr() as usize - pool.base().as_ptr() as usize;
    assert_eq!(start(a), a.index() * 10);
    assert_eq!(start(b), b.index() * 10);
}

#[test]
fn double_give_back_is_ignored() {
    let topology = synthetic();
    let mut pool = BufferPool::new(&topology, None, 64, 2).expect("pool");
    let id = pool.take().expect("free");
    pool.give_back(id);
    pool.give_back(id);
    pool.give_back(BufId::new(7));
    assert_eq!(pool.available(), 2);
    assert_ne!(pool.take(), pool.take());
}

#[test]
fn bad_sizes_and_nodes_are_errors() {
    let topology = synthetic();
    assert!(matches!(
        BufferPool::new(&topology, None, 0, 1),
        Err(NumaError::InvalidPool { .. })
    ));
    assert!(matches!(
        BufferPool::new(&topology, None, 1, 0),
        Err(NumaError::InvalidPool { .. })
    ));
    assert!(matches!(
        BufferPool::new(&topology, None, 1, MAX_BUFFERS + 1),
        Err(NumaError::InvalidPool { .. })
    ));
    assert!(matches!(
        BufferPool::new(&topology, None, usize::MAX, 2),
        Err(NumaError::InvalidPool { .. })
    ));
    assert!(matches!(
        BufferPool::new(&topology, Some(2), 64, 1),
        Err(NumaError::UnknownNode {
            node: 2,
            nodes: 2,
            ..
        })
    ));
}

#[test]
fn bound_on_this_machine_and_pages_are_local() {
    let topology = Topology::current().expect("this machine's topology");
    let mut pool = BufferPool::new(&topology, Some(0), 2048, 64).expect("pool");
    match pool.binding() {
        Binding::Bound { node } => assert_eq!(*node, 0),
        Binding::FirstTouch { reason } => {
            assert!(!reason.is_empty(), "a fallback must say why")
        }
        Binding::Unbound { reason } => panic!("this machine is real, yet: {reason}"),
    }
    let id = pool.take().expect("free");
    pool.buf_mut(id).fill(1);
    let locality = pool.check_locality(&topology);
    assert_eq!(locality.pages, 2048 * 64 / page_size());
    match &locality.unknown {
        None => {
            assert_eq!(locality.off_node_pages, 0, "{locality:?}");
            assert_eq!(locality.nodes, vec![0]);
            assert!(locality.is_on_node());
        }
        Some(reason) => assert!(!reason.is_empty()),
    }
}

#[test]
fn locality_of_a_described_machine_is_unknown() {
    let topology = synthetic();
    let pool = BufferPool::new(&topology, Some(0), 4096, 2).expect("pool");
    let locality = pool.check_locality(&topology);
    assert_eq!(locality.off_node_pages, 0);
    assert!(locality.unknown.is_some());
    assert!(!locality.is_on_node());
}

#[test]
fn first_touch_without_a_node() {
    let topology = Topology::current().expect("this machine's topology");
    let pool = BufferPool::new(&topology, None, 4096, 4).expect("pool");
    assert!(matches!(pool.binding(), Binding::FirstTouch { .. }));
    let locality = pool.check_locality(&topology);
    assert_eq!(locality.node, None);
    assert_eq!(locality.off_node_pages, 0);
}
