//! The router's status page as a person sees it: a real router and two real nodes, the page
//! loaded in headless Chromium (Debian's `chromium`), what it shows compared with
//! `sirms ctl --json status`, and a screenshot kept in the test's output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sirms_integration_tests::{CLUSTER_TOKEN, MailNode, RouterProcess, free_port};

/// Chromium, or a failure that says how to get it.
fn require_chromium() {
    if Command::new("chromium").arg("--version").output().is_err() {
        panic!("chromium is not installed: run .ci/install-deps");
    }
}

/// Runs headless Chromium on `url` with `args` (bounded by `timeout(1)`); its stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new("timeout")
        .args(["90", "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM as Chromium rendered it, logged in with `token` through the URL's credentials
/// (Chromium answers the 401's Basic challenge with them).
fn dump_dom(profile: &Path, page: &str) -> String {
    chromium(profile, &["--dump-dom"], page)
}

/// The text of the first `<td class="CLASS…">` in the row of node `id`.
fn cell(dom: &str, id: &str, class: &str) -> Option<String> {
    let start = dom.find(&format!("<tr data-node=\"{id}\">"))?;
    let row = &dom[start..start + dom[start..].find("</tr>")?];
    let at = row.find(&format!("<td class=\"{class}"))?;
    let text = &row[at..];
    let open = text.find('>')? + 1;
    Some(text[open..open + text[open..].find("</td>")?].to_string())
}

/// The text of the element opened by `opening` (`<td class="users">`).
fn element(dom: &str, opening: &str) -> Option<String> {
    let at = dom.find(opening)? + opening.len();
    let end = dom[at..].find("</")?;
    Some(dom[at..at + end].to_string())
}

/// `curl` to `url` with `args`: the status code and the response head.
fn curl(args: &[&str], url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (run .ci/install-deps)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, code) = text.split_at(text.len().saturating_sub(3));
    (code.to_string(), head.to_string())
}

fn status_json(router: &RouterProcess) -> serde_json::Value {
    let out = router.ctl(&["--json", "status"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctl --json status gave no JSON ({e}): {out}"))
}

/// What the page must show for each node, from `ctl --json status`: (id, [(class, text)]).
fn expected(status: &serde_json::Value) -> Vec<(String, Vec<(&'static str, String)>)> {
    let nodes = status["nodes"].as_array().expect("nodes");
    nodes
        .iter()
        .map(|n| {
            let id = n["node"]["id"].as_str().expect("id").to_string();
            let health = if n["healthy"] == true { "up".to_string() } else { "down".to_string() };
            let load = &n["load"];
            let mut cells = vec![("health", health), ("host", n["node"]["host"].as_str().unwrap_or("").to_string())];
            if load.is_object() {
                let sessions =
                    format!("{} / {} / {}", load["smtp_sessions"], load["imap_sessions"], load["pop3_sessions"]);
                cells.push(("sessions", sessions));
                cells.push(("queue", load["queue_length"].to_string()));
                cells.push(("version", load["version"].as_str().unwrap_or("-").to_string()));
                cells.push(("directory-version", load["directory_version"].to_string()));
            }
            (id, cells)
        })
        .collect()
}

/// Compares the page with `ctl --json status`; the differences, empty when they agree.
fn differences(dom: &str, status: &serde_json::Value) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, cells) in expected(status) {
        for (class, want) in cells {
            let shown = cell(dom, &id, class);
            // `health` may add the services down (`down: imap`); the rest must be exact.
            let agrees = match &shown {
                Some(shown) if class == "health" => shown.split(':').next() == Some(want.as_str()),
                Some(shown) => *shown == want,
                None => false,
            };
            if !agrees {
                wrong.push(format!("{id} {class}: page {shown:?}, ctl {want:?}"));
            }
        }
    }
    for (class, key) in [("users", "users"), ("domains", "domains"), ("routes", "routes")] {
        let shown = element(dom, &format!("<td class=\"{class}\">"));
        if shown != Some(status[key].to_string()) {
            wrong.push(format!("{class}: page {shown:?}, ctl {}", status[key]));
        }
    }
    wrong
}

/// Loads the page until it agrees with `ctl --json status` read just before (heartbeats move
/// numbers between the two reads), and `also` holds; the DOM.
fn agreeing_dom(router: &RouterProcess, profile: &Path, page: &str, also: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status_json(router);
        let dom = dump_dom(profile, page);
        let wrong = differences(&dom, &status);
        if wrong.is_empty() && also(&dom) {
            return dom;
        }
        assert!(Instant::now() < deadline, "the page never agreed with ctl status: {wrong:?}\n{status:#}\n{dom}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where this test's screenshots go: the target's test directory, kept after the run.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

#[test]
fn the_page_shows_what_ctl_status_shows_and_takes_the_admin_token_only() {
    require_chromium();
    let status_addr = format!("127.0.0.1:{}", free_port());
    let router = RouterProcess::start_with(&format!("[status]\nlisten = \"{status_addr}\"\n"));
    let n1 = MailNode::start_on([127, 0, 0, 1], "node1.example.test", &router.node_extra("node1", [127, 0, 0, 1]));
    let mut n2 = MailNode::start_on([127, 0, 0, 2], "node2.example.test", &router.node_extra("node2", [127, 0, 0, 2]));
    router.wait_nodes(" up ", 2);
    router.ctl(&["domains", "add", "example.test"]);
    router.ctl(&["users", "add", "alice@example.test", "--password", "alice-pw", "--home", "node1"]);
    router.ctl(&["routes", "add", "127.0.0.99/32", "node2"]);
    // Both nodes' heartbeats (with their versions) have reached the router.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status_json(&router)["nodes"].as_array().expect("nodes").iter().all(|n| n["load"]["version"].is_string()) {
        assert!(Instant::now() < deadline, "no heartbeats: {:#}", status_json(&router));
        std::thread::sleep(Duration::from_millis(200));
    }

    // Without the token there is nothing to see; a browser is asked for it.
    let plain = format!("http://{status_addr}/");
    let (code, head) = curl(&[], &plain);
    assert_eq!(code, "401", "{head}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"sirms\""), "{head}");
    assert_eq!(curl(&["-u", "admin:wrong-token"], &plain).0, "401");
    let (code, head) = curl(&["-u", &format!("admin:{CLUSTER_TOKEN}")], &plain);
    assert_eq!(code, "200", "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
    assert_eq!(curl(&["-u", &format!("admin:{CLUSTER_TOKEN}")], &format!("{plain}nothing")).0, "404");

    // In a browser, with the token: every node as ctl status shows it, the route and where it goes.
    let profile = tempfile::tempdir().expect("chromium profile");
    let page = format!("http://admin:{CLUSTER_TOKEN}@{status_addr}/");
    let unauthorized = dump_dom(profile.path(), &plain);
    assert!(!unauthorized.contains("data-node"), "no credentials, no nodes: {unauthorized}");
    let dom = agreeing_dom(&router, profile.path(), &page, |_| true);
    assert_eq!(cell(&dom, "node1", "health").as_deref(), Some("up"), "{dom}");
    assert_eq!(cell(&dom, "node2", "version").as_deref(), Some(env!("CARGO_PKG_VERSION")), "{dom}");
    let route = router.ctl(&["--json", "routes", "test", "127.0.0.99"]);
    let route: serde_json::Value = serde_json::from_str(&route).expect("routes test --json");
    assert_eq!(route["node"], "node2");
    assert!(dom.contains("<tr data-route=\"127.0.0.99/32\">"), "{dom}");
    assert_eq!(element(&dom, "<td class=\"goes-to\">"), route["node"].as_str().map(String::from), "{dom}");
    assert!(dom.contains("<title>SIRMS status</title>") && !dom.contains("<script"), "{dom}");

    let screenshot = output_dir().join("status.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(profile.path(), &[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,1600"], &page);
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {} bytes", png.len());
    eprintln!("status page screenshot: {}", screenshot.display());

    // A node going down: the page says so, as ctl does, and lists the router's warning.
    n2.process.stop();
    let dom = agreeing_dom(&router, profile.path(), &page, |dom| {
        cell(dom, "node2", "health").is_some_and(|h| h.starts_with("down"))
            && element(dom, "<table class=\"errors\">").is_some()
            && dom.contains("node=node2")
    });
    assert_eq!(cell(&dom, "node1", "health").as_deref(), Some("up"), "{dom}");
    assert!(dom.contains("service is down"), "the health check's warning is listed: {dom}");
    let after = output_dir().join("status-node2-down.png");
    chromium(profile.path(), &[&format!("--screenshot={}", after.display()), "--window-size=1280,1600"], &page);
    assert!(std::fs::metadata(&after).map(|m| m.len() > 0).unwrap_or(false), "{}", after.display());
    eprintln!("status page screenshot with node2 down: {}", after.display());
    drop(n1);
}
