//! `kgpolicy`: the pure decisions of keyguard's native data plane, each a port of the Python
//! function named in its module's docs (the Python code is the reference; tests/edge checks
//! both give the same answers). No I/O here: the wire lives in `src/wire` (the binary).

pub mod protocol;

// ports of keyguard.domain.keys / vault.auth, domain.policy, gateway.clientip, gateway.paths,
// gateway.throttle, domain.limits (rpm + concurrency)
pub mod glob;
pub mod ip;
pub mod keys;
pub mod limits;
pub mod paths;
pub mod policy;
pub mod throttle;

// ports of gateway.bodysniff (JSON), gateway.headers, gateway.upstream_errors,
// gateway.usage (JSON bodies), gateway.errors
pub mod errors;
pub mod headers;
pub mod inflate;
pub mod scrub;
pub mod sniff;
pub mod usage;

// ports of the gateway.request audit rendering (domain.audit.UniformEncoder) and of
// domain.pricing, so the supervisor only chains, stores and counts
pub mod audit;
pub mod pricing;
