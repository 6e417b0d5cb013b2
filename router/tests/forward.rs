//! The data plane end to end on loopback: choice, PROXY header, fallback, half-close, timeouts.
//!
//! Backends are tiny servers that read the PROXY header with the crate's decoder, answer
//! `NAME SOURCE DESTINATION\n`, echo everything until EOF, then send `END NAME\n` and close.
//! Clients bind distinct 127.0.0.x source addresses so the router sees distinct sources.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sirms_proto::proxy_v2::{ProxyHeader, read_header};
use sirms_router::{
    Backend, Cluster, ClusterNode, ForwardConfig, ForwardError, ForwardStats, Forwarder, Inbound, NodeId, NodeState,
    Reason, Rendezvous, RouteTable, Service, SessionEnd,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Bound for every wait in these tests; generous because the machine is shared.
const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid node name")
}

fn source(last_octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet))
}

/// Starts a backend named `name`; its tasks live as long as the returned set.
async fn spawn_backend(name: &'static str, tasks: &mut JoinSet<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tasks.spawn(async move {
        let mut sessions = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            sessions.spawn(serve_backend_session(name, stream));
        }
    });
    addr
}

async fn serve_backend_session(name: &'static str, mut stream: TcpStream) {
    let header = match tokio::time::timeout(WAIT, read_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        _ => return,
    };
    let greeting = match header {
        ProxyHeader::Tcp { source, destination } => format!("{name} {source} {destination}\n"),
        other => format!("{name} {other:?} -\n"),
    };
    if stream.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    // Reached only because the router propagated the client's half-close.
    let _ = stream.write_all(format!("END {name}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A port that refuses connections for as long as it is held: bound, never listening.
///
/// Binding and then releasing a port is not enough: a test running alongside may be
/// given the same ephemeral port for its own backend, which then answers.
struct DeadPort(TcpSocket);

impl DeadPort {
    fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        Self(socket)
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }
}

/// What the test router reports for each connection.
type Outcome = Result<ForwardStats, ForwardError>;

/// A router on loopback: choice by the cluster and table, forwarding to the mapped addresses.
struct TestRouter {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    failed_nodes: Arc<Mutex<Vec<NodeId>>>,
}

impl TestRouter {
    async fn start(
        cluster: Cluster,
        table: RouteTable,
        addrs: BTreeMap<NodeId, SocketAddr>,
        config: ForwardConfig,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
        let addr = listener.local_addr().expect("router addr");
        let (report, outcomes) = mpsc::unbounded_channel();
        let failed_nodes = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new((cluster, table, addrs, Forwarder::new(config)));
        let failures = Arc::clone(&failed_nodes);
        tasks.spawn(async move {
            let mut sessions = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let inbound = Inbound::from_stream(stream).expect("socket addresses");
                let shared = Arc::clone(&shared);
                let failures = Arc::clone(&failures);
                let report = report.clone();
                sessions.spawn(async move {
                    let (cluster, table, addrs, forwarder) = &*shared;
                    let choice = cluster.choose(inbound.peer.ip(), table);
                    let backends: Vec<Backend> = choice
                        .candidates
                        .iter()
                        .map(|node| Backend { node: node.clone(), service: Service::Smtp, addr: addrs[node] })
                        .collect();
                    let on_failure = |backend: &Backend, _: &io::Error| {
                        failures.lock().expect("not poisoned").push(backend.node.clone());
                    };
                    let _ = report.send(forwarder.forward(inbound, &backends, &on_failure).await);
                });
            }
        });
        Self { addr, outcomes, failed_nodes }
    }

    async fn next_outcome(&mut self) -> Outcome {
        tokio::time::timeout(WAIT, self.outcomes.recv()).await.expect("session ends in time").expect("router alive")
    }
}

fn healthy_cluster(names: &[&str]) -> Cluster {
    let mut cluster = Cluster::new(Rendezvous::default());
    for name in names {
        cluster.upsert_node(ClusterNode { id: id(name), weight: 1, state: NodeState::Healthy });
    }
    cluster
}

/// Connects to `router` from `from`, returning the stream and the backend's greeting fields.
async fn connect_from(from: IpAddr, router: SocketAddr) -> (BufReader<TcpStream>, Vec<String>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind client source");
    let stream = tokio::time::timeout(WAIT, socket.connect(router)).await.expect("connect in time").expect("connect");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut line)).await.expect("greeting in time").expect("greeting");
    (reader, line.split_whitespace().map(str::to_owned).collect())
}

