//! What only the local store can show about its message cache: that it outlives a restart,
//! and that an entry is tied to its message's file, not just to a UID.

use std::fs;

use super::*;

const USER: &str = "alice@example.test";

fn entry(uid: u32, data: &'static [u8]) -> Cached {
    Cached { uid, data: Bytes::from_static(data) }
}

#[tokio::test]
async fn cached_data_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        store.cache_put(USER, "INBOX", vec![entry(1, b"rendered")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(1, b"rendered")]);
}

#[tokio::test]
async fn a_file_replaced_under_the_same_uid_gets_no_old_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cur = dir.path().join("mail").join(maildir::escape_component(USER)).join("cur");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: a\r\n\r\nA\r\n"[..])).await.expect("append");
        store.append(USER, "INBOX", NewMessage::new(&b"Subject: b\r\n\r\nB\r\n"[..])).await.expect("append");
        store.cache_put(USER, "INBOX", vec![entry(1, b"of a"), entry(2, b"of b")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    // While the store is down, other software puts a different message in place of UID 1
    // (a restored backup, say): same UID, another file.
    let old = fs::read_dir(&cur)
        .expect("cur")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().expect("utf-8"))
        .find(|n| n.contains(",U=1,"))
        .expect("UID 1");
    fs::remove_file(cur.join(&old)).expect("remove");
    fs::write(cur.join("999.M1P1Q1.restored,U=1,S=17:2,"), b"Subject: c\r\n\r\nC\r\n").expect("write");
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(2, b"of b")]);
    let fetched = store.fetch(USER, "INBOX", &UidSet::single(1), BodyPart::Full).await.expect("fetch");
    assert_eq!(fetched[0].body.as_deref(), Some(&b"Subject: c\r\n\r\nC\r\n"[..]));
}

#[tokio::test]
async fn entries_of_files_gone_while_closed_are_dropped_when_the_folder_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cur = dir.path().join("mail").join(maildir::escape_component(USER)).join("cur");
    {
        let store = LocalStore::open(dir.path()).expect("open");
        for body in [&b"Subject: a\r\n\r\nA\r\n"[..], &b"Subject: b\r\n\r\nB\r\n"[..]] {
            store.append(USER, "INBOX", NewMessage::new(body)).await.expect("append");
        }
        store.cache_put(USER, "INBOX", vec![entry(1, b"of a"), entry(2, b"of b")]).await.expect("put");
        store.flush().await.expect("flush");
    }
    let gone = fs::read_dir(&cur)
        .expect("cur")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains(",U=2,"))
        .expect("UID 2");
    fs::remove_file(gone.path()).expect("remove");
    let store = LocalStore::open(dir.path()).expect("reopen");
    assert_eq!(store.cache_get(USER, "INBOX", &UidSet::all()).await.expect("get"), vec![entry(1, b"of a")]);
    let tree = store.inner.db.open_tree(index::cache_tree_name(USER, "INBOX")).expect("tree");
    assert_eq!(tree.len(), 1, "the entry of the vanished file is gone from disk too");
}
