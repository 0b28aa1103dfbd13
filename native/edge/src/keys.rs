//! Virtual keys: `keyguard.domain.keys.parse_virtual_key`, `gateway.headers.bearer_token`,
//! `vault.auth.secret_digest` and the digest match of `vault.auth.KeyAuthenticator._match`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The parts of a well-formed virtual key (format and checksum checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

const PREFIX: &str = "kg_";
const KEY_ID_LENGTH: usize = 12;
const SECRET_LENGTH: usize = 44;
const CHECKSUM_LENGTH: usize = 6;
/// `VIRTUAL_KEY_LENGTH`: 65.
pub const VIRTUAL_KEY_LENGTH: usize = PREFIX.len() + KEY_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `keys.checksum`: six base62 characters of CRC32 over the key id and secret.
pub fn checksum(body: &[u8]) -> [u8; CHECKSUM_LENGTH] {
    let mut number = crc32fast::hash(body) as u64;
    let mut out = [b'0'; CHECKSUM_LENGTH];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(number % 62) as usize];
        number /= 62;
    }
    out
}

/// `parse_virtual_key`: `kg_` + 12 [0-9a-z] + 44 base62 secret + 6 base62 CRC32 checksum.
pub fn parse_virtual_key(token: &str) -> Option<TokenParts<'_>> {
    let b = token.as_bytes();
    if b.len() != VIRTUAL_KEY_LENGTH || !token.starts_with(PREFIX) {
        return None;
    }
    let id_end = PREFIX.len() + KEY_ID_LENGTH;
    let body_end = VIRTUAL_KEY_LENGTH - CHECKSUM_LENGTH;
    if !b[PREFIX.len()..id_end].iter().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()) {
        return None;
    }
    if !b[id_end..].iter().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let sum = checksum(&b[PREFIX.len()..body_end]);
    if !bool::from(sum[..].ct_eq(&b[body_end..])) {
        return None;
    }
    Some(TokenParts { key_id: &token[PREFIX.len()..id_end], secret: &token[id_end..body_end] })
}

/// Python's `bytes.strip()` with no argument: ASCII whitespace.
fn strip_ascii_ws(v: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let start = v.iter().position(|c| !ws(c)).unwrap_or(v.len());
    let end = v.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// `bearer_token` over the values of the request's `authorization` headers, in order
/// (the first one decides, as in Python): the token of `Bearer <token>`, ASCII only.
pub fn bearer_token<'a>(authorization: &[&'a [u8]]) -> Option<&'a str> {
    let v = strip_ascii_ws(authorization.first()?);
    let (scheme, token): (&[u8], &[u8]) = match v.iter().position(|&c| c == b' ') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = strip_ascii_ws(token);
    if !token.is_ascii() {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// HMAC-SHA256 of virtual-key secrets under the vault's server key (key schedule done once).
pub struct Verifier {
    mac: Hmac<Sha256>,
}

impl Verifier {
    pub fn new(server_key: &[u8]) -> Self {
        // HMAC takes keys of any length (longer than a block: hashed first, as RFC 2104)
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(server_key).expect("HMAC takes any key length");
        Verifier { mac }
    }

    /// `secret_digest(server_key, secret)`.
    pub fn digest(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// True when `digest` equals one of `stored` (constant time, every entry compared) whose
/// `valid_until` (unix seconds) is None or after `now`.
pub fn digest_matches(stored: &[([u8; 32], Option<f64>)], digest: &[u8; 32], now: f64) -> bool {
    let mut matched = subtle::Choice::from(0u8);
    for (d, valid_until) in stored {
        let valid = match valid_until {
            None => true,
            Some(until) => now < *until,
        };
        matched |= d.ct_eq(digest) & subtle::Choice::from(valid as u8);
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_key(id: &str, secret: &str) -> String {
        let body = format!("{id}{secret}");
        let sum = checksum(body.as_bytes());
        format!("{PREFIX}{body}{}", std::str::from_utf8(&sum).unwrap())
    }

    fn secret() -> String {
        // built at run time; not a real key
        (0..SECRET_LENGTH).map(|i| BASE62[(i * 7 + 3) % 62] as char).collect()
    }

    #[test]
    fn parses_good_key_and_rejects_bad_checksum() {
        let s = secret();
        let token = make_key("abcdef012345", &s);
        let parts = parse_virtual_key(&token).unwrap();
        assert_eq!(parts.key_id, "abcdef012345");
        assert_eq!(parts.secret, s);
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(parse_virtual_key(std::str::from_utf8(&bad).unwrap()).is_none());
        assert!(parse_virtual_key(&token[..64]).is_none());
        assert!(parse_virtual_key(&token.replacen("kg_a", "kg_A", 1)).is_none());
        assert!(parse_virtual_key("").is_none());
    }

    #[test]
    fn bearer() {
        assert_eq!(bearer_token(&[b" Bearer  abc \t"]), Some("abc"));
        assert_eq!(bearer_token(&[b"bEaReR x", b"Bearer y"]), Some("x"));
        assert_eq!(bearer_token(&[b"Basic x", b"Bearer y"]), None);
        assert_eq!(bearer_token(&[b"Bearer"]), Some(""));
        assert_eq!(bearer_token(&[b"Bearer \xc3\xa9"]), None);
        assert_eq!(bearer_token(&[b"Bearer\tx"]), None);
        assert_eq!(bearer_token(&[]), None);
    }

    #[test]
    fn digest_known_vector() {
        // RFC 4231 test case 2
        let v = Verifier::new(b"Jefe");
        let d = v.digest("what do ya want for nothing?");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(digest_matches(&[([0; 32], None), (d, Some(10.0))], &d, 9.5));
        assert!(!digest_matches(&[(d, Some(10.0))], &d, 10.0));
        assert!(digest_matches(&[(d, None)], &d, 1e12));
        assert!(!digest_matches(&[], &d, 0.0));
    }
}