#[tokio::test]
async fn serves_from_the_hashed_node_with_the_real_client_address() {
    let mut tasks = JoinSet::new();
    let nodes = ["node1", "node2"];
    let mut addrs = BTreeMap::new();
    for name in nodes {
        addrs.insert(id(name), spawn_backend(name, &mut tasks).await);
    }
    let cluster = healthy_cluster(&nodes);
    let mut router =
        TestRouter::start(cluster.clone(), RouteTable::new(), addrs, ForwardConfig::default(), &mut tasks).await;

    let mut served_by = BTreeSet::new();
    for octet in 2..=21 {
        let ip = source(octet);
        let expected = cluster.choose(ip, &RouteTable::new());
        assert_eq!(expected.reason, Reason::Hashed);
        for _ in 0..2 {
            let (stream, fields) = connect_from(ip, router.addr).await;
            let client = stream.get_ref();
            assert_eq!(fields[0], expected.candidates[0].as_str(), "source {ip}");
            assert_eq!(fields[1], client.local_addr().expect("client addr").to_string(), "PROXY source");
            assert_eq!(fields[2], router.addr.to_string(), "PROXY destination");
            served_by.insert(fields[0].clone());
            drop(stream);
            let stats = router.next_outcome().await.expect("forwarded");
            assert_eq!(stats.backend.node, expected.candidates[0]);
            assert_eq!(stats.failed_attempts, 0);
        }
    }
    assert_eq!(served_by.len(), 2, "twenty sources should land on both nodes");
}

#[tokio::test]
async fn table_route_wins_over_hashing() {
    let mut tasks = JoinSet::new();
    let mut addrs = BTreeMap::new();
    for name in ["node1", "node2"] {
        addrs.insert(id(name), spawn_backend(name, &mut tasks).await);
    }
    let cluster = healthy_cluster(&["node1", "node2"]);
    let table: RouteTable = [
        ("127.0.0.16/28".parse().expect("cidr"), "node2".parse().expect("target")),
        ("127.0.0.32/28".parse().expect("cidr"), "node1".parse().expect("target")),
    ]
    .into_iter()
    .collect();
    let mut router = TestRouter::start(cluster, table, addrs, ForwardConfig::default(), &mut tasks).await;
    for (octet, node) in [(16, "node2"), (20, "node2"), (31, "node2"), (32, "node1"), (47, "node1")] {
        let (stream, fields) = connect_from(source(octet), router.addr).await;
        assert_eq!(fields[0], node, "127.0.0.{octet}");
        drop(stream);
        router.next_outcome().await.expect("forwarded");
    }
}

#[tokio::test]
async fn falls_back_to_the_next_ranked_backend_when_the_first_refuses() {
    let mut tasks = JoinSet::new();
    let nodes = ["node1", "node2", "node3"];
    let cluster = healthy_cluster(&nodes);
    // A source whose first choice is node1, which will not be listening.
    let ip = (2..=250)
        .map(source)
        .find(|&ip| cluster.choose(ip, &RouteTable::new()).candidates[0] == id("node1"))
        .expect("some source prefers node1");
    let ranked = cluster.choose(ip, &RouteTable::new()).candidates;
    let mut addrs = BTreeMap::new();
    let dead = DeadPort::new();
    addrs.insert(id("node1"), dead.addr());
    addrs.insert(id("node2"), spawn_backend("node2", &mut tasks).await);
    addrs.insert(id("node3"), spawn_backend("node3", &mut tasks).await);
    let mut router = TestRouter::start(cluster, RouteTable::new(), addrs, ForwardConfig::default(), &mut tasks).await;

    let (stream, fields) = connect_from(ip, router.addr).await;
    assert_eq!(fields[0], ranked[1].as_str(), "the second-ranked node serves");
    assert_eq!(fields[1], stream.get_ref().local_addr().expect("client addr").to_string());
    drop(stream);
    let stats = router.next_outcome().await.expect("forwarded");
    assert_eq!((stats.backend.node.clone(), stats.failed_attempts), (ranked[1].clone(), 1));
    assert_eq!(*router.failed_nodes.lock().expect("not poisoned"), [id("node1")]);
}

