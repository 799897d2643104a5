//! Wildcard patterns of name maps: `blocks.*.attn = encoder.layer.*.attention`.
//!
//! On the left, `*` matches one or more characters other than `.` (part or all of
//! one dot-separated segment) and `**` one or more characters of any kind (dots
//! included, so several segments); everything else is literal. Earlier wildcards
//! take as much as they can while the whole name still matches (regex greediness),
//! which only matters when a name can be split more than one way (`**.**`). On the
//! right, the n-th wildcard (`*` or `**`, the same) is replaced by what the n-th
//! wildcard on the left matched. Two wildcards side by side (`***`, `*` right after
//! `**`) are refused: what each one matched would be ambiguous.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(String),
    /// `*`: one or more characters, no `.`.
    One,
    /// `**`: one or more characters, `.` included.
    Any,
}

/// A parsed side of a rename entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses `s`; an error (without the entry: the caller names it) when two
    /// wildcards touch.
    pub(super) fn parse(s: &str) -> Result<Pattern, String> {
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '*' {
                lit.push(c);
                continue;
            }
            let t = if chars.peek() == Some(&'*') {
                chars.next();
                Token::Any
            } else {
                Token::One
            };
            if lit.is_empty() && !tokens.is_empty() {
                return Err(format!(
                    "two wildcards side by side in {s:?} (what each matches would be ambiguous)"
                ));
            }
            if !lit.is_empty() {
                tokens.push(Token::Lit(std::mem::take(&mut lit)));
            }
            tokens.push(t);
        }
        if !lit.is_empty() {
            tokens.push(Token::Lit(lit));
        }
        Ok(Pattern { tokens })
    }

    /// Number of wildcards (`*` and `**`).
    pub(super) fn wildcards(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| !matches!(t, Token::Lit(_)))
            .count()
    }

    /// Number of literal characters (how specific the pattern is).
    pub(super) fn literal_chars(&self) -> usize {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Lit(l) => l.chars().count(),
                _ => 0,
            })
            .sum()
    }

    /// What each wildcard matched when `name` matches the whole pattern.
    pub(super) fn captures<'n>(&self, name: &'n str) -> Option<Vec<&'n str>> {
        let mut caps = Vec::with_capacity(self.wildcards());
        let mut failed = HashSet::new();
        self.go(0, name, 0, &mut caps, &mut failed).then_some(caps)
    }

    /// Matches tokens from `pi` on against `name[ti..]`; `failed` remembers the
    /// (token, position) pairs that cannot match, so a pattern with many `**` stays
    /// polynomial.
    fn go<'n>(
        &self,
        pi: usize,
        name: &'n str,
        ti: usize,
        caps: &mut Vec<&'n str>,
        failed: &mut HashSet<(usize, usize)>,
    ) -> bool {
        let Some(token) = self.tokens.get(pi) else {
            return ti == name.len();
        };
        if failed.contains(&(pi, ti)) {
            return false;
        }
        let rest = &name[ti..];
        let ok = match token {
            Token::Lit(l) => {
                rest.starts_with(l.as_str()) && self.go(pi + 1, name, ti + l.len(), caps, failed)
            }
            wild => {
                let span = match wild {
                    Token::One => rest.find('.').unwrap_or(rest.len()),
                    _ => rest.len(),
                };
                // Longest first; every end is a character boundary.
                let ends: Vec<usize> = rest[..span]
                    .char_indices()
                    .map(|(i, c)| i + c.len_utf8())
                    .collect();
                let mut found = false;
                for &end in ends.iter().rev() {
                    caps.push(&rest[..end]);
                    if self.go(pi + 1, name, ti + end, caps, failed) {
                        found = true;
                        break;
                    }
                    caps.pop();
                }
                found
            }
        };
        if !ok {
            failed.insert((pi, ti));
        }
        ok
    }

    /// This pattern as a template: its n-th wildcard replaced by `caps[n]`.
    pub(super) fn substitute(&self, caps: &[&str]) -> String {
        let mut out = String::new();
        let mut caps = caps.iter();
        for t in &self.tokens {
            match t {
                Token::Lit(l) => out.push_str(l),
                _ => out.push_str(caps.next().copied().unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, name: &str) -> Option<Vec<String>> {
        Pattern::parse(p)
            .unwrap()
            .captures(name)
            .map(|c| c.into_iter().map(String::from).collect())
    }

    #[test]
    fn one_star_stays_within_a_segment() {
        assert_eq!(
            caps("blocks.*.attn", "blocks.11.attn"),
            Some(vec!["11".into()])
        );
        assert_eq!(caps("blocks.*.attn", "blocks.1.2.attn"), None);
        assert_eq!(caps("blocks.*.attn", "blocks..attn"), None, "one or more");
        assert_eq!(caps("blocks.*", "blocks.3.mlp"), None);
        assert_eq!(caps("layer*", "layer12"), Some(vec!["12".into()]));
        assert_eq!(caps("layer*", "layer"), None);
        assert_eq!(
            caps("h.*.mlp.c_*", "h.0.mlp.c_fc"),
            Some(vec!["0".into(), "fc".into()])
        );
    }

    #[test]
    fn double_star_crosses_segments_greedily() {
        assert_eq!(
            caps("encoder.**", "encoder.layer.3.output"),
            Some(vec!["layer.3.output".into()])
        );
        assert_eq!(caps("**.attn", "x.attn.attn"), Some(vec!["x.attn".into()]));
        assert_eq!(
            caps("**.**", "a.b.c"),
            Some(vec!["a.b".into(), "c".into()]),
            "earlier wildcards take as much as they can"
        );
        assert_eq!(caps("**.out", "out"), None);
        // Many wildcards on a long name that does not match: fast (memoized).
        let name = "a.".repeat(200) + "b";
        assert_eq!(caps("**.a.**.a.**.a.**.a.**.c", &name), None);
    }

    #[test]
    fn substitution_and_errors() {
        let left = Pattern::parse("blocks.*.attn.**").unwrap();
        let right = Pattern::parse("encoder.layer.*.attention.self.**").unwrap();
        let c = left.captures("blocks.7.attn.q.proj").unwrap();
        assert_eq!(
            right.substitute(&c),
            "encoder.layer.7.attention.self.q.proj"
        );
        assert_eq!((left.wildcards(), left.literal_chars()), (2, 13));
        assert!(Pattern::parse("a.***")
            .unwrap_err()
            .contains("side by side"));
        assert!(Pattern::parse("a.***b").is_err());
        assert!(Pattern::parse("a.*.*").is_ok());
        assert_eq!(
            Pattern::parse("héllo.*")
                .unwrap()
                .captures("héllo.wörld")
                .unwrap(),
            ["wörld"]
        );
    }
}
