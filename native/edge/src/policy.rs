//! A key's compiled allowlists and `domain.policy.check_request` minus the key state (the
//! caller checks revoked/expired): IP, endpoint (with `_clean_path` when restricted), model.

use crate::glob::Matcher;
use crate::ip::Networks;
use crate::paths::clean_path;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub models: Matcher,
    pub endpoints: Matcher,
    pub networks: Networks,
}

impl KeyPolicy {
    /// `compile_policy`; Err where it raises ConfigError (such a key is never usable).
    pub fn compile(models: &[String], endpoints: &[String], cidrs: &[String]) -> Result<KeyPolicy, String> {
        // same order as Python: networks, then models, then endpoints
        let networks = Networks::parse(cidrs)?;
        let models = Matcher::build_kind("allowed_models", models)?;
        let endpoints = Matcher::build_kind("allowed_endpoints", endpoints)?;
        Ok(KeyPolicy { models, endpoints, networks })
    }

    /// True when `check_request` would not raise Forbidden for this ip, path and model.
    pub fn allows(&self, client_ip: IpAddr, path: &str, model: Option<&str>) -> bool {
        if !self.networks.is_empty() && !self.networks.contains(client_ip) {
            return false;
        }
        if !self.endpoints.allow_all() && (!clean_path(path) || !self.endpoints.allows(path)) {
            return false;
        }
        match model {
            Some(m) => self.models.allows(m),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn allows() {
        let p = KeyPolicy::compile(&s(&["gpt-4o*"]), &s(&["/v1/chat/*"]), &s(&["10.0.0.0/8"])).unwrap();
        let ok: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let bad: IpAddr = "11.1.2.3".parse().unwrap();
        assert!(p.allows(ok, "/v1/chat/completions", Some("gpt-4o-mini")));
        assert!(p.allows(mapped, "/v1/chat/completions", None));
        assert!(!p.allows(bad, "/v1/chat/completions", None));
        assert!(!p.allows(ok, "/v1/chat/../files", None));
        assert!(!p.allows(ok, "/v1/chat//x", None));
        assert!(!p.allows(ok, "/v1/embeddings", None));
        assert!(!p.allows(ok, "/v1/chat/completions", Some("o1")));
        let open = KeyPolicy::compile(&[], &[], &[]).unwrap();
        assert!(open.allows(bad, "/v1/../x", Some("anything")));
        assert!(KeyPolicy::compile(&s(&["a b"]), &[], &[]).is_err());
        assert!(KeyPolicy::compile(&[], &[], &s(&["x"])).is_err());
    }
}
