//! Access keys: the admin key made on first start, and the lookup SigV4 verification needs.

use crate::{decode, encode, keys, store_error, Caller, Control};
use berth_api::EcsError;
use berth_store::Txn;
use rand::{distributions::Alphanumeric, Rng};
use serde::{Deserialize, Serialize};

/// An access key as stored. The secret is stored as is: the store is the server's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub principal_arn: String,
    /// Set for an agent's key: the container instance it speaks for. Such a key may only call
    /// the agent protocol, never the ECS API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

fn random_upper(n: usize) -> String {
    random_secret(n).to_ascii_uppercase()
}

/// `n` random letters and digits.
pub(crate) fn random_secret(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl Control {
    /// The admin key, created on first start. `true` when it was created just now.
    pub async fn ensure_admin_key(&self) -> Result<(AccessKey, bool), EcsError> {
        for _ in 0..crate::CAS_ATTEMPTS {
            let seen = self
                .root
                .get(keys::ADMIN_KEY)
                .await
                .map_err(crate::store_error)?;
            if let Some(kv) = &seen {
                let id: String = decode(kv)?;
                if let Some(key) = self.user_key(&id).await? {
                    return Ok((key, false));
                }
            }
            let key = AccessKey {
                access_key_id: format!("AKIA{}", random_upper(16)),
                secret_access_key: random_secret(40),
                principal_arn: format!("arn:aws:iam::{}:user/berth-admin", self.config.account_id),
                instance: None,
            };
            let txn = Txn::new()
                .unchanged(keys::ADMIN_KEY, seen.as_ref())
                .put(keys::ADMIN_KEY, encode(&key.access_key_id)?)
                .put(keys::access_key(&key.access_key_id), encode(&key)?);
            if matches!(
                self.root.txn(txn).await.map_err(store_error)?,
                berth_store::TxnOutcome::Committed(_)
            ) {
                return Ok((key, true));
            }
        }
        Err(crate::conflict_exhausted("creating the admin key"))
    }

    /// The key with this id, if this region knows it: a user's (every region's, from the
    /// mirror when it holds it) or the key of an agent of this region (always from the
    /// store: see [`crate::mirror::Mirrors::users`]).
    pub async fn access_key(&self, id: &str) -> Result<Option<AccessKey>, EcsError> {
        if let Some(k) = self.user_key(id).await? {
            return Ok(Some(k));
        }
        Ok(self
            .get_record::<AccessKey>(&keys::access_key(id))
            .await?
            .map(|(k, _)| k))
    }

    /// A user's key (held at the store's root, for every region), if there is one.
    pub async fn user_key(&self, id: &str) -> Result<Option<AccessKey>, EcsError> {
        let key = keys::access_key(id);
        if let Some(kv) = self.mirrors.users.get(&key) {
            return Ok(Some(decode(&kv)?));
        }
        match self.root.get(&key).await.map_err(store_error)? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// The caller dev mode assumes for a key it does not know.
    pub fn dev_caller(&self, access_key: &str) -> Caller {
        Caller {
            access_key: access_key.to_string(),
            principal_arn: format!("arn:aws:iam::{}:user/{access_key}", self.config.account_id),
            instance: None,
        }
    }
}

impl From<&AccessKey> for Caller {
    fn from(key: &AccessKey) -> Self {
        Caller {
            access_key: key.access_key_id.clone(),
            principal_arn: key.principal_arn.clone(),
            instance: key.instance.clone(),
        }
    }
}

impl From<AccessKey> for berth_registry::Principal {
    fn from(key: AccessKey) -> Self {
        berth_registry::Principal {
            access_key_id: key.access_key_id,
            secret_access_key: key.secret_access_key,
            principal_arn: key.principal_arn,
            instance: key.instance,
        }
    }
}

/// The registry's view of the access keys: it reads them, the control plane owns them.
#[derive(Debug, Clone)]
pub struct StoreKeys {
    /// Users' keys, every region's.
    pub root: std::sync::Arc<dyn berth_store::Store>,
    /// The region's own: its agents' keys.
    pub store: std::sync::Arc<dyn berth_store::Store>,
    /// The mirror of users' keys.
    pub mirrors: crate::mirror::Mirrors,
}

#[async_trait::async_trait]
impl berth_registry::Keys for StoreKeys {
    async fn lookup(
        &self,
        access_key_id: &str,
    ) -> Result<Option<berth_registry::Principal>, berth_registry::Error> {
        let id = keys::access_key(access_key_id);
        let kv = match self.mirrors.users.get(&id) {
            Some(kv) => kv,
            None => match self.root.get(&id).await? {
                Some(kv) => kv,
                None => match self.store.get(&id).await? {
                    Some(kv) => kv,
                    None => return Ok(None),
                },
            },
        };
        let key: AccessKey = serde_json::from_slice(&kv.value).map_err(|e| {
            berth_registry::Error::Internal(format!("stored access key is unreadable: {e}"))
        })?;
        Ok(Some(key.into()))
    }
}

impl Control {
    /// Removes every key issued to the agent of `instance_arn`.
    pub(crate) async fn revoke_agent_keys(&self, instance_arn: &str) -> Result<(), EcsError> {
        let kvs = self
            .store
            .range("auth/keys/", None, None)
            .await
            .map_err(store_error)?;
        for kv in kvs {
            let k: AccessKey = decode(&kv)?;
            if k.instance.as_deref() == Some(instance_arn) {
                self.commit(Txn::new().delete(kv.key.clone())).await?;
            }
        }
        Ok(())
    }
}
