//! Crash safety and index rebuild of `LocalStore`, with real processes and SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sirms_integration_tests::Process;
use sirms_storage::{BodyPart, FlagOp, Flags, LocalStore, MailStore, NewMessage, SystemFlags, UidSet};

const USER: &str = "crash@example.test";

/// Same bytes as the `append-loop` binary writes for `seq`.
fn body(seq: u64) -> Vec<u8> {
    let mut b = format!("Subject: crash test {seq}\r\n\r\n").into_bytes();
    b.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, (seq % 4000) as usize));
    b.extend_from_slice(b"\r\n");
    b
}

/// A small xorshift generator seeded from the clock (no need for a crate).
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `append-loop` until it has acknowledged at least `min_acks` appends and a random
/// extra moment has passed, then SIGKILLs it. Returns the acknowledged `(uid, seq)` pairs.
fn run_and_kill(dir: &std::path::Path, first_seq: u64, min_acks: usize, extra_ms: u64) -> Vec<(u32, u64)> {
    let child = Command::new(env!("CARGO_BIN_EXE_append-loop"))
        .arg(dir)
        .arg(first_seq.to_string())
        .arg("4")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn append-loop");
    let mut proc = Process::from_child(child);
    let stdout = proc.child().stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut it = line.split(' ');
            if let (Some(Ok(uid)), Some(Ok(seq))) = (it.next().map(str::parse), it.next().map(str::parse))
                && tx.send((uid, seq)).is_err()
            {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < min_acks {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => acks.push(a),
            Err(_) => panic!("append-loop made no progress"),
        }
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    proc.kill9();
    reader.join().expect("reader");
    acks.extend(rx.try_iter());
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_acknowledged_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new();
    let mut acked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut next_seq = 0;
    let mut max_uid_so_far = 0;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let acks = run_and_kill(dir.path(), next_seq, 5, rng.below(150));
        let round_min = acks.iter().map(|a| a.0).min().unwrap();
        assert!(round_min > max_uid_so_far, "round {round}: UID {round_min} went back (had {max_uid_so_far})");
        for (uid, seq) in acks {
            assert!(acked.insert(uid, seq).is_none(), "UID {uid} acknowledged twice");
            next_seq = next_seq.max(seq + 1);
            max_uid_so_far = max_uid_so_far.max(uid);
        }
        // Sequence numbers handed out but never acknowledged must not be reused.
        next_seq += 100;
    }
    let store = LocalStore::open(dir.path()).unwrap();
    let got = store.fetch(USER, "INBOX", &UidSet::all(), BodyPart::Full).await.unwrap();
    let by_uid: BTreeMap<u32, &[u8]> = got.iter().map(|m| (m.meta.uid, m.body.as_deref().unwrap())).collect();
    for (uid, seq) in &acked {
        let stored = by_uid.get(uid).unwrap_or_else(|| panic!("acknowledged UID {uid} lost"));
        assert_eq!(*stored, &body(*seq)[..], "UID {uid} has wrong bytes");
    }
    // The index matches the maildir: every file in cur/ is a message with the UID in its name.
    let cur = dir.path().join("mail").join("crash@example%2Etest").join("cur");
    let mut on_disk: Vec<u32> = std::fs::read_dir(&cur)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| n.split(",U=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, by_uid.keys().copied().collect::<Vec<_>>());
    assert!(acked.len() >= ROUNDS * 5);
    // UIDs keep going up after all the crashes.
    let next = store.append(USER, "INBOX", NewMessage::new(b"after".to_vec())).await.unwrap();
    assert!(next.uid > max_uid_so_far);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_restores_messages_flags_and_uids() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = |s: LocalStore| async move {
        let mut all = Vec::new();
        for name in ["INBOX", "Work/Sub", "Archive"] {
            let (st, msgs) = s.messages(USER, name).await.unwrap();
            let bodies = s.fetch(USER, name, &UidSet::all(), BodyPart::Full).await.unwrap();
            let msgs: Vec<_> = msgs.into_iter().map(|m| (m.uid, m.flags, m.internal_date, m.size)).collect();
            all.push((
                name,
                st.messages,
                st.uid_next,
                st.uid_validity,
                msgs,
                bodies.into_iter().map(|b| b.body).collect::<Vec<_>>(),
            ));
        }
        all
    };
    let before = {
        let s = LocalStore::open(dir.path()).unwrap();
        s.create_mailbox(USER, "Work/Sub", None).await.unwrap();
        for i in 0..6u64 {
            let mut m = NewMessage::new(body(i));
            m.internal_date = Some(1_650_000_000 + i as i64);
            m.flags = Flags::new(SystemFlags::from_bits(i as u32), [format!("kw{}", i % 3)]);
            s.append(USER, "INBOX", m.clone()).await.unwrap();
            s.append(USER, "Work/Sub", m).await.unwrap();
        }
        s.move_messages(USER, "INBOX", "Archive", &UidSet::range(1, 2)).await.unwrap();
        s.store_flags(USER, "INBOX", &UidSet::all(), FlagOp::Add, &Flags::system(SystemFlags::DELETED), None)
            .await
            .unwrap();
        s.store_flags(USER, "INBOX", &UidSet::single(4), FlagOp::Remove, &Flags::system(SystemFlags::DELETED), None)
            .await
            .unwrap();
        s.expunge(USER, "INBOX", Some(&UidSet::range(5, 6))).await.unwrap();
        s.flush().await.unwrap();
        snapshot(s.clone()).await
    };
    // 1. The index vanishes: opening the store rebuilds it.
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let after = snapshot(LocalStore::open(dir.path()).unwrap()).await;
    assert_eq!(before, after);
    // 2. `sirms storage reindex` rebuilds it from scratch too.
    let out = Command::new(sirms_integration_tests::sirms_bin())
        .args(["storage", "reindex", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reindexed 1 users"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let again = snapshot(LocalStore::open(dir.path()).unwrap()).await;
    assert_eq!(before, again);
    // UIDs of expunged messages at the top are not reused after a rebuild.
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(s.append(USER, "INBOX", NewMessage::new(b"x".to_vec())).await.unwrap().uid, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_follows_changes_made_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LocalStore::open(dir.path()).unwrap();
        for i in 0..3 {
            s.append(USER, "INBOX", NewMessage::new(body(i))).await.unwrap();
        }
        s.flush().await.unwrap();
    }
    let user_dir = dir.path().join("mail").join("crash@example%2Etest");
    // Another program marks message 2 seen, deletes message 3 and delivers a new one into new/.
    let names: Vec<String> = std::fs::read_dir(user_dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let two = names.iter().find(|n| n.contains(",U=2,")).unwrap();
    std::fs::rename(user_dir.join("cur").join(two), user_dir.join("cur").join(format!("{two}S"))).unwrap();
    let three = names.iter().find(|n| n.contains(",U=3,")).unwrap();
    std::fs::remove_file(user_dir.join("cur").join(three)).unwrap();
    std::fs::write(user_dir.join("new").join("1700000000.foreign.host"), b"Subject: dropped in\r\n\r\nhi\r\n").unwrap();

    let s = LocalStore::open(dir.path()).unwrap();
    let (st, msgs) = s.messages(USER, "INBOX").await.unwrap();
    assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert!(msgs[1].flags.system.contains(SystemFlags::SEEN));
    assert_eq!(st.uid_next, 5);
    let got = s.fetch(USER, "INBOX", &UidSet::single(4), BodyPart::Full).await.unwrap();
    assert_eq!(got[0].body.as_deref(), Some(&b"Subject: dropped in\r\n\r\nhi\r\n"[..]));
}
