//! `keyguard.domain.pricing`: the price table (`PriceTable.from_mapping`, lookup by exact name
//! then longest listed prefix, `default` otherwise), `ModelPrice.cost_nano` (Python's round():
//! half to even) and `usage_from_response`.
//!
//! Prices are read as `float(value)` reads them: JSON numbers (integers converted to the nearest
//! float), booleans (1.0 / 0.0) and strings in Python's float syntax (surrounding whitespace,
//! `_` between digits, `inf`/`nan` in any case); anything else is an error, as in Python.
//!
//! Deliberate differences, all on the side of `Err` (the supervisor then prices in Python, so
//! the figures stay Python's): a table holding a NaN or infinite price anywhere (Python's
//! `min`/`max` check lets some through, and its `cost_nano` then raises), a price above 1e290
//! USD per 1M tokens (where Python's `cost_nano` can overflow to infinity and raise), an
//! integer price of 2**63 or more (the text reader clamps such integers), and a price string
//! with non-ASCII digits (which Python's `float()` would read).
//!
//! Floats: serde_json (built without `float_roundtrip`) reads some float texts 1 ulp off
//! (more than 2**53 in the significand, or a decimal exponent beyond 22). [`PriceTable::
//! from_json_text`] reads the table's text with the crate's Python-compatible reader (floats
//! correctly rounded, as `json.loads`) and is exact; [`PriceTable::from_json`] cannot know the
//! text its `Value` came from, so it refuses (`Err`) a float price unless the text Python
//! writes for it (`repr`) is one serde_json reads exactly.

use std::collections::HashMap;

use serde_json::Value;

use crate::sniff::{Mode, Parser};

/// `pricing.MAX_TOKENS`: the most tokens one request is counted for.
pub const MAX_TOKENS: u64 = 1 << 32;
/// `pricing.MAX_COST_NANO`: the most nano-USD one request is charged.
pub const MAX_COST_NANO: u64 = 1 << 53;
/// prices above this are refused (see the module docs)
const MAX_PRICE: f64 = 1e290;

/// Token counts reported by the upstream (`TokenUsage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub total: u64,
}

/// `ModelPrice`: USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ModelPrice {
    input: f64,
    cached_input: f64,
    output: f64,
}

impl ModelPrice {
    /// `ModelPrice.from_mapping(name, data)`.
    fn from_value(name: &str, data: &Value, exact: bool) -> Result<ModelPrice, String> {
        let bad = || format!("price of {name:?}: needs numeric input/output");
        let obj = data.as_object().ok_or_else(bad)?;
        let num = |v: &Value| -> Result<f64, String> {
            if !exact && !serde_reads_exactly(v) {
                return Err(format!("price of {name:?}: a float serde_json may have misread"));
            }
            py_float(v).ok_or_else(bad)
        };
        let inp = num(obj.get("input").ok_or_else(bad)?)?;
        let out = match obj.get("output") {
            Some(v) => num(v)?,
            None => 0.0,
        };
        let cached = match obj.get("cached_input") {
            Some(v) => num(v)?,
            None => inp,
        };
        for p in [inp, out, cached] {
            // NaN, negative, infinite: Python raises here or in cost_nano; also the huge ones
            if !(0.0..=MAX_PRICE).contains(&p) {
                return Err(format!("price of {name:?}: prices must be finite and not negative"));
            }
        }
        Ok(ModelPrice { input: inp, cached_input: cached, output: out })
    }

    /// `ModelPrice.cost_nano(input_tokens, output_tokens, cached_tokens)`.
    fn cost_nano(&self, input: u64, output: u64, cached: u64) -> u64 {
        let inp = input.min(MAX_TOKENS);
        let cached = cached.min(inp);
        let fresh = inp - cached;
        let out = output.min(MAX_TOKENS);
        let a = ((fresh as f64 * self.input + cached as f64 * self.cached_input) * 1000.0).round_ties_even();
        let b = (out as f64 * self.output * 1000.0).round_ties_even();
        // both finite and >= 0 (prices are at most MAX_PRICE, tokens at most 2**32)
        let cap = MAX_COST_NANO as f64;
        if a >= cap || b >= cap {
            return MAX_COST_NANO;
        }
        // exact: each is an integer below 2**53
        ((a as u64) + (b as u64)).min(MAX_COST_NANO)
    }
}

pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    default: ModelPrice,
    /// listed names, longest first (`_prefixes`)
    prefixes: Vec<String>,
}

