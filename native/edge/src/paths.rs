//! Request targets: `keyguard.gateway.paths` (split_target, check_path, check_query,
//! upstream_target) and `domain.policy._clean_path`.

/// `(path, query)`; `Err` where `split_target` raises BadPath.
pub fn split_target(target: &[u8]) -> Result<(&[u8], &[u8]), ()> {
    let (path, query): (&[u8], &[u8]) = match target.iter().position(|&c| c == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    };
    if path.contains(&b'#') || query.contains(&b'#') {
        return Err(());
    }
    Ok((path, query))
}

/// `_ALLOWED`: `[A-Za-z0-9\-._~!$&'()*+,;=:@/%]`.
fn path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&c)
}

/// `_QUERY_ALLOWED`: the path characters plus `?`, `[` and `]`.
fn query_char(c: u8) -> bool {
    path_char(c) || matches!(c, b'?' | b'[' | b']')
}

/// `_BAD_ENCODINGS.search`: `%2e`, `%2f`, `%5c`, `%25`, `%00` in any case.
fn bad_encoding(path: &[u8]) -> bool {
    path.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                [w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()],
                [b'2', b'e'] | [b'2', b'f'] | [b'5', b'c'] | [b'2', b'5'] | [b'0', b'0']
            )
    })
}

/// The path as text, or `Err` where `check_path` raises BadPath.
pub fn check_path(path: &[u8]) -> Result<&str, ()> {
    if !path.starts_with(b"/") || !path.iter().all(|&c| path_char(c)) {
        return Err(());
    }
    if bad_encoding(path) {
        return Err(());
    }
    let segments: Vec<&[u8]> = path[1..].split(|&c| c == b'/').collect();
    let (last, init) = segments.split_last().expect("split yields at least one segment");
    if init.iter().any(|s| matches!(*s, b"" | b"." | b"..")) || matches!(*last, b"." | b"..") {
        return Err(());
    }
    std::str::from_utf8(path).map_err(|_| ())
}

/// `Err` where `check_query` raises BadPath.
pub fn check_query(query: &[u8]) -> Result<(), ()> {
    if query.iter().all(|&c| query_char(c)) {
        Ok(())
    } else {
        Err(())
    }
}

/// `domain.policy._clean_path`.
pub fn clean_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (last, init) = segments.split_last().expect("split yields at least one segment");
    init.iter().all(|s| !matches!(*s, "" | "." | "..")) && !matches!(*last, "." | "..")
}

/// `upstream_target(base_path, path, query)` for a `path` under `/v1/`.
pub fn upstream_target(base_path: &str, path: &str, query: &[u8]) -> String {
    // path[len("/v1"):] counts characters in Python
    let rest = match path.char_indices().nth(3) {
        Some((i, _)) => &path[i..],
        None => "",
    };
    let mut target = String::with_capacity(base_path.len() + rest.len() + query.len() + 1);
    target.push_str(base_path.trim_end_matches('/'));
    target.push_str(rest);
    if !query.is_empty() {
        target.push('?');
        target.push_str(&String::from_utf8_lossy(query));
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(split_target(b"/v1/x?a=b?c"), Ok((&b"/v1/x"[..], &b"a=b?c"[..])));
        assert_eq!(split_target(b"/v1/x"), Ok((&b"/v1/x"[..], &b""[..])));
        assert_eq!(split_target(b"/v1/x#f"), Err(()));
        assert_eq!(split_target(b"/v1/x?#"), Err(()));
    }

    #[test]
    fn paths() {
        assert_eq!(check_path(b"/v1/chat/completions"), Ok("/v1/chat/completions"));
        assert_eq!(check_path(b"/"), Ok("/"));
        assert_eq!(check_path(b"/v1/"), Ok("/v1/"));
        for bad in [
            &b"v1/x"[..], b"/v1//x", b"/v1/./x", b"/v1/../x", b"/v1/..", b"/v1/.", b"/v1/%2E",
            b"/v1/%2f", b"/v1/%5C", b"/v1/%25", b"/v1/%00", b"/v1/\\", b"/v1/ x", b"/v1/\xc3\xa9",
            b"/v1/a?b", b"//",
        ] {
            assert_eq!(check_path(bad), Err(()), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(check_path(b"/v1/%2g%2"), Ok("/v1/%2g%2"));
        assert_eq!(check_query(b""), Ok(()));
        assert_eq!(check_query(b"a=[1]&b=?"), Ok(()));
        assert_eq!(check_query(b"a b"), Err(()));
    }

    #[test]
    fn clean() {
        assert!(clean_path("/v1/x"));
        assert!(clean_path("/v1/x/"));
        assert!(clean_path("/"));
        assert!(!clean_path("v1"));
        assert!(!clean_path("//"));
        assert!(!clean_path("/a/.."));
        assert!(!clean_path("/a/./b"));
        assert!(clean_path("/a/..b"));
    }

    #[test]
    fn upstream() {
        assert_eq!(upstream_target("/v1/", "/v1/chat", b"a=1"), "/v1/chat?a=1");
        assert_eq!(upstream_target("/openai/v1", "/v1/chat", b""), "/openai/v1/chat");
        assert_eq!(upstream_target("", "/v1/x", b""), "/x");
        assert_eq!(upstream_target("/b", "/v", b""), "/b");
    }
}
