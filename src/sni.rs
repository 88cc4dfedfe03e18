//! Server-name patterns (`--sni`), and how they are laid out in the kernel's
//! LPM tries (see `bpf/sni.h`).
//!
//! - `api.acme.com`  exact name
//! - `*.acme.com`    any name ending in `.acme.com` (not `acme.com` itself)
//! - `api.*`         any name starting with `api.`
//!
//! Names compare case-insensitively; a trailing dot is ignored.

use std::fmt;

use thiserror::Error;

/// Longest name the kernel side holds (with its NUL): `MAX_NAME`.
pub const MAX_NAME: usize = 256;
/// Longest DNS name.
pub const MAX_PATTERN: usize = 253;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exact,
    Suffix,
    Prefix,
}

/// One server-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: Kind,
    /// Lower case; for Suffix the part after `*` (starts with '.'), for
    /// Prefix the part before `*` (ends with '.').
    pub text: String,
    /// As the user wrote it.
    pub original: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("server-name pattern {0:?} is empty")]
    Empty(String),
    #[error("server-name pattern {0:?} is longer than {MAX_PATTERN} characters")]
    TooLong(String),
    #[error("server-name pattern {0:?} has a character not allowed in a host name: {1:?}")]
    BadChar(String, char),
    #[error(
        "server-name pattern {0:?}: '*' is allowed only as a whole first label (*.example.com) \
         or a whole last label (api.*); give no --sni to capture everything"
    )]
    BadWildcard(String),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

fn check_chars(original: &str, s: &str) -> Result<(), PatternError> {
    for c in s.chars() {
        if !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
            return Err(PatternError::BadChar(original.to_string(), c));
        }
    }
    if s.is_empty() || s.split('.').any(|l| l.is_empty()) {
        return Err(PatternError::BadWildcard(original.to_string()));
    }
    Ok(())
}

impl Pattern {
    pub fn parse(original: &str) -> Result<Pattern, PatternError> {
        let s = original.trim().to_ascii_lowercase();
        let s = s.strip_suffix('.').unwrap_or(&s).to_string();
        if s.is_empty() {
            return Err(PatternError::Empty(original.to_string()));
        }
        if s.len() > MAX_PATTERN {
            return Err(PatternError::TooLong(original.to_string()));
        }
        let stars = s.matches('*').count();
        let (kind, text) = if stars == 0 {
            check_chars(original, &s)?;
            (Kind::Exact, s)
        } else if stars == 1 && s.starts_with("*.") {
            check_chars(original, &s[2..])?;
            (Kind::Suffix, s[1..].to_string())
        } else if stars == 1 && s.ends_with(".*") {
            check_chars(original, &s[..s.len() - 2])?;
            (Kind::Prefix, s[..s.len() - 1].to_string())
        } else {
            return Err(PatternError::BadWildcard(original.to_string()));
        };
        Ok(Pattern {
            kind,
            text,
            original: original.to_string(),
        })
    }

    /// Reference semantics (the kernel does the same with its tries).
    #[cfg(test)]
    pub fn matches(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        let n = n.strip_suffix('.').unwrap_or(&n);
        match self.kind {
            Kind::Exact => n == self.text,
            Kind::Suffix => n.len() > self.text.len() && n.ends_with(&self.text),
            Kind::Prefix => n.len() > self.text.len() && n.starts_with(&self.text),
        }
    }

    /// Which trie (`true`: sni_prefixes) and the key: `u32 prefixlen (bits)`
    /// then `MAX_NAME` bytes.
    pub fn trie_key(&self) -> (bool, Vec<u8>) {
        let mut data: Vec<u8> = match self.kind {
            // reversed name and its NUL: matches only the whole name
            Kind::Exact => self.text.bytes().rev().chain(std::iter::once(0)).collect(),
            Kind::Suffix => self.text.bytes().rev().collect(),
            Kind::Prefix => self.text.bytes().collect(),
        };
        let bits = (data.len() * 8) as u32;
        data.resize(MAX_NAME, 0);
        let mut key = bits.to_ne_bytes().to_vec();
        key.extend_from_slice(&data);
        (self.kind == Kind::Prefix, key)
    }
}