impl PriceTable {
    /// From the JSON shape of `keyguard/data/prices.json` (the supervisor sends the effective,
    /// merged table); Err where `PriceTable.from_mapping` raises.
    ///
    /// Floats that serde_json may have read inexactly are refused (see the module docs):
    /// prefer [`PriceTable::from_json_text`].
    pub fn from_json(value: &serde_json::Value) -> Result<PriceTable, String> {
        Self::build(value, false)
    }

    /// [`PriceTable::from_json`] from the table's JSON text, read as `json.loads` reads it
    /// (floats correctly rounded): exact for every float. Err for text that is not JSON.
    pub fn from_json_text(text: &str) -> Result<PriceTable, String> {
        let mut p = Parser::new(text.as_bytes(), Mode { dup_model: false, allow_nan: true });
        p.ws();
        let value = p.value(true, None).map_err(|_| "prices: not JSON".to_string())?;
        p.ws();
        if !p.at_end() {
            return Err("prices: not JSON".to_string());
        }
        Self::build(&value, true)
    }

    fn build(value: &Value, exact: bool) -> Result<PriceTable, String> {
        let doc = value.as_object().ok_or("prices: not an object")?;
        let models = match doc.get("models") {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err("prices: 'models' must be an object".to_string()),
        };
        let default = match doc.get("default") {
            Some(d @ Value::Object(_)) => d,
            _ => return Err("prices: 'default' must be an object".to_string()),
        };
        let mut table = HashMap::new();
        let mut prefixes = Vec::new();
        for (name, v) in models.into_iter().flatten() {
            table.insert(name.clone(), ModelPrice::from_value(name, v, exact)?);
            prefixes.push(name.clone());
        }
        // longest first (Python's len: characters); equal lengths never both match a name
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.chars().count()));
        let default = ModelPrice::from_value("default", default, exact)?;
        Ok(PriceTable { models: table, default, prefixes })
    }

    /// `PriceTable.price(model)`: exact name, then the longest listed `prefix-`, else default.
    fn price(&self, model: Option<&str>) -> &ModelPrice {
        let model = match model {
            Some(m) if !m.is_empty() => m,
            _ => return &self.default,
        };
        if let Some(p) = self.models.get(model) {
            return p;
        }
        for prefix in &self.prefixes {
            if model.len() > prefix.len()
                && model.starts_with(prefix.as_str())
                && model.as_bytes()[prefix.len()] == b'-'
            {
                return &self.models[prefix];
            }
        }
        &self.default
    }

    /// `PriceTable.cost_nano(model, input, output, cached)`.
    pub fn cost_nano(&self, model: Option<&str>, input: u64, output: u64, cached: u64) -> u64 {
        self.price(model).cost_nano(input, output, cached)
    }
}

/// `usage_from_response(usage)`.
pub fn usage_from_response(usage: &serde_json::Value) -> Option<TokenUsage> {
    let usage = usage.as_object()?;
    let (mut inp, out, details) = if usage.contains_key("input_tokens") || usage.contains_key("output_tokens") {
        (
            count(usage.get("input_tokens")),
            count(usage.get("output_tokens")),
            usage.get("input_tokens_details"),
        )
    } else if usage.contains_key("prompt_tokens") || usage.contains_key("completion_tokens") {
        (
            count(usage.get("prompt_tokens")),
            count(usage.get("completion_tokens")),
            usage.get("prompt_tokens_details"),
        )
    } else {
        return None;
    };
    let cached = match details {
        Some(Value::Object(d)) => count(d.get("cached_tokens")),
        _ => 0,
    };
    if out == 0 && inp == 0 {
        inp = count(usage.get("total_tokens"));
    }
    Some(TokenUsage { input: inp, output: out, cached, total: inp + out })
}

/// `pricing._int`: a JSON integer (not a bool, not a float) above 0, at most MAX_TOKENS; else 0.
fn count(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v > 0 => v.min(MAX_TOKENS),
            _ => 0, // negative integers, floats
        },
        _ => 0,
    }
}

/// Python's `float(value)` for a JSON value; `None` where it raises.
fn py_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                // from 2**63 on, the text reader may have clamped a bigger integer
                (u < 1 << 63).then_some(u as f64)
            } else if let Some(i) = n.as_i64() {
                Some(i as f64)
            } else {
                n.as_f64()
            }
        }
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => py_float_str(s),
        _ => None,
    }
}

