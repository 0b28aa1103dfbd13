//! `keyguard.domain.policy._Matcher`: exact names plus fnmatch-style globs (Python's
//! `fnmatch.translate` semantics: case-sensitive, `*` matches anything including `/`, `?` one
//! character, `[seq]`, `[!seq]`); an empty list allows everything.
//!
//! Each glob is translated exactly as CPython 3.11's `fnmatch.translate` does (including its
//! range clean-up and escaping of `[...]` sets), and the character set it emits is read with
//! the rules of `re`'s set parser. `translate` joins `*`-separated fixed-width pieces with
//! atomic lazy groups, which matches the same strings as plain wildcard matching (every piece
//! has a fixed width), so the matcher is the classic linear glob walk. A set `re` would
//! reject, or one this reader does not understand, makes `build` fail: stricter, never wider.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Star,
    /// `.` under `(?s)`: any one character
    Any,
    Lit(char),
    /// `[...]`: inclusive code point ranges, negated for `[^...]`
    Set { negate: bool, ranges: Vec<(char, char)> },
    /// `(?!)`: an empty set, never matches
    Never,
}

impl Tok {
    fn matches(&self, c: char) -> bool {
        match self {
            Tok::Star => true,
            Tok::Any => true,
            Tok::Lit(l) => *l == c,
            Tok::Set { negate, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negate,
            Tok::Never => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    allow_all: bool,
    exact: HashSet<String>,
    globs: Vec<Vec<Tok>>,
}

impl Matcher {
    /// Errors (a message naming the bad entry) where `_Matcher.build` raises ConfigError.
    pub fn build(values: &[String]) -> Result<Matcher, String> {
        Self::build_kind("patterns", values)
    }

    /// `build` with the name of the list in error messages (`allowed_models`, ...).
    pub fn build_kind(kind: &str, values: &[String]) -> Result<Matcher, String> {
        let mut exact = HashSet::new();
        let mut globs = Vec::new();
        for value in values {
            if value.is_empty() || value.chars().any(|c| (c as u32) < 33) {
                return Err(format!("{kind}: {value:?} is not a valid pattern"));
            }
            if value.contains(['*', '?', '[']) {
                let toks = translate(value)
                    .ok_or_else(|| format!("{kind}: {value:?} is not a pattern the edge can match"))?;
                globs.push(toks);
            } else {
                exact.insert(value.clone());
            }
        }
        Ok(Matcher { allow_all: values.is_empty(), exact, globs })
    }

    pub fn allow_all(&self) -> bool {
        self.allow_all
    }

    pub fn allows(&self, value: &str) -> bool {
        if self.allow_all || self.exact.contains(value) {
            return true;
        }
        if self.globs.is_empty() {
            return false;
        }
        let chars: Vec<char> = value.chars().collect();
        self.globs.iter().any(|g| glob_match(g, &chars))
    }
}

/// Whole-string wildcard match of single-character tokens and stars.
fn glob_match(toks: &[Tok], s: &[char]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut back: Option<(usize, usize)> = None; // (token after the last star, text position)
    while i < s.len() {
        if p < toks.len() {
            if toks[p] == Tok::Star {
                p += 1;
                back = Some((p, i));
                continue;
            }
            if toks[p].matches(s[i]) {
                p += 1;
                i += 1;
                continue;
            }
        }
        match back {
            Some((bp, bi)) => {
                p = bp;
                i = bi + 1;
                back = Some((bp, bi + 1));
            }
            None => return false,
        }
    }
    while p < toks.len() && toks[p] == Tok::Star {
        p += 1;
    }
    p == toks.len()
}

/// `fnmatch.translate` (CPython 3.11), as tokens; None where the emitted set is not one this
/// module reads the way `re` does.
fn translate(pattern: &str) -> Option<Vec<Tok>> {
    let pat: Vec<char> = pattern.chars().collect();
    let n = pat.len();
    let mut res: Vec<Tok> = Vec::new();
    let mut i = 0usize;
    while i < n {
        let c = pat[i];
        i += 1;
        match c {
            '*' => {
                if res.last() != Some(&Tok::Star) {
                    res.push(Tok::Star);
                }
            }
            '?' => res.push(Tok::Any),
            '[' => {
                let mut j = i;
                if j < n && pat[j] == '!' {
                    j += 1;
                }
                if j < n && pat[j] == ']' {
                    j += 1;
                }
                while j < n && pat[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    res.push(Tok::Lit('['));
                    continue;
                }
                let mut stuff: Vec<char>;
                if !pat[i..j].contains(&'-') {
                    stuff = escape_backslashes(&pat[i..j]);
                } else {
                    let mut chunks: Vec<Vec<char>> = Vec::new();
                    let mut k = if pat[i] == '!' { i + 2 } else { i + 1 };
                    loop {
                        // pat.find('-', k, j)
                        let found = if k < j { pat[k..j].iter().position(|&x| x == '-').map(|o| k + o) } else { None };
                        let Some(kk) = found else { break };
                        chunks.push(pat[i..kk].to_vec());
                        i = kk + 1;
                        k = kk + 3;
                    }
                    let chunk = if i < j { pat[i..j].to_vec() } else { Vec::new() };
                    if !chunk.is_empty() {
                        chunks.push(chunk);
                    } else {
                        chunks.last_mut()?.push('-');
                    }
                    // remove empty ranges
                    let mut kk = chunks.len().saturating_sub(1);
                    while kk >= 1 {
                        let prev_last = *chunks[kk - 1].last()?;
                        let next_first = *chunks[kk].first()?;
                        if prev_last > next_first {
                            let next = chunks.remove(kk);
                            let prev = &mut chunks[kk - 1];
                            prev.pop();
                            prev.extend_from_slice(&next[1..]);
                        }
                        kk -= 1;
                    }
                    stuff = Vec::new();
                    for (idx, ch) in chunks.iter().enumerate() {
                        if idx > 0 {
                            stuff.push('-');
                        }
                        for &x in ch {
                            match x {
                                '\\' => stuff.extend(['\\', '\\']),
                                '-' => stuff.extend(['\\', '-']),
                                _ => stuff.push(x),
                            }
                        }
                    }
                }
                // escape set operations (&&, ~~ and ||)
                let mut escaped = Vec::with_capacity(stuff.len());
                for &x in &stuff {
                    if matches!(x, '&' | '~' | '|') {
                        escaped.push('\\');
                    }
                    escaped.push(x);
                }
                stuff = escaped;
                i = j + 1;
                if stuff.is_empty() {
                    res.push(Tok::Never);
                } else if stuff == ['!'] {
                    res.push(Tok::Any);
                } else {
                    if stuff[0] == '!' {
                        stuff[0] = '^';
                    } else if stuff[0] == '^' || stuff[0] == '[' {
                        stuff.insert(0, '\\');
                    }
                    res.push(parse_set(&stuff)?);
                }
            }
            _ => res.push(Tok::Lit(c)),
        }
    }
    Some(res)
}

fn escape_backslashes(s: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One source token of `re`'s parser inside a set: a character, or `\` and the next one.
/// Returns (is_escape, char) and advances; None at the end.
fn next_token(s: &[char], pos: &mut usize) -> Option<Result<(bool, char), ()>> {
    let c = *s.get(*pos)?;
    *pos += 1;
    if c != '\\' {
        return Some(Ok((false, c)));
    }
    let Some(&e) = s.get(*pos) else { return Some(Err(())) };
    *pos += 1;
    // translate only ever escapes \ - & ~ | ^ [ ; an escaped ASCII letter or digit would be a
    // class or code in `re`: refuse rather than guess
    if e.is_ascii_alphanumeric() {
        return Some(Err(()));
    }
    Some(Ok((true, e)))
}

/// `re`'s reading of `[` + body + `]` (sre_parse, CPython 3.11), which must end exactly at the
/// closing bracket `translate` appended.
fn parse_set(body: &[char]) -> Option<Tok> {
    let mut s: Vec<char> = body.to_vec();
    s.push(']');
    let mut pos = 0usize;
    let negate = s.first() == Some(&'^');
    if negate {
        pos = 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    loop {
        let (esc, this) = next_token(&s, &mut pos)?.ok()?;
        if !esc && this == ']' && !ranges.is_empty() {
            break;
        }
        let code1 = this;
        if s.get(pos) == Some(&'-') {
            pos += 1;
            let (esc2, that) = next_token(&s, &mut pos)?.ok()?;
            if !esc2 && that == ']' {
                ranges.push((code1, code1));
                ranges.push(('-', '-'));
                break;
            }
            if that < code1 {
                return None; // "bad character range"
            }
            ranges.push((code1, that));
        } else {
            ranges.push((code1, code1));
        }
    }
    if pos != s.len() {
        return None; // the set ended early: not what translate meant
    }
    Some(Tok::Set { negate, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[&str]) -> Matcher {
        Matcher::build(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn empty_allows_all() {
        let x = m(&[]);
        assert!(x.allow_all());
        assert!(x.allows("anything"));
    }

    #[test]
    fn exact_and_globs() {
        let x = m(&["gpt-4o", "o1*", "/v1/files*", "a?c", "x[0-9]", "y[!ab]", "z*q*"]);
        assert!(!x.allow_all());
        assert!(x.allows("gpt-4o"));
        assert!(!x.allows("gpt-4o-mini"));
        assert!(x.allows("o1"));
        assert!(x.allows("o1-preview/x\ny"));
        assert!(x.allows("/v1/files/abc/content"));
        assert!(x.allows("abc") && x.allows("a\nc") && !x.allows("ac"));
        assert!(x.allows("x5") && !x.allows("xa") && !x.allows("x55"));
        assert!(x.allows("yc") && !x.allows("ya") && x.allows("y\n"));
        assert!(x.allows("zq") && x.allows("zaqb") && !x.allows("za"));
        assert!(!x.allows("O1"));
    }

    #[test]
    fn odd_sets() {
        let x = m(&["[]]", "b[!]]", "c[", "d[]-a]", "e[z-a]", "f[!z-a]", "g[\\]", "h[!]"]);
        assert!(x.allows("]"));
        assert!(x.allows("bx") && !x.allows("b]"));
        assert!(x.allows("c[") && !x.allows("c"));
        assert!(x.allows("d^") && x.allows("d]") && x.allows("da") && !x.allows("db"));
        assert!(!x.allows("ez") && !x.allows("ea") && !x.allows("e"));
        assert!(x.allows("f!") && x.allows("fq") && !x.allows("f"));
        assert!(x.allows("h[!]") && !x.allows("h!"));
        assert!(x.allows("g\\") && !x.allows("gx"));
    }

    #[test]
    fn bad_entries() {
        assert!(Matcher::build(&["".to_string()]).is_err());
        assert!(Matcher::build(&["a b".to_string()]).is_err());
        assert!(Matcher::build(&["a\u{7f}b".to_string()]).is_ok());
    }
}
