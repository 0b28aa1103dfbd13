//! Request boundaries as they pass by: each head is checked against Python's framing rules
//! (which hyper does not all apply) and Content-Length bodies are skipped, so pipelined heads
//! are checked too. After a chunked body (or a head it cannot read) the scanner loses the
//! boundary and waits for the connection to be idle again.

/// Python's framing rules hyper does not apply: it drops a Content-Length that follows
/// Transfer-Encoding and merges equal duplicates.
pub enum Head {
    Reject(&'static str),
    /// a well-framed head followed by this many body bytes
    Body(u64),
    /// a well-framed head followed by a chunked body
    Chunked,
    /// chunked, or not a head this scanner can read: boundaries unknown from here
    Unknown,
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn judge(head: &[u8]) -> Head {
    let line_end = match find(head, b"\r\n") {
        Some(e) => e,
        None => return Head::Unknown,
    };
    let line = &head[..line_end];
    let method_end = match line.iter().position(|&b| b == b' ') {
        Some(e) => e,
        None => return Head::Unknown,
    };
    if method_end == 0
        || !line[..method_end].iter().all(|b| b.is_ascii_uppercase())
        || !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
    {
        return Head::Unknown;
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Head::Unknown,
    }
    let (mut cl, mut te, mut host, mut length) = (0, 0, 0, 0u64);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl += 1;
            if cl > 1 {
                return Head::Reject("duplicate Content-Length header");
            }
            if h.value.is_empty() || h.value.len() > 18 || !h.value.iter().all(u8::is_ascii_digit) {
                return Head::Reject("invalid Content-Length header");
            }
            length = std::str::from_utf8(h.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te += 1;
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            if te > 1 || !v.eq_ignore_ascii_case("chunked") {
                return Head::Reject("unsupported Transfer-Encoding");
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            host += 1;
            if host > 1 {
                return Head::Reject("duplicate Host header");
            }
        }
    }
    if cl > 0 && te > 0 {
        return Head::Reject("Content-Length together with Transfer-Encoding");
    }
    if te > 0 {
        return Head::Chunked;
    }
    Head::Body(length)
}

/// Longest head kept while looking for its end (hyper refuses longer ones itself).
const MAX_SCAN: usize = 256 * 1024;

/// Where in a chunked body the scanner is.
#[derive(Default, PartialEq)]
enum Chunked {
    #[default]
    No,
    /// reading a chunk-size line (in `buf`)
    Size,
    /// expecting the CRLF after a chunk's data: bytes of it seen
    DataEnd(u8),
    /// reading trailer lines (in `buf`) until an empty one
    Trailers,
}

/// Why a chunked body is refused (as llhttp: strict hex size, optional extension, exact CRLF).
fn chunk_size(line: &[u8]) -> Result<u64, ()> {
    let size = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(());
    }
    u64::from_str_radix(std::str::from_utf8(size).map_err(|_| ())?, 16).map_err(|_| ())
}

#[derive(Default)]
pub struct Scanner {
    buf: Vec<u8>,
    skip: u64,
    chunked: Chunked,
    lost: bool,
    /// stream offset of the first byte of `buf` (the head being received)
    head_at: u64,
    /// stream offset of the head of the request whose body is passing
    req_at: u64,
    fed: u64,
}

impl Scanner {
    /// The connection is idle and nothing was read ahead: a fresh start.
    pub fn resync(&mut self) {
        if self.lost {
            self.lost = false;
            self.skip = 0;
            self.chunked = Chunked::No;
            self.buf.clear();
            self.head_at = self.fed;
        }
    }

