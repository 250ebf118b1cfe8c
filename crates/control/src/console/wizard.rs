//! The task-definition wizard: the form ECS's console has, turned into a
//! RegisterTaskDefinition request by one pure function, which also makes the live JSON
//! preview (so what is previewed is exactly what is registered).

use super::html::{csrf_field, esc};
use berth_api::ecs::{
    ContainerDefinition, HealthCheck, KeyValuePair, LogConfiguration, PortMapping,
    RegisterTaskDefinitionRequest,
};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The form's fields by name (the last value of a repeated name wins; checkboxes are present
/// when ticked).
pub type Form = BTreeMap<String, String>;

fn field<'a>(f: &'a Form, name: &str) -> Option<&'a str> {
    f.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn number(f: &Form, name: &str, label: &str) -> Result<Option<i32>, String> {
    field(f, name)
        .map(|v| {
            v.parse::<i32>()
                .map_err(|_| format!("{label} must be a whole number, not '{v}'"))
        })
        .transpose()
}

/// How many containers the wizard has room for, as many as a task definition takes: the first
/// required, the others used when named (folded away until opened or filled).
pub const CONTAINERS: usize = 10;

/// The form field `base` of container `i`: the first container's fields have plain names,
/// the others a suffix (`image_2`).
fn key(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}_{}", i + 1)
    }
}

/// The request the form asks for, or what is wrong with the form (the server checks the
/// rest, as it checks every RegisterTaskDefinition).
pub fn request(f: &Form, region: &str) -> Result<RegisterTaskDefinitionRequest, String> {
    let family = field(f, "family").ok_or("Family is required")?;
    let fargate = f.contains_key("fargate");
    let ec2 = f.contains_key("ec2");
    if !ec2 && !fargate {
        return Err("Tick EC2, FARGATE or both".into());
    }
    let mut compat = Vec::new();
    if ec2 {
        compat.push("EC2".to_string());
    }
    if fargate {
        compat.push("FARGATE".to_string());
    }
    let (cpu, memory) = match field(f, "size") {
        Some(size) => {
            let (c, m) = size
                .split_once('/')
                .ok_or_else(|| format!("Task size '{size}' is not CPU/MEMORY"))?;
            (Some(c.to_string()), Some(m.to_string()))
        }
        None if fargate => return Err("FARGATE needs a task size".into()),
        None => (None, None),
    };
    let network_mode = if fargate {
        "awsvpc".to_string()
    } else {
        field(f, "network_mode").unwrap_or("bridge").to_string()
    };
    let logs = f.contains_key("logs");
    let mut containers = Vec::new();
    for i in 0..CONTAINERS {
        let Some(name) = field(f, &key("container_name", i)) else {
            if i == 0 {
                return Err("Container name is required".into());
            }
            continue;
        };
        containers.push(container(f, i, name, family, logs, region)?);
    }
    Ok(RegisterTaskDefinitionRequest {
        family: Some(family.to_string()),
        requires_compatibilities: Some(compat),
        network_mode: Some(network_mode),
        cpu,
        memory,
        container_definitions: Some(containers),
        ..Default::default()
    })
}

