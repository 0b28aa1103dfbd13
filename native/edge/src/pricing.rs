//! `keyguard.domain.pricing`: the price table (`PriceTable.from_mapping`, lookup by exact name
//! then longest listed prefix, `default` otherwise), `ModelPrice.cost_nano` (Python's round():
//! half to even) and `usage_from_response`.

/// Token counts reported by the upstream (`TokenUsage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub total: u64,
}

pub struct PriceTable {
    _private: (),
}

impl PriceTable {
    /// From the JSON shape of `keyguard/data/prices.json` (the supervisor sends the effective,
    /// merged table); Err where `PriceTable.from_mapping` raises.
    pub fn from_json(value: &serde_json::Value) -> Result<PriceTable, String> {
        let _ = value;
        todo!()
    }

    /// `PriceTable.cost_nano(model, input, output, cached)`.
    pub fn cost_nano(&self, model: Option<&str>, input: u64, output: u64, cached: u64) -> u64 {
        let _ = (model, input, output, cached);
        todo!()
    }
}

/// `usage_from_response(usage)`.
pub fn usage_from_response(usage: &serde_json::Value) -> Option<TokenUsage> {
    let _ = usage;
    todo!()
}
