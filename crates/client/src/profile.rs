//! Where a call's credentials, region and endpoint come from: the places the AWS CLI reads,
//! in its order, and then a local `berth up`'s data dir. Pure: the environment and the files'
//! texts are given, so every rule is tested without touching the machine.

use std::collections::BTreeMap;

/// The endpoint a local `berth up` serves.
pub const LOCAL_ENDPOINT: &str = "http://127.0.0.1:7060";
/// The region when nothing names one, as `berth server`'s default.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The profile `berth up` writes into its data dir's `credentials` file.
pub const BERTH_PROFILE: &str = "berth";

/// What the command line said; it wins over everything else.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub profile: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// What a resolution reads besides the flags.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The environment variables that matter (`AWS_*`).
    pub env: BTreeMap<String, String>,
    /// The text of the shared credentials file (`~/.aws/credentials`), if it exists.
    pub credentials_file: Option<String>,
    /// The text of the shared config file (`~/.aws/config`), if it exists.
    pub config_file: Option<String>,
    /// The text of a local `berth up`'s `credentials` file, if it exists.
    pub berth_credentials: Option<String>,
}

/// Everything a call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub endpoint: String,
    /// Where the key came from, for messages (`environment`, `profile prod`, …).
    pub key_source: String,
}

/// Why no settings could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A profile was named and is in neither shared file.
    Profile(String),
    /// A profile exists and has no key.
    ProfileKey(String),
    /// Nothing anywhere.
    Credentials,
}

/// An INI file as the AWS CLI reads it: `[section]` headers, `key = value` lines, `#` and `;`
/// comments. Section names are trimmed; keys are lower-cased.
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        let (Some(section), Some((k, v))) = (&section, line.split_once('=')) else {
            continue;
        };
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    out
}

/// The config file's section for `profile`: `[default]` or `[profile NAME]`.
fn config_section<'a>(
    config: &'a BTreeMap<String, BTreeMap<String, String>>,
    profile: &str,
) -> Option<&'a BTreeMap<String, String>> {
    if profile == "default" {
        config.get("default")
    } else {
        config.get(&format!("profile {profile}"))
    }
}

