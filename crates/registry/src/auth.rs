//! Registry credentials.
//!
//! GetAuthorizationToken's password is `brt1.KEYID.EXPIRES.MAC`, where MAC is
//! HMAC-SHA256 over the key id and expiry under the key's own secret. It needs no storage,
//! expires by itself, and dies with the key it was made from (deregistering an agent revokes
//! its key, and so its registry passwords).
//!
//! On `/v2/` a client presents either `Basic AWS:PASSWORD`, `Basic KEYID:SECRET`, or
//! `Bearer PASSWORD` (what `/v2/token` hands out in docker's token flow).

use crate::{Error, Principal, Registry};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "brt1";

/// What a caller may do under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone may pull (the operator enabled anonymous pull).
    Anonymous,
    /// A user's key: pull, push, delete.
    User(Principal),
    /// An agent's key: pull only.
    Agent(Principal),
}

impl Access {
    pub fn can_write(&self) -> bool {
        matches!(self, Access::User(_))
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn mac(secret: &str, key_id: &str, expires: u64) -> String {
    hex::encode(hmac_sha256(
        secret.as_bytes(),
        format!("berth-registry|{key_id}|{expires}").as_bytes(),
    ))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A password for `principal` that expires at `expires`.
pub fn make_password(principal: &Principal, expires: SystemTime) -> String {
    let at = expires
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{PREFIX}.{}.{at}.{}",
        principal.access_key_id,
        mac(&principal.secret_access_key, &principal.access_key_id, at)
    )
}

impl Registry {
    /// A password for `principal` and when it expires (GetAuthorizationToken).
    pub fn issue_password(&self, principal: &Principal) -> (String, SystemTime) {
        let expires = SystemTime::now() + self.config.token_lifetime;
        // Whole seconds, so the expiry reported is the one the MAC covers.
        let secs = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let expires = UNIX_EPOCH + Duration::from_secs(secs);
        (make_password(principal, expires), expires)
    }

    /// Checks a password made by [`make_password`].
    pub async fn verify_password(&self, password: &str) -> Result<Principal, Error> {
        let bad = || Error::Unauthorized("the registry password is not valid".into());
        let mut parts = password.split('.');
        let (Some(PREFIX), Some(id), Some(at), Some(given), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let at: u64 = at.parse().map_err(|_| bad())?;
        let principal = self.keys.lookup(id).await?.ok_or_else(bad)?;
        if !same(
            mac(&principal.secret_access_key, id, at).as_bytes(),
            given.as_bytes(),
        ) {
            return Err(bad());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now >= at {
            return Err(Error::Unauthorized(
                "the registry password has expired; get a new one with `aws ecr get-login-password`".into(),
            ));
        }
        Ok(principal)
    }

    /// Who the `Authorization` header says the caller is. `None` header: anonymous, if allowed.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Access, Error> {
        let Some(header) = header else {
            return if self.config.anonymous_pull {
                Ok(Access::Anonymous)
            } else {
                Err(Error::Unauthorized("authentication required".into()))
            };
        };
        let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
        let principal = if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| Error::Unauthorized("the Basic credentials are not base64".into()))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| Error::Unauthorized("the Basic credentials are not UTF-8".into()))?;
            let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                Error::Unauthorized("the Basic credentials are not user:password".into())
            })?;
            if user == "AWS" {
                self.verify_password(pass).await?
            } else {
                let p =
                    self.keys.lookup(user).await?.ok_or_else(|| {
                        Error::Unauthorized(format!("unknown access key '{user}'"))
                    })?;
                if !same(p.secret_access_key.as_bytes(), pass.as_bytes()) {
                    return Err(Error::Unauthorized(format!(
                        "wrong secret for access key '{user}'"
                    )));
                }
                p
            }
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if value.trim() == "anonymous" && self.config.anonymous_pull {
                return Ok(Access::Anonymous);
            }
            self.verify_password(value.trim()).await?
        } else {
            return Err(Error::Unauthorized(format!(
                "authorization scheme '{scheme}' is not supported; use Basic or Bearer"
            )));
        };
        Ok(if principal.instance.is_some() {
            Access::Agent(principal)
        } else {
            Access::User(principal)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
