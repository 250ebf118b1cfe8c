//! Repository names, tags and digests, validated as ECR and the distribution spec do. Pure.

use crate::Error;
use std::fmt;

/// A content digest. Only `sha256` is accepted, as ECR does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(Error::DigestInvalid(format!(
                "'{s}' is not a digest of the form sha256:<hex>"
            )));
        };
        if algo != "sha256" {
            return Err(Error::DigestInvalid(format!(
                "digest algorithm '{algo}' is not supported; use sha256"
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::DigestInvalid(format!(
                "'{s}' is not a digest: sha256 needs 64 lowercase hex characters"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_hash(sha2::Sha256::digest(bytes).as_slice())
    }

    /// From a finished SHA-256.
    pub fn from_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, as blob files are named.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a repository name as ECR does: 2 to 256 characters of path components joined by
/// `/`, each lowercase letters and digits separated by `.`, `_`, `__` or a run of `-`
/// (botocore's pattern for RepositoryName).
pub fn check_repository_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::NameInvalid(format!(
            "invalid repository name '{name}': {why}"
        )))
    };
    if name.len() < 2 || name.len() > 256 {
        return bad("it must be 2 to 256 characters long");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    for component in name.split('/') {
        let bytes = component.as_bytes();
        if bytes.is_empty() {
            return bad("path components must not be empty");
        }
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return bad("each path component must start and end with a lowercase letter or digit");
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let run_start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let run = &component[run_start..i];
            let ok = run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-');
            if !ok {
                return bad(&format!(
                    "'{run}' is not a separator; use '.', '_', '__' or dashes between lowercase letters and digits"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), Error> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::TagInvalid(format!(
            "invalid tag '{tag}': a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )))
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            check_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "ab",
            "web",
            "team/web",
            "a-b/c_d.e",
            "a__b",
            "a---b",
            "x/y/z9",
        ] {
            assert!(check_repository_name(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "a",
            "Web",
            "-web",
            "web-",
            "team//web",
            "/web",
            "web/",
            "a..b",
            "a___b",
            "a.-b",
            "a b",
            "a:b",
            &"a".repeat(257),
        ] {
            assert!(
                check_repository_name(bad).is_err(),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn tags_and_digests() {
        assert!(check_tag("v1.0_rc-1").is_ok());
        assert!(check_tag("_x").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad:?} should be invalid");
        }
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(Digest::parse("sha512:abc").is_err());
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("nodigest").is_err());
        assert!(matches!(
            Reference::parse("latest").unwrap(),
            Reference::Tag(_)
        ));
        assert!(matches!(
            Reference::parse(d.as_str()).unwrap(),
            Reference::Digest(_)
        ));
    }
}
