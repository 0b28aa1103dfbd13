//! Addresses: `domain.policy` CIDR allowlists (IPv4-mapped IPv6 normalised, `::ffff:a.b.c.d/n`
//! networks folded to IPv4) and `gateway.clientip.ClientIpResolver` (X-Forwarded-For and
//! Forwarded walked right to left through trusted proxies only).
//!
//! Address and network text is read with the rules of CPython 3.11's `ipaddress`
//! (`ip_address`, `ip_network(strict=False)`: no leading zeros in IPv4 octets, IPv4 netmasks
//! and hostmasks after `/`, IPv6 scope ids, `str.strip()` whitespace), not with `std`'s parser,
//! which accepts and refuses different strings.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4-mapped IPv6 address becomes the IPv4 address it carries.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            if n >> 32 == 0xFFFF {
                IpAddr::V4(Ipv4Addr::from(n as u32))
            } else {
                ip
            }
        }
        v4 => v4,
    }
}

/// Python's `str.isspace()`.
pub(crate) fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

fn ascii_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `_BaseV4._ip_int_from_string`.
fn v4_int(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut out: u32 = 0;
    let mut count = 0;
    for octet in s.split('.') {
        count += 1;
        if count > 4 || !ascii_digits(octet) || octet.len() > 3 {
            return None;
        }
        if octet != "0" && octet.starts_with('0') {
            return None;
        }
        let v: u32 = octet.parse().ok()?;
        if v > 255 {
            return None;
        }
        out = (out << 8) | v;
    }
    if count != 4 {
        return None;
    }
    Some(out)
}

/// `IPv4Address(str)`.
fn v4_address(s: &str) -> Option<u32> {
    if s.contains('/') {
        return None;
    }
    v4_int(s)
}

