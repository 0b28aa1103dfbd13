//! `keyguard.gateway.headers`: which client headers go upstream and which upstream headers
//! go back. Names are lower-case ASCII (as hyper gives them).

use std::borrow::Cow;

/// `HOP_BY_HOP`
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `_CLIENT_DROP` minus `HOP_BY_HOP`
const CLIENT_DROP: [&str; 14] = [
    "host",
    "authorization",
    "api-key",
    "openai-organization",
    "openai-project",
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "keyguard-edge-peer",
    "keyguard-edge-admitted",
];

/// `_RESPONSE_DROP` minus `HOP_BY_HOP`
const RESPONSE_DROP: [&str; 3] = ["content-length", "openai-organization", "openai-project"];

/// Python's `bytes.strip()`: ASCII whitespace, vertical tab included.
pub fn py_strip(v: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &v[start..end.max(start)]
}

/// `_connection_named`: the tokens of every `connection` header value, stripped and
/// lower-cased.
fn connection_named<'v>(values: impl Iterator<Item = &'v [u8]>) -> Vec<Vec<u8>> {
    let mut named = Vec::new();
    for v in values {
        for token in v.split(|b| *b == b',') {
            named.push(py_strip(token).to_ascii_lowercase());
        }
    }
    named
}

/// Which headers go on: [`upstream_request_headers`] and [`client_response_headers`] as a
/// test per name, for callers that keep their own header map (no copies).
pub struct Filter {
    named: Vec<Vec<u8>>,
    drop: &'static [&'static str],
}

impl Filter {
    /// For a client request whose `connection` header values are `connection`.
    pub fn request<'v>(connection: impl Iterator<Item = &'v [u8]>) -> Filter {
        Filter { named: connection_named(connection), drop: &CLIENT_DROP }
    }

    /// For an upstream response whose `connection` header values are `connection`.
    pub fn response<'v>(connection: impl Iterator<Item = &'v [u8]>) -> Filter {
        Filter { named: connection_named(connection), drop: &RESPONSE_DROP }
    }

    /// Whether a header of this (lower-case) name is kept.
    pub fn keeps(&self, name: &str) -> bool {
        !HOP_BY_HOP.contains(&name) && !self.drop.contains(&name) && !self.named.iter().any(|n| n == name.as_bytes())
    }
}

/// `readable_encodings`: the client's `Accept-Encoding` cut to the codings keyguard can read
/// itself (gzip, x-gzip, deflate, identity; `*` becomes gzip and deflate; `identity` when
/// nothing is left), each kept part as the client wrote it (stripped, parameters included),
/// duplicates dropped.
pub fn readable_encodings(value: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let add = |part: &'static [u8], kept: &mut Vec<&[u8]>| {
        if !kept.contains(&part) {
            kept.push(part);
        }
    };
    for part in value.split(|b| *b == b',') {
        let coding = py_strip(part.split(|b| *b == b';').next().unwrap_or(b"")).to_ascii_lowercase();
        match coding.as_slice() {
            b"gzip" | b"x-gzip" | b"deflate" | b"identity" => {
                let p = py_strip(part);
                if !kept.contains(&p) {
                    kept.push(p);
                }
            }
            b"*" => {
                add(b"gzip", &mut kept);
                add(b"deflate", &mut kept);
            }
            _ => {}
        }
    }
    if kept.is_empty() {
        return b"identity".to_vec();
    }
    kept.join(&b", "[..])
}

fn filter<'a>(headers: &[(&'a str, &'a [u8])], drop: &'static [&'static str]) -> Vec<(&'a str, &'a [u8])> {
    let connection = headers.iter().filter(|(k, _)| *k == "connection").map(|(_, v)| *v);
    let f = Filter { named: connection_named(connection), drop };
    headers.iter().filter(|(k, _)| f.keeps(k)).copied().collect()
}

/// `request_head` minus the framing: the client headers (name, value) to send upstream, in
/// order, after dropping credentials, account selectors, hop-by-hop, framing, `expect`,
/// forwarding headers and any header named by `connection`; `accept-encoding` cut to what
/// keyguard can read ([`readable_encodings`]).
pub fn upstream_request_headers<'a>(client: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, Cow<'a, [u8]>)> {
    filter(client, &CLIENT_DROP)
        .into_iter()
        .map(|(k, v)| match k {
            "accept-encoding" => (k, Cow::Owned(readable_encodings(v))),
            _ => (k, Cow::Borrowed(v)),
        })
        .collect()
}

/// `response_headers`: the upstream's headers minus hop-by-hop, framing and the upstream
/// account's identifiers, and any header named by `connection`.
pub fn client_response_headers<'a>(upstream: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    filter(upstream, &RESPONSE_DROP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_drops() {
        let h: Vec<(&str, &[u8])> = vec![
            ("authorization", b"Bearer x"),
            ("content-type", b"application/json"),
            ("connection", b" Keep-Alive , X-Secret,\x0bX-Other\x0b"),
            ("x-secret", b"1"),
            ("x-other", b"1"),
            ("accept-encoding", b"gzip"),
            ("te", b"trailers"),
            ("x-forwarded-for", b"1.2.3.4"),
            ("openai-beta", b"assistants=v2"),
            ("keyguard-edge-peer", b"1"),
            ("api-key", b"k"),
        ];
        let out = upstream_request_headers(&h);
        let got: Vec<(&str, &[u8])> = out.iter().map(|(k, v)| (*k, &v[..])).collect();
        assert_eq!(
            got,
            vec![("content-type", &b"application/json"[..]), ("accept-encoding", &b"gzip"[..]), ("openai-beta", &b"assistants=v2"[..])]
        );
    }

    #[test]
    fn response_drops() {
        let h: Vec<(&str, &[u8])> = vec![
            ("content-type", b"application/json"),
            ("openai-organization", b"org"),
            ("content-length", b"3"),
            ("transfer-encoding", b"chunked"),
            ("x-request-id", b"r"),
            ("connection", b"x-request-id"),
            ("openai-processing-ms", b"7"),
        ];
        assert_eq!(
            client_response_headers(&h),
            vec![("content-type", &b"application/json"[..]), ("openai-processing-ms", &b"7"[..])]
        );
    }

    #[test]
    fn encodings() {
        let r = |v: &[u8]| String::from_utf8(readable_encodings(v)).unwrap();
        assert_eq!(r(b"gzip, deflate, br, zstd"), "gzip, deflate");
        assert_eq!(r(b"br"), "identity");
        assert_eq!(r(b""), "identity");
        assert_eq!(r(b" GZIP ;q=0.5 , *;q=0.1, gzip"), "GZIP ;q=0.5, gzip, deflate");
        assert_eq!(r(b"*, gzip, x-gzip;q=1, identity"), "gzip, deflate, x-gzip;q=1, identity");
        assert_eq!(r(b"gzip,gzip"), "gzip");
    }

    #[test]
    fn strip() {
        assert_eq!(py_strip(b" \x0b\x0c a b\t\r\n"), b"a b");
        assert_eq!(py_strip(b" \t "), b"");
        assert_eq!(py_strip(b""), b"");
    }
}
