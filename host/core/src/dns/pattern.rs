//! Name patterns a 0.2.0 egress policy registers (`names.set-patterns`) and natgw matches
//! against the names bound to a flow's destination, in the host: one definition of what
//! `*.pypi.org` means for policies in every language, and no copy of the names into the
//! policy's memory on the path of a new flow.

/// Patterns one policy instance may register (they are reported as bits of a u64).
pub const MAX_PATTERNS: usize = 64;

/// `github.com` (that name only) or `*.pypi.org` (one or more labels before `pypi.org`:
/// `files.pypi.org`, `a.b.pypi.org`; never `pypi.org` itself). Case and a trailing dot
/// are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    /// Lower case, no trailing dot; for a wildcard, the part after `*.`.
    suffix: String,
    wildcard: bool,
}

impl NamePattern {
    /// Parses a pattern, refusing what is not a domain name: empty labels, labels over 63
    /// characters, names over 253, bytes other than letters, digits, `-` and `_`, a `*`
    /// anywhere but as the whole first label. The error says why, quoting the pattern.
    pub fn parse(s: &str) -> Result<NamePattern, String> {
        let t = s.trim();
        let t = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
        let (wildcard, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r.to_string()),
            None => (false, t.clone()),
        };
        if rest.is_empty() {
            return Err(format!("{s:?} is not a host name (like github.com or *.pypi.org)"));
        }
        if rest.len() > 253 {
            return Err(format!("{s:?} is longer than 253 characters"));
        }
        for label in rest.split('.') {
            if label.is_empty() {
                return Err(format!("{s:?} has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!("{s:?} has a label longer than 63 characters"));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                let why = if c == '*' {
                    "a * only as the whole first label, like *.pypi.org"
                } else {
                    "letters, digits, - and _ only"
                };
                return Err(format!("{s:?} is not a host name: {c:?} ({why})"));
            }
        }
        Ok(NamePattern { suffix: rest, wildcard })
    }

    /// Whether `name` (a bound name: lower case, no trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if !self.wildcard {
            return name.eq_ignore_ascii_case(&self.suffix);
        }
        let n = self.suffix.len();
        name.len() > n + 1
            && name.as_bytes()[name.len() - n - 1] == b'.'
            && name[name.len() - n..].eq_ignore_ascii_case(&self.suffix)
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.suffix)
    }
}

/// Bit i set when any of `names` matches `patterns[i]` (the first `MAX_PATTERNS`).
pub fn match_bits<'a>(patterns: &[NamePattern], names: impl Iterator<Item = &'a str> + Clone) -> u64 {
    let mut bits = 0u64;
    for (i, p) in patterns.iter().take(MAX_PATTERNS).enumerate() {
        if names.clone().any(|n| p.matches(n)) {
            bits |= 1 << i;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_match_only_themselves() {
        let p = NamePattern::parse("GitHub.com.").unwrap();
        assert!(p.matches("github.com") && p.matches("github.com."));
        for n in ["api.github.com", "github.com.evil.example", "xgithub.com", "com", ""] {
            assert!(!p.matches(n), "{n}");
        }
        assert_eq!(p.to_string(), "github.com");
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels_never_the_apex() {
        let p = NamePattern::parse("*.pypi.org").unwrap();
        for n in ["files.pypi.org", "a.b.pypi.org", "FILES.PYPI.ORG", "x.pypi.org."] {
            assert!(p.matches(n), "{n}");
        }
        for n in ["pypi.org", "xpypi.org", "pypi.org.evil.example", ".pypi.org", "org", "", "ypi.org"] {
            assert!(!p.matches(n), "{n}");
        }
        assert_eq!(p.to_string(), "*.pypi.org");
    }

    #[test]
    fn what_is_not_a_domain_is_refused() {
        for s in [
            "",
            "*",
            "*.",
            ".",
            "a..b",
            "a*.b.com",
            "*.*.com",
            "b.*.com",
            "exa mple.com",
            "ex%ample.com",
            "10.0.0.1/8",
            "é.com",
        ] {
            assert!(NamePattern::parse(s).is_err(), "{s:?}");
        }
        assert!(NamePattern::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(NamePattern::parse(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(NamePattern::parse(&long).is_err(), "255 characters");
        assert!(NamePattern::parse("_dmarc.example.com").is_ok());
    }

    #[test]
    fn bits_say_which_patterns_any_name_matches() {
        let ps: Vec<NamePattern> = ["github.com", "*.pypi.org", "pypi.org", "*.example"]
            .iter()
            .map(|p| NamePattern::parse(p).unwrap())
            .collect();
        assert_eq!(match_bits(&ps, ["files.pypi.org", "github.com"].into_iter()), 0b0011);
        assert_eq!(match_bits(&ps, ["pypi.org"].into_iter()), 0b0100);
        assert_eq!(match_bits(&ps, std::iter::empty()), 0);
        let many: Vec<NamePattern> = (0..70).map(|_| NamePattern::parse("a.example").unwrap()).collect();
        assert_eq!(match_bits(&many, ["a.example"].into_iter()), u64::MAX, "the first 64 only");
    }
}
