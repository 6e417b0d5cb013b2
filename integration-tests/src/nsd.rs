//! A real authoritative DNS server for tests: Debian's NSD serving one zone from a test's
//! directory on a loopback address of the test's own, in the foreground, killed when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Process, free_port_on, wait_for_port};

/// The start of a zone file for `origin` (say `"test."`) whose name server `ns.ORIGIN` is at
/// `ns_ip`: `$ORIGIN`, a one-minute TTL, SOA and NS; a test appends its own records.
pub fn zone_head(origin: &str, ns_ip: Ipv4Addr) -> String {
    format!(
        "$ORIGIN {origin}\n$TTL 60\n@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60\n\
         @ IN NS ns.{origin}\nns IN A {ns_ip}\n"
    )
}

/// NSD on `ip` (a free port), serving the zone `origin` (say `"test."`) with the zone file
/// text `zone`; its files go in `dir`.
pub fn start(dir: &Path, ip: Ipv4Addr, origin: &str, zone: &str) -> (Process, SocketAddr) {
    let port = free_port_on(ip);
    let d = dir.display();
    std::fs::write(dir.join("nsd.zone"), zone).expect("write zone");
    let conf = format!(
        r#"server:
    ip-address: {ip}@{port}
    port: {port}
    zonesdir: "{d}"
    pidfile: "{d}/nsd.pid"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    username: ""
    chroot: ""
    logfile: "{d}/nsd.log"
    server-count: 1
remote-control:
    control-enable: no
zone:
    name: "{origin}"
    zonefile: "nsd.zone"
"#
    );
    std::fs::write(dir.join("nsd.conf"), conf).expect("write nsd.conf");
    let nsd = if Path::new("/usr/sbin/nsd").exists() { "/usr/sbin/nsd" } else { "nsd" };
    let child = Command::new(nsd)
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .spawn()
        .expect("start nsd (apt-get install nsd; .ci/install-deps does)");
    let addr = SocketAddr::from((ip, port));
    assert!(wait_for_port(addr, Duration::from_secs(20)), "nsd does not listen on {addr}");
    (Process::from_child(child), addr)
}