/// Whether serde_json reads the text Python writes for this value (`repr`) exactly: an
/// integer, or a float whose repr has a significand of at most 2**53 and a decimal exponent
/// within 22 (one exact power of ten, one rounding: Clinger's fast path, which serde_json's
/// `f64_from_parts` is).
fn serde_reads_exactly(v: &Value) -> bool {
    let f = match v {
        Value::Number(n) if n.is_f64() => n.as_f64().unwrap_or(f64::NAN),
        _ => return true,
    };
    if !f.is_finite() {
        return false;
    }
    let mut text = Vec::new();
    crate::audit::py_float_repr(&mut text, f);
    let text = String::from_utf8_lossy(&text);
    let text = text.trim_start_matches('-');
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let Ok(mut exp) = exp.parse::<i32>() else { return false };
    let mut sig: u64 = 0;
    let mut seen_dot = false;
    for c in mantissa.bytes() {
        match c {
            b'.' => seen_dot = true,
            b'0'..=b'9' => {
                sig = match sig.checked_mul(10).and_then(|s| s.checked_add(u64::from(c - b'0'))) {
                    Some(s) if s <= 1 << 53 => s,
                    _ => return false,
                };
                if seen_dot {
                    exp -= 1;
                }
            }
            _ => return false,
        }
    }
    sig == 0 || exp.abs() <= 22
}

/// Python's whitespace (`str.isspace`): Unicode White_Space plus U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `float(text)` for text in ASCII (after the surrounding whitespace): sign, digits with `_`
/// only between two digits, optional fraction and exponent, or inf / infinity / nan.
fn py_float_str(text: &str) -> Option<f64> {
    let s = text.trim_matches(py_space);
    if s.is_empty() || !s.is_ascii() {
        return None;
    }
    let b = s.as_bytes();
    let mut plain = String::with_capacity(s.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let around = i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
            if !around {
                return None;
            }
        } else {
            plain.push(c as char);
        }
    }
    let body = plain.strip_prefix(['+', '-']).unwrap_or(&plain);
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" || lower == "nan" {
        let v = if lower == "nan" { f64::NAN } else { f64::INFINITY };
        return Some(if plain.starts_with('-') { -v } else { v });
    }
    if !decimal_syntax(body.as_bytes()) {
        return None;
    }
    plain.parse::<f64>().ok()
}

