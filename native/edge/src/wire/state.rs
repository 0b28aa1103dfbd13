//! The current State, compiled once per snapshot and read per request.

use kgpolicy::keys::Verifier;
use kgpolicy::policy::KeyPolicy;
use kgpolicy::protocol::{KeyEntry, Route, State};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub struct CKey {
    pub entry: KeyEntry,
    pub digests: Vec<([u8; 32], Option<f64>)>,
    /// None: the key's policy does not compile (never served natively)
    pub policy: Option<KeyPolicy>,
}

pub struct Compiled {
    pub native_limits: bool,
    pub verifier: Verifier,
    pub keys: HashMap<String, CKey>,
    pub routes: HashMap<String, Arc<Route>>,
    /// every upstream secret the routes carry (for error-body redaction)
    pub known: Arc<Vec<String>>,
    /// the routes' upstream keys (the bearer secrets), as the supervisor's redaction registry
    /// holds them: the audit rows are redacted under these
    pub audit_known: Arc<Vec<String>>,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks(2).map(|p| Some(val(p[0])? << 4 | val(p[1])?)).collect()
}

pub fn compile(state: State) -> Result<Compiled, String> {
    let server_key = unhex(&state.server_key).ok_or("server_key is not hex")?;
    let verifier = Verifier::new(&server_key);
    let mut keys = HashMap::with_capacity(state.keys.len());
    for entry in state.keys {
        let mut digests = Vec::with_capacity(entry.digests.len());
        for (hex, until) in &entry.digests {
            match unhex(hex) {
                Some(d) if d.len() == 32 => {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(&d);
                    digests.push((a, *until));
                }
                _ => eprintln!("keyguard-edge: key {}: a digest is not 32 bytes of hex: ignored", entry.id),
            }
        }
        let policy = match KeyPolicy::compile(&entry.models, &entry.endpoints, &entry.cidrs) {
            Ok(p) => Some(p),
            Err(_) => {
                eprintln!("keyguard-edge: key {}: policy does not compile: served by the core", entry.id);
                None
            }
        };
        keys.insert(entry.id.clone(), CKey { entry, digests, policy });
    }
    let mut known = Vec::new();
    let mut audit_known: Vec<String> = Vec::new();
    let mut routes = HashMap::with_capacity(state.routes.len());
    for route in state.routes {
        for (name, value) in &route.auth {
            if name.eq_ignore_ascii_case("authorization") {
                if let Some(secret) = value.strip_prefix("Bearer ") {
                    if !secret.is_empty() && !audit_known.iter().any(|k| k == secret) {
                        audit_known.push(secret.to_string());
                    }
                }
            }
            known.push(value.clone());
            for prefix in ["Bearer ", "bearer "] {
                if let Some(rest) = value.strip_prefix(prefix) {
                    known.push(rest.to_string());
                }
            }
        }
        routes.insert(route.name.clone(), Arc::new(route));
    }
    known.retain(|k| !k.is_empty());
    Ok(Compiled {
        native_limits: state.native_limits,
        verifier,
        keys,
        routes,
        known: Arc::new(known),
        audit_known: Arc::new(audit_known),
    })
}

/// The current snapshot: swapped whole by the control thread, cloned (an Arc) per request.
#[derive(Default)]
pub struct Current(RwLock<Option<Arc<Compiled>>>);

impl Current {
    pub fn get(&self) -> Option<Arc<Compiled>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, c: Compiled) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
    }
}