    /// Consumes chunked-body bytes from `data`; Ok(rest after the body's end) or Ok(empty)
    /// when more is needed, Err when the framing is broken.
    fn chunked<'a>(&mut self, mut data: &'a [u8]) -> Result<&'a [u8], ()> {
        loop {
            if self.skip > 0 {
                let k = self.skip.min(data.len() as u64) as usize;
                self.skip -= k as u64;
                data = &data[k..];
                if self.skip > 0 || data.is_empty() {
                    return Ok(&[]);
                }
                self.chunked = Chunked::DataEnd(0);
            }
            match self.chunked {
                Chunked::No => return Ok(data),
                Chunked::DataEnd(seen) => {
                    let want = &b"\r\n"[seen as usize..];
                    let k = want.len().min(data.len());
                    if data[..k] != want[..k] {
                        return Err(());
                    }
                    data = &data[k..];
                    if k < want.len() {
                        self.chunked = Chunked::DataEnd(seen + k as u8);
                        return Ok(&[]);
                    }
                    self.chunked = Chunked::Size;
                }
                Chunked::Size | Chunked::Trailers => {
                    let before = self.buf.len();
                    self.buf.extend_from_slice(data);
                    let end = match find(&self.buf, b"\r\n") {
                        Some(e) => e,
                        None => {
                            if self.buf.len() > 8192 {
                                return Err(());
                            }
                            return Ok(&[]);
                        }
                    };
                    data = &data[end + 2 - before..];
                    let line = std::mem::take(&mut self.buf);
                    let line = &line[..end];
                    if self.chunked == Chunked::Trailers {
                        if line.is_empty() {
                            self.chunked = Chunked::No;
                            return Ok(data);
                        }
                        continue;
                    }
                    let n = chunk_size(line)?;
                    if n == 0 {
                        self.chunked = Chunked::Trailers;
                    } else {
                        self.skip = n;
                        self.chunked = Chunked::DataEnd(0);
                        if data.is_empty() {
                            return Ok(&[]);
                        }
                    }
                }
            }
        }
    }

    /// Feeds bytes read from the client; `Some((offset, message))` when the head starting at
    /// stream offset `offset` breaks the framing rules.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<(u64, &'static str)> {
        let start = self.fed;
        self.fed += data.len() as u64;
        if self.lost {
            return None;
        }
        let mut pos = start;
        loop {
            if self.chunked != Chunked::No {
                let len = data.len();
                match self.chunked(data) {
                    Ok(rest) => {
                        pos += (len - rest.len()) as u64;
                        data = rest;
                        if self.chunked != Chunked::No || data.is_empty() {
                            self.head_at = pos;
                            return None;
                        }
                        self.head_at = pos;
                    }
                    Err(()) => {
                        self.lost = true;
                        self.buf.clear();
                        return Some((self.req_at, "malformed chunked request body"));
                    }
                }
            }
            if self.skip > 0 {
                let k = self.skip.min(data.len() as u64) as usize;
                self.skip -= k as u64;
                data = &data[k..];
                pos += k as u64;
                if self.skip > 0 || data.is_empty() {
                    self.head_at = pos;
                    return None;
                }
            }
            if self.buf.is_empty() {
                self.head_at = pos;
            }
            let before = self.buf.len();
            self.buf.extend_from_slice(data);
            let end = match find(&self.buf, b"\r\n\r\n") {
                Some(e) => e + 4,
                None => {
                    if self.buf.len() > MAX_SCAN {
                        self.lost = true;
                        self.buf.clear();
                    }
                    return None;
                }
            };
            let verdict = judge(&self.buf[..end]);
            match verdict {
                Head::Reject(m) => {
                    self.lost = true;
                    self.buf.clear();
                    return Some((self.head_at, m));
                }
                Head::Unknown => {
                    self.lost = true;
                    self.buf.clear();
                    return None;
                }
                verdict => {
                    // what follows the head in this read: the body, then maybe the next head
                    self.req_at = self.head_at;
                    let used_here = end - before;
                    pos += used_here as u64;
                    data = &data[used_here..];
                    self.buf.clear();
                    match verdict {
                        Head::Body(n) => self.skip = n,
                        _ => self.chunked = Chunked::Size,
                    }
                    self.head_at = pos;
                    if data.is_empty() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_smuggler_found_at_its_offset() {
        let first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_vec();
        let bad = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        let mut all = first.clone();
        all.extend_from_slice(bad);
        for split in 0..all.len() {
            let mut s = Scanner::default();
            let a = s.feed(&all[..split]);
            let b = s.feed(&all[split..]);
            let got = a.or(b).expect("rejected");
            assert_eq!(got.0, first.len() as u64, "split {split}");
        }
    }

    #[test]
    fn chunked_bodies_are_followed_and_checked() {
        let good = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n0\r\nT: v\r\n\r\n";
        let bad = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4 \r\nabcd\r\n0\r\n\r\n";
        let mut all = good.to_vec();
        all.extend_from_slice(bad);
        for split in 0..all.len() {
            let mut s = Scanner::default();
            let a = s.feed(&all[..split]);
            let b = s.feed(&all[split..]);
            assert_eq!(a.or(b).expect("rejected").0, good.len() as u64, "split {split}");
        }
        for body in [&b"4\r\nabcdEXTRA\r\n0\r\n\r\n"[..], b"-4\r\nabcd\r\n0\r\n\r\n", b"ffffffffffffffffff\r\nab"] {
            let mut s = Scanner::default();
            let mut req = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            req.extend_from_slice(body);
            assert_eq!(s.feed(&req).map(|r| r.0), Some(0));
        }
        let mut s = Scanner::default();
        assert!(s.feed(good).is_none());
        assert!(s.feed(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").is_none());
        assert!(!s.lost);
    }

    #[test]
    fn good_pipelines_pass() {
        let one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut s = Scanner::default();
        assert!(s.feed(one).is_none());
        assert!(!s.lost);
    }
}