#[tokio::test]
async fn half_close_lets_the_client_read_the_rest() {
    let mut tasks = JoinSet::new();
    let mut addrs = BTreeMap::new();
    addrs.insert(id("node1"), spawn_backend("node1", &mut tasks).await);
    let config = ForwardConfig { buffer_size: 4096, ..ForwardConfig::default() };
    let mut router = TestRouter::start(healthy_cluster(&["node1"]), RouteTable::new(), addrs, config, &mut tasks).await;

    let (stream, fields) = connect_from(source(9), router.addr).await;
    assert_eq!(fields[0], "node1");
    let greeting_len = fields.join(" ").len() as u64 + 1;
    let (mut reader, mut writer) = stream.into_inner().into_split();
    // Several megabytes, so socket buffers fill and the relay has to apply backpressure.
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.expect("client writes");
        writer.shutdown().await.expect("client shuts down its write half");
        writer
    });
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, reader.read_to_end(&mut received)).await.expect("EOF in time").expect("read");
    let _writer = tokio::time::timeout(WAIT, writing).await.expect("writer done").expect("no panic");

    let (echo, tail) = received.split_at(payload.len().min(received.len()));
    assert!(echo == payload, "echo differs ({} bytes received)", received.len());
    assert_eq!(tail, b"END node1\n", "the backend saw EOF and its last words reached the client");
    let stats = router.next_outcome().await.expect("forwarded");
    assert!(matches!(stats.end, SessionEnd::Closed), "{:?}", stats.end);
    assert_eq!(stats.client_to_backend, payload.len() as u64);
    assert_eq!(stats.backend_to_client, greeting_len + payload.len() as u64 + tail.len() as u64);
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let mut tasks = JoinSet::new();
    let mut addrs = BTreeMap::new();
    addrs.insert(id("node1"), spawn_backend("node1", &mut tasks).await);
    let config = ForwardConfig { idle_timeout: Duration::from_millis(200), ..ForwardConfig::default() };
    let mut router = TestRouter::start(healthy_cluster(&["node1"]), RouteTable::new(), addrs, config, &mut tasks).await;

    let (mut stream, _) = connect_from(source(10), router.addr).await;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("closed in time").expect("read");
    assert!(rest.is_empty());
    let stats = router.next_outcome().await.expect("forwarded");
    assert!(matches!(stats.end, SessionEnd::IdleTimeout), "{:?}", stats.end);
}

#[tokio::test]
async fn a_client_is_closed_when_no_backend_accepts() {
    let mut tasks = JoinSet::new();
    let mut addrs = BTreeMap::new();
    let dead = [DeadPort::new(), DeadPort::new()];
    addrs.insert(id("node1"), dead[0].addr());
    addrs.insert(id("node2"), dead[1].addr());
    let mut router = TestRouter::start(
        healthy_cluster(&["node1", "node2"]),
        RouteTable::new(),
        addrs,
        ForwardConfig::default(),
        &mut tasks,
    )
    .await;

    let mut client = TcpStream::connect(router.addr).await.expect("router accepts");
    match router.next_outcome().await {
        Err(ForwardError::AllBackendsFailed { attempts: 2, .. }) => {}
        other => panic!("expected both backends to fail, got {other:?}"),
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, client.read_to_end(&mut rest)).await.expect("closed in time");
    assert!(closed.is_err() || rest.is_empty(), "the client gets nothing and is closed");
    let mut failed = router.failed_nodes.lock().expect("not poisoned").clone();
    failed.sort();
    assert_eq!(failed, [id("node1"), id("node2")]);
}
