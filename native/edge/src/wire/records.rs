//! stdout: the `ready` line and the records, buffered and flushed at least every 20 ms.

use kgpolicy::protocol::Record;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

pub struct Out {
    buf: Mutex<Vec<u8>>,
}

impl Out {
    pub fn new() -> Out {
        Out { buf: Mutex::new(Vec::with_capacity(64 * 1024)) }
    }

    /// A line written (and flushed) now: `ready`.
    pub fn line_now(&self, line: &str) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        Self::write(&mut buf);
    }

    pub fn record(&self, rec: &Record) {
        // serialised straight into the shared buffer (no line of its own to copy)
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let start = buf.len();
        if serde_json::to_writer(&mut *buf, rec).is_ok() {
            buf.push(b'\n');
        } else {
            buf.truncate(start);
        }
    }

    pub fn flush(&self) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        Self::write(&mut buf);
    }

    fn write(buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        if lock.write_all(buf).and_then(|_| lock.flush()).is_err() {
            // the supervisor is gone: nobody reads the records any more
        }
        buf.clear();
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