/// Parses every pattern; the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(list: &[S]) -> Result<Vec<Pattern>, PatternError> {
    list.iter().map(|s| Pattern::parse(s.as_ref())).collect()
}

/// Does any pattern match (reference semantics)?
#[cfg(test)]
pub fn any_match(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds() {
        let p = Pattern::parse("*.Acme.com").unwrap();
        assert_eq!((p.kind, p.text.as_str()), (Kind::Suffix, ".acme.com"));
        assert!(p.matches("api.acme.com") && p.matches("A.B.ACME.COM") && !p.matches("acme.com"));
        assert!(!p.matches("evilacme.com"));
        let p = Pattern::parse("api.*").unwrap();
        assert!(p.matches("api.acme.com") && !p.matches("api") && !p.matches("x.api.com"));
        let p = Pattern::parse("API.acme.com.").unwrap();
        assert!(p.matches("api.ACME.com") && !p.matches("x.api.acme.com"));
    }

    #[test]
    fn refused_with_the_pattern_named() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty("".into())));
        assert!(matches!(
            Pattern::parse("a*b.com"),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("*"),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("*.*"),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::BadWildcard(_))
        ));
        assert!(matches!(
            Pattern::parse("ex ample.com"),
            Err(PatternError::BadChar(_, ' '))
        ));
        let long = format!("{}.com", "a".repeat(260));
        let e = Pattern::parse(&long).unwrap_err();
        assert!(e.to_string().contains("longer than"));
    }

    #[test]
    fn trie_keys() {
        let (prefix, k) = Pattern::parse("*.ab.c").unwrap().trie_key();
        assert!(!prefix);
        assert_eq!(&k[..4], &(5u32 * 8).to_ne_bytes());
        assert_eq!(&k[4..9], b"c.ba.");
        assert_eq!(k.len(), 4 + MAX_NAME);
        let (_, k) = Pattern::parse("ab.c").unwrap().trie_key();
        assert_eq!(&k[..4], &(5u32 * 8).to_ne_bytes());
        assert_eq!(&k[4..9], b"c.ba\0");
        let (prefix, k) = Pattern::parse("ab.*").unwrap().trie_key();
        assert!(prefix);
        assert_eq!(&k[4..7], b"ab.");
    }

    /// The kernel's lookup: longest stored prefix of the lookup key. Model it
    /// on the keys above and compare with the reference semantics.
    fn trie_model(patterns: &[Pattern], name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        let rev: Vec<u8> = n.bytes().rev().chain(std::iter::once(0)).collect();
        let fwd: Vec<u8> = n.bytes().collect();
        patterns.iter().any(|p| {
            let (is_prefix, key) = p.trie_key();
            let bits = u32::from_ne_bytes(key[..4].try_into().unwrap()) as usize;
            let stored = &key[4..4 + bits / 8];
            let probe: &[u8] = if is_prefix { &fwd } else { &rev };
            probe.len() >= stored.len() && &probe[..stored.len()] == stored
        })
    }

    proptest! {
        #[test]
        fn trie_layout_agrees_with_the_semantics(
            labels in proptest::collection::vec("[a-cA-C]{1,3}", 1..4),
            pat in proptest::collection::vec("[a-c]{1,3}", 1..3),
            kind in 0u8..3,
        ) {
            let name = labels.join(".");
            let body = pat.join(".");
            let text = match kind { 0 => body, 1 => format!("*.{body}"), _ => format!("{body}.*") };
            let p = Pattern::parse(&text).unwrap();
            let ps = [p];
            prop_assert_eq!(trie_model(&ps, &name), any_match(&ps, &name), "{} vs {}", text, name);
        }
    }
}
