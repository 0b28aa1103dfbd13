//! stdout: the `ready` line and the records, buffered and flushed at least every 20 ms.
//!
//! A record the supervisor only has to chain and count (its audit row rendered, its usage
//! priced) is one tab-separated line, cheap to split in Python:
//! `R \t t \t key_id \t status \t tokens \t cost_nano \t content \t time_iso \t details \t
//! actor \t subject \t source \t outcome`; every other record is a JSON object (protocol.rs).
//! The buffer is swapped out under its lock and written outside it, so a request never waits
//! for the pipe; past [`MAX_PENDING`] bytes a request does wait (back-pressure: no record is
//! ever dropped).

use kgpolicy::protocol::Record;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Bytes of records waiting for the pipe beyond which a request writes them itself.
pub const MAX_PENDING: usize = 32 * 1024 * 1024;

pub struct Out {
    buf: Mutex<Vec<u8>>,
    /// held while writing to stdout (records and control lines keep their line boundaries)
    pipe: Mutex<()>,
}

impl Out {
    pub fn new() -> Out {
        grow_pipe();
        Out { buf: Mutex::new(Vec::with_capacity(256 * 1024)), pipe: Mutex::new(()) }
    }

    /// A line written (and flushed) now: `ready`, acknowledgements.
    pub fn line_now(&self, line: &str) {
        let mut own = Vec::with_capacity(line.len() + 1);
        own.extend_from_slice(line.as_bytes());
        own.push(b'\n');
        self.write(&own);
    }

    pub fn record(&self, rec: &Record) {
        // serialised straight into the shared buffer (no line of its own to copy)
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let start = buf.len();
        if !tab_line(&mut buf, rec) {
            buf.truncate(start);
            if serde_json::to_writer(&mut *buf, rec).is_ok() {
                buf.push(b'\n');
            } else {
                buf.truncate(start);
            }
        }
        if buf.len() > MAX_PENDING {
            // the supervisor is behind: this request waits for the pipe
            let full = std::mem::take(&mut *buf);
            drop(buf);
            self.write(&full);
        }
    }

    pub fn flush(&self) {
        let pending = {
            let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(256 * 1024))
        };
        self.write(&pending);
    }

    fn write(&self, bytes: &[u8]) {
        let _pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if lock.write_all(bytes).and_then(|_| lock.flush()).is_err() {
            // the supervisor is gone: nobody reads the records any more
        }
    }

    /// The flusher thread: every 10 ms.
    pub fn spawn_flusher(out: &'static Out) {
        std::thread::Builder::new()
            .name("edge-records".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(10));
                out.flush();
            })
            .expect("spawn the record flusher");
    }
}

/// The tab-separated form of `rec` (see the module docs), when it has its audit row and its
/// priced usage and no field holds a tab or newline; false (nothing useful written) otherwise.
fn tab_line(buf: &mut Vec<u8>, rec: &Record) -> bool {
    use std::io::Write as _;
    let (Some(audit), Some(tokens), Some(cost)) = (&rec.audit, rec.tokens, rec.cost_nano) else {
        return false;
    };
    let key_id = rec.key_id.as_deref().unwrap_or("");
    let clean = |s: &str| !s.bytes().any(|b| b == b'\t' || b == b'\n' || b == b'\r');
    if !clean(key_id) || !audit.iter().all(|a| clean(a)) {
        return false;
    }
    let _ = write!(buf, "R\t{}\t{}\t{}\t{}\t{}", rec.t, key_id, rec.status, tokens, cost);
    for part in audit.iter() {
        buf.push(b'\t');
        buf.extend_from_slice(part.as_bytes());
    }
    buf.push(b'\n');
    true
}

/// A bigger stdout pipe (Linux: 1 MiB instead of 64 KiB), so bursts of records never wait for
/// the supervisor to drain it.
fn grow_pipe() {
    #[cfg(target_os = "linux")]
    unsafe {
        // F_SETPIPE_SZ; fails harmlessly when stdout is not a pipe or the limit is lower
        libc::fcntl(1, libc::F_SETPIPE_SZ, 1 << 20);
    }
}
