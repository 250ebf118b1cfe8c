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

/// The request the form asks for, or what is wrong with the form (the server checks the
/// rest, as it checks every RegisterTaskDefinition).
pub fn request(f: &Form, region: &str) -> Result<RegisterTaskDefinitionRequest, String> {
    let family = field(f, "family").ok_or("Family is required")?;
    let name = field(f, "container_name").ok_or("Container name is required")?;
    let image = field(f, "image").ok_or("Image is required")?;
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
    let port = number(f, "port", "Container port")?;
    let mut environment = Vec::new();
    for line in field(f, "environment").unwrap_or_default().lines() {
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
    let command: Vec<String> = field(f, "command")
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let health_check = field(f, "health_command").map(|c| HealthCheck {
        command: Some(vec!["CMD-SHELL".into(), c.to_string()]),
        ..Default::default()
    });
    let log_configuration = f.contains_key("logs").then(|| LogConfiguration {
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
    let container = ContainerDefinition {
        name: Some(name.to_string()),
        image: Some(image.to_string()),
        essential: Some(f.contains_key("essential")),
        memory: number(f, "container_memory", "Container memory")?,
        cpu: number(f, "container_cpu", "Container CPU")?,
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
    };
    Ok(RegisterTaskDefinitionRequest {
        family: Some(family.to_string()),
        requires_compatibilities: Some(compat),
        network_mode: Some(network_mode),
        cpu,
        memory,
        container_definitions: Some(vec![container]),
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
</fieldset>
<fieldset><legend>Container</legend>
<label for=\"container_name\">Name</label><input id=\"container_name\" name=\"container_name\" required value=\"{container_name}\">
<label for=\"image\">Image</label><input id=\"image\" name=\"image\" required value=\"{image}\">
<p><input type=\"checkbox\" id=\"essential\" name=\"essential\"{essential}><label for=\"essential\" class=\"inline\"> Essential</label></p>
<label for=\"port\">Container port (TCP)</label><input id=\"port\" name=\"port\" inputmode=\"numeric\" value=\"{port}\">
<label for=\"container_memory\">Memory hard limit (MiB)</label><input id=\"container_memory\" name=\"container_memory\" inputmode=\"numeric\" value=\"{container_memory}\">
<label for=\"container_cpu\">CPU units</label><input id=\"container_cpu\" name=\"container_cpu\" inputmode=\"numeric\" value=\"{container_cpu}\">
<label for=\"environment\">Environment (NAME=VALUE, one a line)</label><textarea id=\"environment\" name=\"environment\" rows=\"3\">{environment}</textarea>
<label for=\"command\">Command (one argument a line)</label><textarea id=\"command\" name=\"command\" rows=\"3\">{command}</textarea>
<label for=\"health_command\">Health check (a shell command; exit 0 is healthy)</label><input id=\"health_command\" name=\"health_command\" value=\"{health_command}\">
<p><input type=\"checkbox\" id=\"logs\" name=\"logs\"{logs}><label for=\"logs\" class=\"inline\"> Collect logs in CloudWatch Logs (awslogs, group /ecs/FAMILY)</label></p>
</fieldset>
<h2>JSON preview</h2><pre id=\"preview\" aria-live=\"polite\">Fill in the form to see the task definition.</pre>
<button type=\"submit\">Create</button></form>",
        csrf = csrf_field(csrf),
        family = v("family"),
        ec2 = checked("ec2", true),
        fargate = checked("fargate", false),
        bridge = mode("bridge"),
        awsvpc = mode("awsvpc"),
        host = mode("host"),
        container_name = v("container_name"),
        image = v("image"),
        essential = checked("essential", true),
        port = v("port"),
        container_memory = v("container_memory"),
        container_cpu = v("container_cpu"),
        environment = v("environment"),
        command = v("command"),
        health_command = v("health_command"),
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
        ] {
            assert!(h.contains(&format!("for=\"{id}\"")), "a label for {id}");
        }
    }
}