/// Container `i` of the form, named `name`.
fn container(
    f: &Form,
    i: usize,
    name: &str,
    family: &str,
    logs: bool,
    region: &str,
) -> Result<ContainerDefinition, String> {
    let which = if i == 0 {
        "Container".to_string()
    } else {
        format!("Container {}", i + 1)
    };
    let image = field(f, &key("image", i)).ok_or(if i == 0 {
        "Image is required".to_string()
    } else {
        format!("{which} ({name}) needs an image")
    })?;
    let port = number(f, &key("port", i), &format!("{which} port"))?;
    let mut environment = Vec::new();
    for line in field(f, &key("environment", i)).unwrap_or_default().lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("Environment line '{line}' is not NAME=VALUE"))?;
        environment.push(KeyValuePair {
            name: Some(k.trim().to_string()),
            value: Some(v.to_string()),
        });
    }
    let command: Vec<String> = field(f, &key("command", i))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let health_check = field(f, &key("health_command", i)).map(|c| HealthCheck {
        command: Some(vec!["CMD-SHELL".into(), c.to_string()]),
        ..Default::default()
    });
    let log_configuration = logs.then(|| LogConfiguration {
        log_driver: Some("awslogs".into()),
        options: Some(
            [
                ("awslogs-group", format!("/ecs/{family}")),
                ("awslogs-region", region.to_string()),
                ("awslogs-stream-prefix", "ecs".to_string()),
                ("awslogs-create-group", "true".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
        secret_options: None,
    });
    Ok(ContainerDefinition {
        name: Some(name.to_string()),
        image: Some(image.to_string()),
        essential: Some(f.contains_key(&key("essential", i))),
        memory: number(f, &key("container_memory", i), &format!("{which} memory"))?,
        cpu: number(f, &key("container_cpu", i), &format!("{which} CPU"))?,
        port_mappings: port.map(|p| {
            vec![PortMapping {
                container_port: Some(p),
                protocol: Some("tcp".into()),
                ..Default::default()
            }]
        }),
        environment: (!environment.is_empty()).then_some(environment),
        command: (!command.is_empty()).then_some(command),
        health_check,
        log_configuration,
        ..Default::default()
    })
}

/// The wizard's form, filled with `f` (after an error, what was typed stays).
pub fn form(f: &Form, csrf: &str) -> String {
    let v = |n: &str| esc(f.get(n).map(String::as_str).unwrap_or_default());
    // A submitted form says what was ticked; a fresh one (even with fields given in its
    // link) starts from the defaults.
    let fresh = !f.contains_key("submitted");
    let checked = |n: &str, default: bool| {
        if f.contains_key(n) || (fresh && default) {
            " checked"
        } else {
            ""
        }
    };
    let mut sizes = String::from("<option value=\"\">None (EC2: container sizes only)</option>");
    for (c, m) in berth_model::fargate::sizes() {
        let value = format!("{c}/{m}");
        let selected = if f.get("size") == Some(&value) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            sizes,
            "<option value=\"{value}\"{selected}>{} vCPU, {} GB</option>",
            f64::from(c) / 1024.0,
            f64::from(m) / 1024.0
        );
    }
    let mode = |m: &str| {
        if f.get("network_mode")
            .map(String::as_str)
            .unwrap_or("bridge")
            == m
        {
            " selected"
        } else {
            ""
        }
    };
    let mut containers = String::new();
    for i in 0..CONTAINERS {
        let k = |base: &str| key(base, i);
        let (legend, required) = if i == 0 {
            ("Container".to_string(), " required")
        } else {
            (
                format!("Container {} (optional: leave its name empty)", i + 1),
                "",
            )
        };
        if i > 0 {
            let open = if v(&k("container_name")).is_empty() {
                ""
            } else {
                " open"
            };
            let _ = write!(
                containers,
                "<details{open}><summary>Container {}</summary>",
                i + 1
            );
        }
        let _ = write!(
            containers,
            "<fieldset><legend>{legend}</legend>
<label for=\"{name_k}\">Name</label><input id=\"{name_k}\" name=\"{name_k}\"{required} value=\"{name}\">
<label for=\"{image_k}\">Image</label><input id=\"{image_k}\" name=\"{image_k}\"{required} value=\"{image}\">
<p><input type=\"checkbox\" id=\"{ess_k}\" name=\"{ess_k}\"{essential}><label for=\"{ess_k}\" class=\"inline\"> Essential</label></p>
<label for=\"{port_k}\">Container port (TCP)</label><input id=\"{port_k}\" name=\"{port_k}\" inputmode=\"numeric\" value=\"{port}\">
<label for=\"{mem_k}\">Memory hard limit (MiB)</label><input id=\"{mem_k}\" name=\"{mem_k}\" inputmode=\"numeric\" value=\"{memory}\">
<label for=\"{cpu_k}\">CPU units</label><input id=\"{cpu_k}\" name=\"{cpu_k}\" inputmode=\"numeric\" value=\"{cpu}\">
<label for=\"{env_k}\">Environment (NAME=VALUE, one a line)</label><textarea id=\"{env_k}\" name=\"{env_k}\" rows=\"3\">{environment}</textarea>
<label for=\"{cmd_k}\">Command (one argument a line)</label><textarea id=\"{cmd_k}\" name=\"{cmd_k}\" rows=\"3\">{command}</textarea>
<label for=\"{hc_k}\">Health check (a shell command; exit 0 is healthy)</label><input id=\"{hc_k}\" name=\"{hc_k}\" value=\"{health}\">
</fieldset>",
            name_k = k("container_name"),
            name = v(&k("container_name")),
            image_k = k("image"),
            image = v(&k("image")),
            ess_k = k("essential"),
            essential = checked(&k("essential"), true),
            port_k = k("port"),
            port = v(&k("port")),
            mem_k = k("container_memory"),
            memory = v(&k("container_memory")),
            cpu_k = k("container_cpu"),
            cpu = v(&k("container_cpu")),
            env_k = k("environment"),
            environment = v(&k("environment")),
            cmd_k = k("command"),
            command = v(&k("command")),
            hc_k = k("health_command"),
            health = v(&k("health_command")),
        );
        if i > 0 {
            containers.push_str("</details>");
        }
    }
    format!(
        "<form method=\"post\" action=\"/console/wizard\" id=\"wizard\">{csrf}<input type=\"hidden\" name=\"submitted\" value=\"1\">
<fieldset><legend>Task</legend>
<label for=\"family\">Family</label><input id=\"family\" name=\"family\" required value=\"{family}\">
<fieldset><legend>Launch type compatibility</legend>
<input type=\"checkbox\" id=\"ec2\" name=\"ec2\"{ec2}><label for=\"ec2\" class=\"inline\"> EC2</label>
<input type=\"checkbox\" id=\"fargate\" name=\"fargate\"{fargate}><label for=\"fargate\" class=\"inline\"> FARGATE</label>
</fieldset>
<label for=\"size\">Task size (CPU and memory; required for FARGATE)</label><select id=\"size\" name=\"size\">{sizes}</select>
<label for=\"network_mode\">Network mode (FARGATE is always awsvpc)</label><select id=\"network_mode\" name=\"network_mode\">
<option{bridge}>bridge</option><option{awsvpc}>awsvpc</option><option{host}>host</option></select>
<p><input type=\"checkbox\" id=\"logs\" name=\"logs\"{logs}><label for=\"logs\" class=\"inline\"> Collect the containers' logs in CloudWatch Logs (awslogs, group /ecs/FAMILY)</label></p>
</fieldset>
{containers}
<h2>JSON preview</h2><pre id=\"preview\" aria-live=\"polite\">Fill in the form to see the task definition.</pre>
<button type=\"submit\">Create</button></form>",
        csrf = csrf_field(csrf),
        family = v("family"),
        ec2 = checked("ec2", true),
        fargate = checked("fargate", false),
        bridge = mode("bridge"),
        awsvpc = mode("awsvpc"),
        host = mode("host"),
        logs = checked("logs", true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_of(pairs: &[(&str, &str)]) -> Form {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_fargate_form_makes_an_awsvpc_definition_with_its_size() {
        let f = form_of(&[
            ("family", "web"),
            ("fargate", "on"),
            ("size", "256/512"),
            ("container_name", "app"),
            ("image", "busybox"),
            ("essential", "on"),
            ("port", "8080"),
            ("environment", "A=1\r\nB=x=y\r\n"),
            ("command", "httpd\n-f\n"),
            ("logs", "on"),
        ]);
        let r = request(&f, "eu-west-1").expect("valid");
        assert_eq!(
            r.requires_compatibilities,
            Some(vec!["FARGATE".to_string()])
        );
        assert_eq!(r.network_mode.as_deref(), Some("awsvpc"));
        assert_eq!(
            (r.cpu.as_deref(), r.memory.as_deref()),
            (Some("256"), Some("512"))
        );
        let c = &r.container_definitions.as_ref().expect("one")[0];
        assert_eq!(c.essential, Some(true));
        assert_eq!(c.command, Some(vec!["httpd".to_string(), "-f".to_string()]));
        let env = c.environment.as_ref().expect("env");
        assert_eq!(env[1].value.as_deref(), Some("x=y"));
        let logs = c.log_configuration.as_ref().expect("logs");
        assert_eq!(
            logs.options.as_ref().expect("options")["awslogs-region"],
            "eu-west-1"
        );
    }

    #[test]
    fn named_extra_containers_join_the_first() {
        let mut f = form_of(&[
            ("family", "web"),
            ("ec2", "on"),
            ("container_name", "app"),
            ("image", "app:1"),
            ("essential", "on"),
            ("container_name_3", "sidecar"),
            ("image_3", "proxy:1"),
            ("port_3", "9000"),
        ]);
        let r = request(&f, "r").expect("valid");
        let c = r.container_definitions.expect("containers");
        assert_eq!(c.len(), 2, "the unnamed second container is left out");
        assert_eq!(c[1].name.as_deref(), Some("sidecar"));
        assert_eq!(c[1].essential, Some(false), "unticked");
        assert_eq!(
            c[1].port_mappings.as_ref().expect("port")[0].container_port,
            Some(9000)
        );
        f.remove("image_3");
        assert_eq!(
            request(&f, "r").expect_err("no image"),
            "Container 3 (sidecar) needs an image"
        );
        f.insert("image_3".into(), "proxy:1".into());
        f.insert("container_name_10".into(), "tenth".into());
        f.insert("image_10".into(), "t:1".into());
        let c = request(&f, "r")
            .expect("valid")
            .container_definitions
            .expect("containers");
        assert_eq!(c.len(), 3, "as many containers as a task definition takes");
        assert_eq!(c[2].name.as_deref(), Some("tenth"));
        let h = form(&f, "tok");
        assert!(
            h.contains("<details open><summary>Container 3</summary>"),
            "a filled container shows"
        );
        assert!(
            h.contains("<details><summary>Container 4</summary>"),
            "an empty one is folded"
        );
        assert!(h.contains("for=\"image_10\""), "room for ten");
        assert!(!h.contains("image_11"), "and no more");
    }

    #[test]
    fn a_bad_form_says_which_field() {
        let base = [
            ("family", "web"),
            ("ec2", "on"),
            ("container_name", "app"),
            ("image", "busybox"),
        ];
        assert!(request(&form_of(&base), "r").is_ok());
        let mut f = form_of(&base);
        f.remove("ec2");
        assert_eq!(
            request(&f, "r").expect_err("no launch type"),
            "Tick EC2, FARGATE or both"
        );
        let mut f = form_of(&base);
        f.remove("image");
        assert_eq!(request(&f, "r").expect_err("no image"), "Image is required");
        let mut f = form_of(&base);
        f.insert("fargate".into(), "on".into());
        assert!(request(&f, "r").expect_err("size").contains("task size"));
        let mut f = form_of(&base);
        f.insert("port".into(), "http".into());
        assert!(request(&f, "r").expect_err("port").contains("'http'"));
        let mut f = form_of(&base);
        f.insert("environment".into(), "NOEQUALS".into());
        assert!(request(&f, "r").expect_err("env").contains("NOEQUALS"));
    }

    #[test]
    fn the_form_keeps_what_was_typed_and_labels_every_field() {
        let f = form_of(&[("family", "<web>"), ("size", "512/1024")]);
        let h = form(&f, "tok");
        assert!(
            h.contains("id=\"ec2\" name=\"ec2\" checked"),
            "a fresh form starts from the defaults"
        );
        let submitted = form_of(&[("family", "web"), ("submitted", "1")]);
        assert!(
            !form(&submitted, "tok").contains("id=\"ec2\" name=\"ec2\" checked"),
            "a submitted form keeps what was unticked"
        );
        assert!(h.contains("value=\"&lt;web&gt;\""), "escaped and kept");
        assert!(h.contains("<option value=\"512/1024\" selected>"));
        for id in [
            "family",
            "image",
            "container_name",
            "port",
            "size",
            "environment",
            "logs",
            "container_name_2",
            "image_3",
            "health_command_3",
        ] {
            assert!(h.contains(&format!("for=\"{id}\"")), "a label for {id}");
        }
    }
}