/// `digits [. digits*] | . digits`, then optionally `e|E [sign] digits`.
fn decimal_syntax(b: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> PriceTable {
        PriceTable::from_json(&json!({
            "default": {"input": 15.0, "cached_input": 7.5, "output": 60.0},
            "models": {
                "gpt-4o": {"input": 2.5, "cached_input": 1.25, "output": 10.0},
                "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                "o1": {"input": 15, "output": "6_0.5"},
                "emb": {"input": 0.02},
            }
        }))
        .unwrap()
    }

    #[test]
    fn lookup_exact_then_longest_prefix_then_default() {
        let t = table();
        assert_eq!(t.price(Some("gpt-4o")).input, 2.5);
        assert_eq!(t.price(Some("gpt-4o-mini-2024")).input, 0.15);
        assert_eq!(t.price(Some("gpt-4o-2024-08-06")).input, 2.5);
        assert_eq!(t.price(Some("gpt-4omini")).input, 15.0);
        assert_eq!(t.price(Some("")).input, 15.0);
        assert_eq!(t.price(None).input, 15.0);
        assert_eq!(t.price(Some("o1")).output, 60.5);
        assert_eq!(t.price(Some("o1")).cached_input, 15.0);
        assert_eq!(t.price(Some("emb")).output, 0.0);
    }

    #[test]
    fn cost_rounds_half_even_and_caps() {
        let t = table();
        // 1 token at 2.5 USD/1M = 2500 nano; cached at 1.25 = 1250
        assert_eq!(t.cost_nano(Some("gpt-4o"), 1, 0, 0), 2500);
        assert_eq!(t.cost_nano(Some("gpt-4o"), 1, 0, 1), 1250);
        assert_eq!(t.cost_nano(Some("gpt-4o"), 1, 0, 5), 1250); // cached capped at input
        // 0.0005 nano-USD per token * 1000: 0.5 rounds to 0, 1.5 to 2
        let half = PriceTable::from_json(&json!({"default": {"input": 0.0005, "output": 0.0015}})).unwrap();
        assert_eq!(half.cost_nano(None, 1, 0, 0), 0);
        assert_eq!(half.cost_nano(None, 0, 1, 0), 2);
        assert_eq!(half.cost_nano(None, 3, 0, 0), 2); // 1.5 -> 2
        let dear = PriceTable::from_json(&json!({"default": {"input": 1e9, "output": 1e9}})).unwrap();
        assert_eq!(dear.cost_nano(None, u64::MAX, u64::MAX, 0), MAX_COST_NANO);
        assert_eq!(t.cost_nano(None, u64::MAX, 0, 0), (MAX_TOKENS as f64 * 15.0 * 1000.0) as u64);
    }

    #[test]
    fn from_json_errors() {
        for bad in [
            json!([]),
            json!({"models": {}}),
            json!({"default": 1}),
            json!({"default": {"input": 1}, "models": []}),
            json!({"default": {"output": 1}}),
            json!({"default": {"input": null}}),
            json!({"default": {"input": 1, "output": null}}),
            json!({"default": {"input": -1}}),
            json!({"default": {"input": "nan"}}),
            json!({"default": {"input": 1, "output": "inf"}}),
            json!({"default": {"input": "1__0"}}),
            json!({"default": {"input": "_1"}}),
            json!({"default": {"input": "1e"}}),
            json!({"default": {"input": "."}}),
            json!({"default": {"input": 1e300}}),
            json!({"default": {"input": 1}, "models": {"x": [1]}}),
        ] {
            assert!(PriceTable::from_json(&bad).is_err(), "{bad}");
        }
        let ok = PriceTable::from_json(&json!({"default": {"input": " 1_0.5e0_1\u{2003}", "output": true}})).unwrap();
        assert_eq!((ok.default.input, ok.default.output, ok.default.cached_input), (105.0, 1.0, 105.0));
        assert!(PriceTable::from_json(&json!({"default": {"input": "-0.0"}})).is_ok());
    }

    #[test]
    fn text_reader_is_exact_and_value_reader_refuses_doubt() {
        let text = r#"{"default": {"input": 2.408135124375925e+300, "output": 0.30000000000000004}}"#;
        let exact = PriceTable::from_json_text(text);
        assert!(exact.is_err()); // 2.4e300 is above MAX_PRICE
        let text = r#"{"default": {"input": 1.2345678901234567, "output": 0.30000000000000004}}"#;
        let t = PriceTable::from_json_text(text).unwrap();
        assert_eq!(t.default.input, "1.2345678901234567".parse::<f64>().unwrap());
        assert_eq!(t.default.output, 0.1 + 0.2);
        assert!(PriceTable::from_json(&serde_json::from_str(text).unwrap()).is_err());
        let plain = r#"{"default": {"input": 2.5, "output": 1e-05, "cached_input": 150.0}, "models": {"a": {"input": 15}}}"#;
        assert!(PriceTable::from_json(&serde_json::from_str(plain).unwrap()).is_ok());
        assert!(PriceTable::from_json_text(plain).is_ok());
        assert!(PriceTable::from_json_text("{\"default\": {\"input\": 1}} x").is_err());
        assert!(PriceTable::from_json_text(r#"{"default": {"input": 99999999999999999999999}}"#).is_err());
        assert!(PriceTable::from_json_text(r#"{"default": {"input": NaN}}"#).is_err());
    }

    #[test]
    fn serde_exact_zone() {
        for (v, want) in [
            (0.075, true),
            (1e-5, true),
            (150.0, true),
            (1e22, true),
            (1e23, false),
            (1e-23, false),
            (0.1 + 0.2, false),
            (123456789012345.0, true),
        ] {
            assert_eq!(serde_reads_exactly(&json!(v)), want, "{v}");
        }
        assert!(serde_reads_exactly(&json!(12)));
    }

    #[test]
    fn usage_shapes() {
        let u = |v: Value| usage_from_response(&v);
        assert_eq!(
            u(json!({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}})),
            Some(TokenUsage { input: 10, output: 5, cached: 4, total: 15 })
        );
        assert_eq!(
            u(json!({"input_tokens": 7, "output_tokens": true, "input_tokens_details": {"cached_tokens": 9}})),
            Some(TokenUsage { input: 7, output: 0, cached: 9, total: 7 })
        );
        assert_eq!(
            u(json!({"prompt_tokens": 0, "total_tokens": 12})),
            Some(TokenUsage { input: 12, output: 0, cached: 0, total: 12 })
        );
        assert_eq!(
            u(json!({"prompt_tokens": -3, "completion_tokens": 2.0, "total_tokens": u64::MAX})),
            Some(TokenUsage { input: MAX_TOKENS, output: 0, cached: 0, total: MAX_TOKENS })
        );
        assert_eq!(u(json!({"total_tokens": 3})), None);
        assert_eq!(u(json!([1])), None);
    }
}
