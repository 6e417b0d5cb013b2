//! A value loaded from files and loaded again when they change: certificates, so that a
//! renewed one is used without a restart.
//!
//! The files are looked at (size and modification time) at most every [`CHECK_EVERY`], when
//! the value is asked for, so an idle server does no work. A change that does not load (a
//! renewal half-written: the new certificate, the old key) keeps the previous value, is logged
//! once, and is tried again when the files change again. SIGHUP ([`reload_all`]) makes every
//! value load its files again at its next use, even files whose size and time did not change
//! (a copy that kept the old modification time).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How many times [`reload_all`] was called: a value that saw fewer loads its files again.
static RELOADS: AtomicU64 = AtomicU64::new(0);

/// Makes every watched value load its files again at its next use (the process's SIGHUP).
pub fn reload_all() {
    RELOADS.fetch_add(1, Ordering::SeqCst);
}

/// How often the files are looked at, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The files' sizes and modification times (`None` if one is missing).
type Stamp = Option<Vec<(u64, SystemTime)>>;

type Loader<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

struct State<T> {
    value: T,
    /// The stamp of the files `value` was loaded from.
    loaded: Stamp,
    /// The stamp of files that failed to load.
    failed: Stamp,
    checked: Instant,
    /// [`RELOADS`] when the value was last checked.
    reloads: u64,
}

/// A value and the files it comes from.
pub struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Option<Loader<T>>,
    state: Mutex<State<T>>,
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    (paths.iter()).map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)))).collect()
}

impl<T: Clone> Watched<T> {
    /// `first`, just loaded from `paths` by the caller (who reports its errors as they are),
    /// and loaded again with `load` whenever they change.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        first: T,
        load: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Watched<T> {
        // Stamped just after the caller's load: files replaced in that instant at start-up
        // are picked up at their next change, not before.
        let reloads = RELOADS.load(Ordering::SeqCst);
        let state = State { value: first, loaded: stamp(&paths), failed: None, checked: Instant::now(), reloads };
        Watched { what, paths, load: Some(Box::new(load)), state: Mutex::new(state) }
    }

    /// A value that comes from no file and never changes.
    pub fn fixed(what: &'static str, value: T) -> Watched<T> {
        let state = State { value, loaded: None, failed: None, checked: Instant::now(), reloads: 0 };
        Watched { what, paths: Vec::new(), load: None, state: Mutex::new(state) }
    }

    /// The value, loaded again first if the files changed since.
    pub fn current(&self) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(load) = &self.load else { return state.value.clone() };
        let reloads = RELOADS.load(Ordering::SeqCst);
        let forced = reloads != state.reloads;
        if state.checked.elapsed() < CHECK_EVERY && !forced {
            return state.value.clone();
        }
        state.checked = Instant::now();
        state.reloads = reloads;
        let now = stamp(&self.paths);
        if now.is_none() || (!forced && (now == state.loaded || now == state.failed)) {
            return state.value.clone();
        }
        match load() {
            Ok(value) => {
                tracing::info!(what = self.what, files = ?self.paths, forced, "loaded again: new connections use it");
                *state = State { value, loaded: now, failed: None, checked: state.checked, reloads };
            }
            Err(e) => {
                tracing::warn!(what = self.what, error = %e, "changed on disk but cannot be used; keeping the previous one");
                state.failed = now;
            }
        }
        state.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_loaded_and_a_broken_one_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("value");
        std::fs::write(&path, "1").expect("write");
        let read = path.clone();
        let load = move || {
            let text = std::fs::read_to_string(&read).map_err(|e| e.to_string())?;
            text.trim().parse::<u32>().map_err(|e| e.to_string())
        };
        let watched = Watched::new("number", vec![path.clone()], load().expect("loads"), load);
        assert_eq!(watched.current(), 1);
        let wait = || {
            std::thread::sleep(CHECK_EVERY + Duration::from_millis(100));
        };
        std::fs::write(&path, "22").expect("write");
        assert_eq!(watched.current(), 1, "looked at no more often than CHECK_EVERY");
        wait();
        assert_eq!(watched.current(), 22);
        std::fs::write(&path, "not a number").expect("write");
        wait();
        assert_eq!(watched.current(), 22, "a broken change keeps the last good value");
        std::fs::write(&path, "333").expect("write");
        wait();
        assert_eq!(watched.current(), 333);

        // The same size and modification time: only a SIGHUP loads it.
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).expect("mtime");
        std::fs::write(&path, "444").expect("write");
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(mtime)).expect("mtime");
        wait();
        assert_eq!(watched.current(), 333, "nothing looks changed");
        reload_all();
        assert_eq!(watched.current(), 444, "reloaded at once after reload_all");
    }
}
