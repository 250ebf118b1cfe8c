//! PutAccountSetting, PutAccountSettingDefault, DeleteAccountSetting, ListAccountSettings.
//!
//! A setting's effective value for a principal is its own override, else the account default,
//! else ECS's built-in default.

use crate::paging::{decode_token, max_results, page};
use crate::{decode, encode, keys, store_error, Caller, Control};
use berth_api::ecs::{self, enums, Setting};
use berth_api::error::check_enum;
use berth_api::EcsError;
use berth_store::Txn;

/// ECS's defaults and the values each setting accepts.
const SETTINGS: &[(&str, &str, &[&str])] = &[
    ("serviceLongArnFormat", "enabled", &["enabled"]),
    ("taskLongArnFormat", "enabled", &["enabled"]),
    ("containerInstanceLongArnFormat", "enabled", &["enabled"]),
    ("awsvpcTrunking", "disabled", &["enabled", "disabled"]),
    (
        "containerInsights",
        "disabled",
        &["enabled", "disabled", "enhanced"],
    ),
    ("fargateFIPSMode", "disabled", &["enabled", "disabled"]),
    ("tagResourceAuthorization", "on", &["on", "off"]),
    ("fargateTaskRetirementWaitPeriod", "7", &["0", "7", "14"]),
    ("guardDutyActivate", "off", &["on", "off"]),
    (
        "defaultLogDriverMode",
        "non-blocking",
        &["blocking", "non-blocking"],
    ),
    ("fargateEventWindows", "disabled", &["enabled", "disabled"]),
];

fn check_value(name: &str, value: &str) -> Result<(), EcsError> {
    check_enum("name", name, enums::SETTING_NAME)?;
    let Some((_, _, allowed)) = SETTINGS.iter().find(|(n, _, _)| *n == name) else {
        return Err(EcsError::invalid(format!(
            "setting '{name}' is not supported by Berth"
        )));
    };
    if name.ends_with("LongArnFormat") && value == "disabled" {
        return Err(EcsError::invalid(format!(
            "{name} cannot be disabled: ECS's long ARN format is the only one, and Berth always uses it"
        )));
    }
    if !allowed.contains(&value) {
        return Err(EcsError::invalid(format!(
            "value '{value}' for setting '{name}' must be one of: {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn setting(name: &str, value: &str, principal: &str, kind: &str) -> Setting {
    Setting {
        name: Some(name.into()),
        value: Some(value.into()),
        principal_arn: Some(principal.into()),
        r#type: Some(kind.into()),
    }
}

impl Control {
    fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.config.account_id)
    }

    pub async fn put_account_setting(
        &self,
        caller: &Caller,
        r: ecs::PutAccountSettingRequest,
    ) -> Result<ecs::PutAccountSettingResponse, EcsError> {
        let (name, value) = (r.name.unwrap_or_default(), r.value.unwrap_or_default());
        check_value(&name, &value)?;
        let principal = r
            .principal_arn
            .unwrap_or_else(|| caller.principal_arn.clone());
        self.commit(Txn::new().put(keys::setting(&principal, &name), encode(&value)?))
            .await?;
        Ok(ecs::PutAccountSettingResponse {
            setting: Some(setting(&name, &value, &principal, "user")),
        })
    }

    pub async fn put_account_setting_default(
        &self,
        r: ecs::PutAccountSettingDefaultRequest,
    ) -> Result<ecs::PutAccountSettingDefaultResponse, EcsError> {
        let (name, value) = (r.name.unwrap_or_default(), r.value.unwrap_or_default());
        check_value(&name, &value)?;
        self.commit(Txn::new().put(keys::setting_default(&name), encode(&value)?))
            .await?;
        Ok(ecs::PutAccountSettingDefaultResponse {
            setting: Some(setting(&name, &value, &self.root_arn(), "user")),
        })
    }

    pub async fn delete_account_setting(
        &self,
        caller: &Caller,
        r: ecs::DeleteAccountSettingRequest,
    ) -> Result<ecs::DeleteAccountSettingResponse, EcsError> {
        let name = r.name.unwrap_or_default();
        check_enum("name", &name, enums::SETTING_NAME)?;
        let principal = r
            .principal_arn
            .unwrap_or_else(|| caller.principal_arn.clone());
        let key = keys::setting(&principal, &name);
        let Some((value, _)) = self.get_record::<String>(&key).await? else {
            return Err(EcsError::invalid(format!(
                "principal '{principal}' has no setting '{name}' of its own to delete"
            )));
        };
        self.commit(Txn::new().delete(key)).await?;
        Ok(ecs::DeleteAccountSettingResponse {
            setting: Some(setting(&name, &value, &principal, "user")),
        })
    }

    /// The value of setting `name` for `principal`: its own, else the account default, else
    /// ECS's built-in one.
    pub(crate) async fn effective_setting(
        &self,
        principal: &str,
        name: &str,
    ) -> Result<String, EcsError> {
        if let Some((v, _)) = self
            .get_record::<String>(&keys::setting(principal, name))
            .await?
        {
            return Ok(v);
        }
        if let Some((v, _)) = self
            .get_record::<String>(&keys::setting_default(name))
            .await?
        {
            return Ok(v);
        }
        Ok(SETTINGS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| v.to_string())
            .unwrap_or_default())
    }

    pub async fn list_account_settings(
        &self,
        caller: &Caller,
        r: ecs::ListAccountSettingsRequest,
    ) -> Result<ecs::ListAccountSettingsResponse, EcsError> {
        let limit = max_results(r.max_results.filter(|n| *n != 0), 10)?;
        if let Some(n) = &r.name {
            check_enum("name", n, enums::SETTING_NAME)?;
        }
        let principal = r
            .principal_arn
            .clone()
            .unwrap_or_else(|| caller.principal_arn.clone());
        let token = decode_token(r.next_token.as_deref())?;
        let own: Vec<(String, String)> = self
            .store
            .range(&keys::settings_of(&principal), None, None)
            .await
            .map_err(store_error)?
            .iter()
            .map(|kv| {
                Ok((
                    kv.key.rsplit('/').next().unwrap_or_default().to_string(),
                    decode::<String>(kv)?,
                ))
            })
            .collect::<Result<_, EcsError>>()?;
        let mut items: Vec<(String, Setting)> = Vec::new();
        if r.effective_settings.unwrap_or(false) {
            for (name, builtin, _) in SETTINGS {
                let found = own
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| (v.clone(), principal.clone(), "user"));
                let found = match found {
                    Some(f) => Some(f),
                    None => self
                        .get_record::<String>(&keys::setting_default(name))
                        .await?
                        .map(|(v, _)| (v, self.root_arn(), "user")),
                };
                let (value, who, kind) =
                    found.unwrap_or_else(|| (builtin.to_string(), self.root_arn(), "aws_managed"));
                items.push((name.to_string(), setting(name, &value, &who, kind)));
            }
        } else {
            for (name, value) in own {
                items.push((name.clone(), setting(&name, &value, &principal, "user")));
            }
        }
        items.retain(|(_, s)| {
            r.name.as_ref().is_none_or(|n| s.name.as_ref() == Some(n))
                && r.value.as_ref().is_none_or(|v| s.value.as_ref() == Some(v))
        });
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let (settings, next) = page(items, token.as_deref(), limit, false);
        Ok(ecs::ListAccountSettingsResponse {
            settings: Some(settings),
            next_token: next,
        })
    }
}
