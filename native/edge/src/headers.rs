//! `keyguard.gateway.headers`: which client headers go upstream and which upstream headers
//! go back. Names are lower-case ASCII (as hyper gives them).

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

/// `_CLIENT_DROP` minus `HOP_BY_HOP`, plus `accept-encoding` (the edge asks for identity)
const CLIENT_DROP: [&str; 15] = [
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
    "accept-encoding",
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

/// `_connection_named`: the tokens of every `connection` header, stripped and lower-cased.
fn connection_named(headers: &[(&str, &[u8])]) -> Vec<Vec<u8>> {
    let mut named = Vec::new();
    for (k, v) in headers {
        if *k == "connection" {
            for token in v.split(|b| *b == b',') {
                named.push(py_strip(token).to_ascii_lowercase());
            }
        }
    }
    named
}

fn filter<'a>(headers: &[(&'a str, &'a [u8])], drop: &[&str]) -> Vec<(&'a str, &'a [u8])> {
    let named = connection_named(headers);
    headers
        .iter()
        .filter(|(k, _)| {
            !HOP_BY_HOP.contains(k) && !drop.contains(k) && !named.iter().any(|n| n == k.as_bytes())
        })
        .copied()
        .collect()
}

/// `request_head` minus the framing: the client headers (name, value) to send upstream, in
/// order, after dropping credentials, account selectors, hop-by-hop, framing, `expect`,
/// forwarding headers and any header named by `connection`. `accept-encoding` is dropped too:
/// the edge always asks the upstream for `identity` (it reads usage and cleans error bodies).
pub fn upstream_request_headers<'a>(client: &[(&'a str, &'a [u8])]) -> Vec<(&'a str, &'a [u8])> {
    filter(client, &CLIENT_DROP)
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
        assert_eq!(
            upstream_request_headers(&h),
            vec![("content-type", &b"application/json"[..]), ("openai-beta", &b"assistants=v2"[..])]
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
    fn strip() {
        assert_eq!(py_strip(b" \x0b\x0c a b\t\r\n"), b"a b");
        assert_eq!(py_strip(b" \t "), b"");
        assert_eq!(py_strip(b""), b"");
    }
}
