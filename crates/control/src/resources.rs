//! CPU, memory and ports as one value, converted to and from ECS's `Resource` list: what an
//! instance record's `registeredResources` and `remainingResources` hold.

use berth_api::ecs::Resource;
use berth_api::EcsError;
use std::collections::BTreeSet;

/// CPU, memory and ports as one value, converted to and from ECS's `Resource` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    pub ports: BTreeSet<u16>,
    pub ports_udp: BTreeSet<u16>,
}

impl Resources {
    pub fn to_ecs(&self) -> Vec<Resource> {
        let int = |name: &str, v: i64| Resource {
            name: Some(name.into()),
            r#type: Some("INTEGER".into()),
            integer_value: Some(v.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
            double_value: Some(0.0),
            long_value: Some(0),
            ..Default::default()
        };
        let set = |name: &str, v: &BTreeSet<u16>| Resource {
            name: Some(name.into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(v.iter().map(|p| p.to_string()).collect()),
            double_value: Some(0.0),
            long_value: Some(0),
            integer_value: Some(0),
        };
        vec![
            int("CPU", self.cpu),
            int("MEMORY", self.memory),
            set("PORTS", &self.ports),
            set("PORTS_UDP", &self.ports_udp),
        ]
    }

    pub fn from_ecs(list: &[Resource]) -> Result<Self, EcsError> {
        let mut r = Resources::default();
        for res in list {
            let name = res.name.as_deref().unwrap_or("");
            let int = || -> Result<i64, EcsError> {
                res.integer_value
                    .map(i64::from)
                    .or(res.long_value)
                    .or(res.double_value.map(|d| d as i64))
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| {
                        EcsError::invalid(format!(
                            "resource {name} needs a non-negative integerValue"
                        ))
                    })
            };
            let ports = || -> Result<BTreeSet<u16>, EcsError> {
                res.string_set_value
                    .iter()
                    .flatten()
                    .map(|p| {
                        p.parse::<u16>().map_err(|_| {
                            EcsError::invalid(format!(
                                "resource {name}: '{p}' is not a port number"
                            ))
                        })
                    })
                    .collect()
            };
            match name {
                "CPU" => r.cpu = int()?,
                "MEMORY" => r.memory = int()?,
                "PORTS" => r.ports = ports()?,
                "PORTS_UDP" => r.ports_udp = ports()?,
                // GPUs and other custom resources are accepted and not scheduled on yet.
                _ => {}
            }
        }
        Ok(r)
    }
}