fn hextet(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// `_BaseV6._ip_int_from_string`.
fn v6_int(s: &str) -> Option<u128> {
    if s.is_empty() {
        return None;
    }
    let mut parts: Vec<Cow<'_, str>> = s.split(':').map(Cow::Borrowed).collect();
    if parts.len() < 3 {
        return None;
    }
    if parts.last().is_some_and(|p| p.contains('.')) {
        let v4 = v4_address(&parts.pop()?)?;
        parts.push(Cow::Owned(format!("{:x}", (v4 >> 16) & 0xFFFF)));
        parts.push(Cow::Owned(format!("{:x}", v4 & 0xFFFF)));
    }
    if parts.len() > 9 {
        return None;
    }
    let len = parts.len();
    let mut skip: Option<usize> = None;
    for (i, p) in parts.iter().enumerate().take(len - 1).skip(1) {
        if p.is_empty() {
            if skip.is_some() {
                return None;
            }
            skip = Some(i);
        }
    }
    let (parts_hi, parts_lo, skipped) = match skip {
        Some(si) => {
            let mut hi = si;
            let mut lo = len - si - 1;
            if parts[0].is_empty() {
                hi -= 1;
                if hi != 0 {
                    return None;
                }
            }
            if parts[len - 1].is_empty() {
                lo -= 1;
                if lo != 0 {
                    return None;
                }
            }
            let skipped = 8i64 - (hi + lo) as i64;
            if skipped < 1 {
                return None;
            }
            (hi, lo, skipped as u32)
        }
        None => {
            if len != 8 || parts[0].is_empty() || parts[len - 1].is_empty() {
                return None;
            }
            (len, 0, 0)
        }
    };
    let mut ip: u128 = 0;
    for p in &parts[..parts_hi] {
        ip = (ip << 16) | u128::from(hextet(p)?);
    }
    if skipped > 0 {
        ip = ip.checked_shl(16 * skipped).unwrap_or(0);
    }
    for p in &parts[len - parts_lo..] {
        ip = (ip << 16) | u128::from(hextet(p)?);
    }
    Some(ip)
}

/// `IPv6Address(str)`: scope id allowed (and dropped).
fn v6_address(s: &str) -> Option<u128> {
    if s.contains('/') {
        return None;
    }
    let addr = match s.split_once('%') {
        None => s,
        Some((addr, scope)) => {
            if scope.is_empty() || scope.contains('%') {
                return None;
            }
            addr
        }
    };
    v6_int(addr)
}

/// `ipaddress.ip_address(str)`.
fn ip_address(s: &str) -> Option<IpAddr> {
    if let Some(v4) = v4_address(s) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    v6_address(s).map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
}

/// `_prefix_from_prefix_string`.
fn prefix_from_digits(s: &str, max: u32) -> Option<u32> {
    if !ascii_digits(s) {
        return None;
    }
    let t = s.trim_start_matches('0');
    if t.len() > 3 {
        return None;
    }
    let v: u32 = if t.is_empty() { 0 } else { t.parse().ok()? };
    (v <= max).then_some(v)
}

/// `_prefix_from_ip_int` for 32 bits.
fn v4_prefix_from_int(ip: u32) -> Option<u32> {
    if ip == 0 {
        return Some(0);
    }
    let tz = ip.trailing_zeros();
    let prefix = 32 - tz;
    let leading = ip >> tz;
    let all_ones: u32 = if prefix == 32 { u32::MAX } else { (1u32 << prefix) - 1 };
    (leading == all_ones).then_some(prefix)
}

fn v4_mask(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn v6_mask(prefix: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4 { addr: u32, mask: u32, prefix: u32 },
    V6 { addr: u128, mask: u128, prefix: u32 },
}

/// `ipaddress.ip_network(s, strict=False)`.
fn ip_network(s: &str) -> Option<Net> {
    let mut split = s.split('/');
    let addr = split.next()?;
    let mask = split.next();
    if split.next().is_some() {
        return None;
    }
    // IPv4Network
    if let Some(a) = v4_address(addr) {
        let prefix = match mask {
            None => Some(32),
            Some(m) => prefix_from_digits(m, 32).or_else(|| {
                let n = v4_int(m)?;
                v4_prefix_from_int(n).or_else(|| v4_prefix_from_int(!n))
            }),
        };
        if let Some(prefix) = prefix {
            let mask = v4_mask(prefix);
            return Some(Net::V4 { addr: a & mask, mask, prefix });
        }
    }
    // IPv6Network
    let a = v6_address(addr)?;
    let prefix = match mask {
        None => 128,
        Some(m) => prefix_from_digits(m, 128)?,
    };
    let mask = v6_mask(prefix);
    Some(Net::V6 { addr: a & mask, mask, prefix })
}

fn net_contains(nets: &[Net], ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            nets.iter().any(|net| matches!(*net, Net::V4 { addr, mask, .. } if n & mask == addr))
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            nets.iter().any(|net| matches!(*net, Net::V6 { addr, mask, .. } if n & mask == addr))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Networks {
    nets: Vec<Net>,
}

impl Networks {
    /// Errors where `compile_policy` / `parse_networks` raise ConfigError.
    pub fn parse(cidrs: &[String]) -> Result<Networks, String> {
        let mut nets = Vec::with_capacity(cidrs.len());
        for cidr in cidrs {
            let net = ip_network(py_strip(cidr))
                .ok_or_else(|| format!("allowed_cidrs: {cidr:?} is not a valid IP network"))?;
            // policy._network: ::ffff:a.b.c.d/n (n >= 96) means a.b.c.d/(n-96)
            let net = match net {
                Net::V6 { addr, prefix, .. } if prefix >= 96 && addr >> 32 == 0xFFFF => {
                    let p = prefix - 96;
                    let mask = v4_mask(p);
                    Net::V4 { addr: (addr as u32) & mask, mask, prefix: p }
                }
                other => other,
            };
            nets.push(net);
        }
        Ok(Networks { nets })
    }

    /// No networks listed: every address is allowed (for allowlists).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        net_contains(&self.nets, normalise(ip))
    }
}

/// `ClientIpResolver`: the client address of a request from socket peer `peer`.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<Net>,
}

/// `clientip.normalise_ip`: brackets, zone id and (IPv4) port allowed; mapped IPv6 -> IPv4.
fn normalise_text(text: &str) -> Option<IpAddr> {
    let mut t = py_strip(text).trim_matches('"');
    if let Some(rest) = t.strip_prefix('[') {
        t = match rest.find(']') {
            Some(i) => &rest[..i],
            None => rest,
        };
    } else if t.matches(':').count() == 1 {
        t = t.split(':').next().unwrap_or("");
    }
    let t = t.split('%').next().unwrap_or("");
    ip_address(t).map(normalise)
}

fn latin1(v: &[u8]) -> String {
    v.iter().map(|&b| b as char).collect()
}

impl ClientIpResolver {
    pub fn new(trusted_proxies: &[String]) -> Result<ClientIpResolver, String> {
        let mut trusted = Vec::with_capacity(trusted_proxies.len());
        for cidr in trusted_proxies {
            trusted.push(
                ip_network(py_strip(cidr))
                    .ok_or_else(|| format!("trusted_proxies: {cidr:?} is not a CIDR or address"))?,
            );
        }
        Ok(ClientIpResolver { trusted })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        net_contains(&self.trusted, ip)
    }

    /// `resolve`: `Err(())` where Python raises BadForwarding. `x_forwarded_for` and
    /// `forwarded` are the raw values of every such header, in order.
    pub fn resolve(
        &self,
        peer: IpAddr,
        x_forwarded_for: &[&[u8]],
        forwarded: &[&[u8]],
    ) -> Result<IpAddr, ()> {
        let ip = normalise(peer);
        if !self.is_trusted(ip) || (x_forwarded_for.is_empty() && forwarded.is_empty()) {
            return Ok(ip);
        }
        let mut from_xff = None;
        if !x_forwarded_for.is_empty() {
            let mut chain: Vec<String> = Vec::new();
            for v in x_forwarded_for {
                for p in latin1(v).split(',') {
                    let p = py_strip(p);
                    if !p.is_empty() {
                        chain.push(p.to_string());
                    }
                }
            }
            from_xff = Some(self.walk(&chain, ip)?);
        }
        let mut from_fwd = None;
        if !forwarded.is_empty() {
            let mut chain: Vec<String> = Vec::new();
            for v in forwarded {
                for element in latin1(v).split(',') {
                    let mut found: Option<&str> = None;
                    for pair in element.split(';') {
                        let pair = py_strip(pair);
                        let (name, val) = pair.split_once('=').unwrap_or((pair, ""));
                        if py_strip(name).eq_ignore_ascii_case("for") {
                            found = Some(py_strip(val));
                        }
                    }
                    chain.push(found.ok_or(())?.to_string());
                }
            }
            from_fwd = Some(self.walk(&chain, ip)?);
        }
        match (from_xff, from_fwd) {
            (Some(a), Some(b)) if a != b => Err(()),
            (Some(a), _) => Ok(a),
            (None, Some(b)) => Ok(b),
            (None, None) => Ok(ip),
        }
    }

    fn walk(&self, chain: &[String], peer: IpAddr) -> Result<IpAddr, ()> {
        let mut client = peer;
        for entry in chain.iter().rev() {
            let hop = normalise_text(entry).ok_or(())?;
            client = hop;
            if !self.is_trusted(hop) {
                return Ok(hop);
            }
        }
        Ok(client)
    }
}

/// `ipaddress.ip_address` on text, IPv4-mapped IPv6 normalised (for tests and the probe).
pub fn parse_address(text: &str) -> Option<IpAddr> {
    ip_address(text).map(normalise)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(v: &[&str]) -> Result<Networks, String> {
        Networks::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn addresses_like_python() {
        assert_eq!(ip_address("1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(ip_address("01.2.3.4"), None);
        assert_eq!(ip_address("1.2.3"), None);
        assert_eq!(ip_address("::"), Some(ip("::")));
        assert_eq!(ip_address("::1.2.3.4"), Some(ip("::1.2.3.4")));
        assert_eq!(ip_address("fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(ip_address("fe80::1%"), None);
        assert_eq!(ip_address("1::2::3"), None);
        assert_eq!(ip_address(":1::"), None);
        assert_eq!(ip_address("1:2:3:4:5:6:7::"), Some(ip("1:2:3:4:5:6:7:0")));
        assert_eq!(ip_address("1:2:3:4:5:6:7:8::"), None);
        assert_eq!(ip_address("1:2:3:4:5:6:7:8"), Some(ip("1:2:3:4:5:6:7:8")));
        assert_eq!(ip_address("12345::"), None);
        assert_eq!(ip_address(" 1.2.3.4"), None);
    }

    #[test]
    fn networks_like_python() {
        let n = nets(&["10.0.0.1/8", " 192.168.1.0/255.255.255.0\u{1c}", "172.16.0.0/0.0.255.255"]).unwrap();
        assert!(n.contains(ip("10.9.9.9")));
        assert!(n.contains(ip("::ffff:10.1.1.1")));
        assert!(n.contains(ip("192.168.1.77")));
        assert!(n.contains(ip("172.16.200.1")));
        assert!(!n.contains(ip("172.17.0.1")));
        let m = nets(&["::ffff:10.0.0.0/104"]).unwrap();
        assert!(m.contains(ip("10.1.2.3")));
        assert!(!m.contains(ip("11.1.2.3")));
        let k = nets(&["::ffff:0:0/95"]).unwrap();
        assert!(!k.contains(ip("10.1.2.3")));
        assert!(nets(&["10.0.0.0/33"]).is_err());
        assert!(nets(&["10.0.0.0/255.0.255.0"]).is_err());
        assert!(nets(&["10.0.0.0/008"]).is_ok());
        assert!(nets(&["2001:db8::/0129"]).is_err());
        assert!(nets(&["1.2.3.4/"]).is_err());
        assert!(nets(&["1/2/3"]).is_err());
        assert!(nets(&[]).unwrap().is_empty());
    }

    #[test]
    fn resolver() {
        let r = ClientIpResolver::new(&["10.0.0.0/8".to_string(), "2001:db8::/32".to_string()]).unwrap();
        // untrusted peer: headers ignored
        assert_eq!(r.resolve(ip("1.1.1.1"), &[b"2.2.2.2"], &[]), Ok(ip("1.1.1.1")));
        assert_eq!(r.resolve(ip("::ffff:1.1.1.1"), &[], &[]), Ok(ip("1.1.1.1")));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"3.3.3.3, 2.2.2.2, 10.0.0.2"], &[]), Ok(ip("2.2.2.2")));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"10.1.1.1", b"10.0.0.2"], &[]), Ok(ip("10.1.1.1")));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b" , "], &[]), Ok(ip("10.0.0.1")));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"nope"], &[]), Err(()));
        assert_eq!(
            r.resolve(ip("10.0.0.1"), &[], &[b"for=\"[2001:db8::1]:80\", For=5.5.5.5:443;proto=https"]),
            Ok(ip("5.5.5.5"))
        );
        assert_eq!(r.resolve(ip("10.0.0.1"), &[], &[b"by=1.1.1.1"]), Err(()));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[], &[b""]), Err(()));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"4.4.4.4"], &[b"for=4.4.4.4"]), Ok(ip("4.4.4.4")));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"4.4.4.4"], &[b"for=5.5.5.5"]), Err(()));
        assert_eq!(r.resolve(ip("10.0.0.1"), &[b"fe80::1%eth0"], &[]), Ok(ip("fe80::1")));
    }
}
