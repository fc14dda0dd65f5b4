//! Destination names (`natgw:policy@0.2.0`): what natgw bound to a flow's destination from
//! the DNS answers its inside host received, and patterns to match them.

/// A name natgw bound to a flow's destination address: lower case, no trailing dot, with
/// the seconds the binding still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundName {
    pub name: String,
    pub ttl_s: u32,
}

/// A host name pattern: `github.com` (that name only), or `*.pypi.org` (one or more labels
/// before `pypi.org`, so `files.pypi.org` and `a.b.pypi.org`, never `pypi.org` itself:
/// list the apex as its own rule). Matching ignores case and a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    /// Lower case, no trailing dot; for a wildcard, the part after `*.`.
    suffix: String,
    wildcard: bool,
}

impl NamePattern {
    /// Parses a pattern, refusing what is not a domain name: empty labels, labels over 63
    /// characters, names over 253, bytes other than letters, digits, `-` and `_`, a `*`
    /// anywhere but as the whole first label.
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
        name.len() > self.suffix.len() + 1
            && name.as_bytes()[name.len() - self.suffix.len() - 1] == b'.'
            && name[name.len() - self.suffix.len()..].eq_ignore_ascii_case(&self.suffix)
    }

    /// Whether any of `names` matches.
    pub fn matches_any(&self, names: &[BoundName]) -> bool {
        names.iter().any(|n| self.matches(&n.name))
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.")?;
        }
        f.write_str(&self.suffix)
    }
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
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels_never_the_apex() {
        let p = NamePattern::parse("*.pypi.org").unwrap();
        for n in ["files.pypi.org", "a.b.pypi.org", "FILES.PYPI.ORG"] {
            assert!(p.matches(n), "{n}");
        }
        for n in ["pypi.org", "xpypi.org", "pypi.org.evil.example", ".pypi.org", "org"] {
            assert!(!p.matches(n), "{n}");
        }
    }

    #[test]
    fn what_is_not_a_domain_is_refused() {
        for s in ["", "*", "*.", "a..b", "a*.b.com", "*.*.com", "b.*.com", "exa mple.com", "ex%ample.com", "10.0.0.1/8"]
        {
            assert!(NamePattern::parse(s).is_err(), "{s:?}");
        }
        assert!(NamePattern::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(NamePattern::parse(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(NamePattern::parse(&long).is_err(), "255 characters");
    }
}