/// The settings the flags, environment and files give, in the AWS CLI's order:
/// - key: `--profile`'s from the shared files; else `AWS_ACCESS_KEY_ID`/
///   `AWS_SECRET_ACCESS_KEY`; else the profile `AWS_PROFILE` names (or `default`); else the
///   `berth` profile of a local `berth up`'s data dir.
/// - region: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then
///   (with `berth up`'s key) its home region, then us-east-1.
/// - endpoint: `--endpoint-url`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`, then a local
///   `berth up`'s. (Berth serves every API on one port, so the per-service variables such as
///   `AWS_ENDPOINT_URL_ECS` are not read: one of them would send the other APIs' calls
///   astray.)
pub fn resolve(flags: &Flags, src: &Sources) -> Result<Settings, Missing> {
    let env = |k: &str| src.env.get(k).filter(|v| !v.is_empty()).cloned();
    let credentials = src
        .credentials_file
        .as_deref()
        .map(parse_ini)
        .unwrap_or_default();
    let config = src
        .config_file
        .as_deref()
        .map(parse_ini)
        .unwrap_or_default();
    // Only --profile outranks the environment's key; AWS_PROFILE names the profile read when
    // the environment has none, as botocore does.
    let explicit = flags.profile.clone();
    let profile = explicit
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".to_string());
    let from_files = |name: &str| -> Option<Result<(String, String), Missing>> {
        let cred = credentials.get(name);
        let conf = config_section(&config, name);
        if cred.is_none() && conf.is_none() {
            return None;
        }
        let get = |k: &str| {
            cred.and_then(|s| s.get(k))
                .or_else(|| conf.and_then(|s| s.get(k)))
                .cloned()
        };
        Some(
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(a), Some(s)) => Ok((a, s)),
                _ => Err(Missing::ProfileKey(name.to_string())),
            },
        )
    };
    // The home region a local `berth up` writes beside its key.
    let mut berth_region = None;
    let (key, key_source) = if let Some(name) = &explicit {
        match from_files(name) {
            Some(key) => (key?, format!("profile {name}")),
            None => return Err(Missing::Profile(name.clone())),
        }
    } else if let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        ((a, s), "environment".to_string())
    } else if let Some(Ok(key)) = from_files(&profile) {
        (key, format!("profile {profile}"))
    } else if profile != "default" {
        // AWS_PROFILE named it: a missing or keyless profile is an error, not a fallback.
        return Err(from_files(&profile)
            .and_then(Result::err)
            .unwrap_or(Missing::Profile(profile)));
    } else {
        // A keyless `[default]` (a region alone, say) leaves the key to berth up's.
        let berth = src
            .berth_credentials
            .as_deref()
            .map(parse_ini)
            .unwrap_or_default();
        let section = berth.get(BERTH_PROFILE).ok_or(Missing::Credentials)?;
        berth_region = section.get("region").filter(|v| !v.is_empty()).cloned();
        match (
            section.get("aws_access_key_id"),
            section.get("aws_secret_access_key"),
        ) {
            (Some(a), Some(s)) => ((a.clone(), s.clone()), "berth up's data dir".to_string()),
            _ => return Err(Missing::Credentials),
        }
    };
    let conf = config_section(&config, &profile);
    let from_profile = |k: &str| {
        conf.and_then(|s| s.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let region = flags
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| from_profile("region"))
        .or(berth_region)
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let endpoint = flags
        .endpoint_url
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| from_profile("endpoint_url"))
        .unwrap_or_else(|| LOCAL_ENDPOINT.to_string());
    Ok(Settings {
        access_key_id: key.0,
        secret_access_key: key.1,
        region,
        endpoint: endpoint.trim_end_matches('/').to_string(),
        key_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CREDS: &str = "# mine\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = skdef\n\n[prod]\nAWS_ACCESS_KEY_ID=AKPROD\naws_secret_access_key= skprod \n[empty]\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile prod]\nregion = ap-south-1\nendpoint_url = http://10.0.0.1:7060/\n";

    #[test]
    fn flags_win_over_the_environment_and_the_files() {
        let src = Sources {
            env: env(&[
                ("AWS_ACCESS_KEY_ID", "AKENV"),
                ("AWS_SECRET_ACCESS_KEY", "skenv"),
                ("AWS_REGION", "us-west-2"),
                ("AWS_ENDPOINT_URL", "http://env:1"),
            ]),
            credentials_file: Some(CREDS.into()),
            config_file: Some(CONFIG.into()),
            berth_credentials: None,
        };
        let flags = Flags {
            profile: Some("prod".into()),
            region: Some("ca-central-1".into()),
            endpoint_url: Some("http://flag:2/".into()),
        };
        let s = resolve(&flags, &src).expect("settings");
        assert_eq!(
            (s.access_key_id.as_str(), s.secret_access_key.as_str()),
            ("AKPROD", "skprod"),
            "--profile names the key even when the environment has one"
        );
        assert_eq!(s.region, "ca-central-1");
        assert_eq!(s.endpoint, "http://flag:2");
        assert_eq!(s.key_source, "profile prod");
    }

    #[test]
    fn the_environment_then_the_default_profile_then_berth_ups_data_dir() {
        let mut src = Sources {
            env: env(&[
                ("AWS_ACCESS_KEY_ID", "AKENV"),
                ("AWS_SECRET_ACCESS_KEY", "skenv"),
                ("AWS_DEFAULT_REGION", "us-west-1"),
            ]),
            credentials_file: Some(CREDS.into()),
            config_file: Some(CONFIG.into()),
            berth_credentials: Some(
                "[berth]\naws_access_key_id = AKBERTH\naws_secret_access_key = skberth\n".into(),
            ),
        };
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(s.access_key_id, "AKENV");
        assert_eq!(
            s.region, "us-west-1",
            "AWS_DEFAULT_REGION before the profile's"
        );
        assert_eq!(s.endpoint, LOCAL_ENDPOINT);
        src.env.clear();
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(s.access_key_id, "AKDEF");
        assert_eq!(s.region, "eu-west-1", "the default profile's region");
        src.credentials_file = None;
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(
            (s.access_key_id.as_str(), s.region.as_str()),
            ("AKBERTH", "eu-west-1"),
            "a keyless [default] leaves the key to berth up's and keeps its region"
        );
        src.config_file = None;
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(s.access_key_id, "AKBERTH");
        assert_eq!(s.region, DEFAULT_REGION);
        assert_eq!(s.key_source, "berth up's data dir");
        src.berth_credentials = Some(
            "[berth]\naws_access_key_id = AKBERTH\naws_secret_access_key = skberth\nregion = ap-south-1\n"
                .into(),
        );
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(
            s.region, "ap-south-1",
            "berth up's home region, beside its key"
        );
        src.env = env(&[("AWS_REGION", "us-west-2")]);
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(
            s.region, "us-west-2",
            "the environment's region before berth up's"
        );
        src.env.clear();
        src.berth_credentials = None;
        assert_eq!(resolve(&Flags::default(), &src), Err(Missing::Credentials));
    }

    #[test]
    fn aws_profile_yields_to_the_environments_key_but_not_to_the_flag() {
        let src = Sources {
            env: env(&[
                ("AWS_PROFILE", "prod"),
                ("AWS_ACCESS_KEY_ID", "AKENV"),
                ("AWS_SECRET_ACCESS_KEY", "skenv"),
            ]),
            credentials_file: Some(CREDS.into()),
            config_file: Some(CONFIG.into()),
            berth_credentials: None,
        };
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(
            s.access_key_id, "AKENV",
            "botocore reads the environment's key first"
        );
        assert_eq!(
            s.region, "ap-south-1",
            "AWS_PROFILE still names the profile's region"
        );
        let flags = Flags {
            profile: Some("default".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&flags, &src).expect("settings").access_key_id,
            "AKDEF"
        );
        let src = Sources {
            env: env(&[("AWS_PROFILE", "gone")]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&Flags::default(), &src),
            Err(Missing::Profile("gone".into())),
            "a named profile that does not exist is an error, not berth up's key"
        );
    }

    #[test]
    fn aws_profile_reads_its_region_and_endpoint_from_the_config_file() {
        let src = Sources {
            env: env(&[("AWS_PROFILE", "prod")]),
            credentials_file: Some(CREDS.into()),
            config_file: Some(CONFIG.into()),
            berth_credentials: None,
        };
        let s = resolve(&Flags::default(), &src).expect("settings");
        assert_eq!(s.region, "ap-south-1");
        assert_eq!(s.endpoint, "http://10.0.0.1:7060");
    }

    #[test]
    fn a_missing_or_keyless_profile_is_named() {
        let src = Sources {
            credentials_file: Some(CREDS.into()),
            ..Default::default()
        };
        let named = |p: &str| Flags {
            profile: Some(p.into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&named("nope"), &src),
            Err(Missing::Profile("nope".into()))
        );
        assert_eq!(
            resolve(&named("empty"), &src),
            Err(Missing::ProfileKey("empty".into()))
        );
    }
}
