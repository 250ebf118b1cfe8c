//! Where each record lives in the store. Records are the ECS output shapes as JSON, so a
//! describe is a read and the store holds every member the user gave.

/// `clusters/NAME` → `ecs::Cluster` (without the derived counts).
pub fn cluster(name: &str) -> String {
    format!("clusters/{name}")
}
pub const CLUSTERS: &str = "clusters/";

/// `taskdefs/FAMILY#REVISION` → `ecs::TaskDefinition`. `#` sorts below every character a family
/// may hold, so key order is (family, revision) order; revisions are zero-padded for the same
/// reason.
pub fn task_definition(family: &str, revision: i32) -> String {
    format!("taskdefs/{family}#{revision:010}")
}
pub fn task_definition_family_prefix(family: &str) -> String {
    format!("taskdefs/{family}#")
}
pub const TASK_DEFINITIONS: &str = "taskdefs/";

/// `families/FAMILY` → the last revision number handed out, so numbers are never reused.
pub fn family(family: &str) -> String {
    format!("families/{family}")
}

/// `tags/ARN` → `Vec<ecs::Tag>`.
pub fn tags(arn: &str) -> String {
    format!("tags/{arn}")
}

/// `settings/PRINCIPAL/NAME` → the principal's value; `settings-default/NAME` → the account's.
pub fn setting(principal: &str, name: &str) -> String {
    format!("settings/{principal}/{name}")
}
pub fn settings_of(principal: &str) -> String {
    format!("settings/{principal}/")
}
pub fn setting_default(name: &str) -> String {
    format!("settings-default/{name}")
}

/// `auth/keys/ACCESS_KEY` → the key's secret and principal; `auth/admin` → the admin key id.
pub fn access_key(id: &str) -> String {
    format!("auth/keys/{id}")
}
pub const ADMIN_KEY: &str = "auth/admin";
pub const ACCESS_KEYS: &str = "auth/keys/";

/// Counts of what a cluster holds; written by the issues that bring instances, tasks and
/// services, read by DescribeClusters and DeleteCluster.
pub fn instances_of(cluster: &str) -> String {
    format!("instances/{cluster}/")
}
pub fn tasks_of(cluster: &str) -> String {
    format!("tasks/{cluster}/")
}
pub fn services_of(cluster: &str) -> String {
    format!("services/{cluster}/")
}

/// What dev mode's reset wipes: everything but the access keys.
pub const RESETTABLE: &[&str] = &[
    "clusters/",
    "taskdefs/",
    "families/",
    "tags/",
    "settings/",
    "settings-default/",
    "instances/",
    "tasks/",
    "services/",
    "runtokens/",
];

/// `instances/CLUSTER/ID` → `ecs::ContainerInstance`, with `remainingResources` kept current by
/// every placement and every task that stops (in the same transaction).
pub fn instance(cluster: &str, id: &str) -> String {
    format!("instances/{cluster}/{id}")
}

/// `services/CLUSTER/NAME` → `ecs::Service`, deployments and events included.
pub fn service(cluster: &str, name: &str) -> String {
    format!("services/{cluster}/{name}")
}

/// `tasks/CLUSTER/ID` → `ecs::Task`.
pub fn task(cluster: &str, id: &str) -> String {
    format!("tasks/{cluster}/{id}")
}

/// `runtokens/CLUSTER/CLIENT_TOKEN` → the task ARNs a RunTask with that `clientToken` started.
pub fn run_token(cluster: &str, token: &str) -> String {
    format!("runtokens/{cluster}/{token}")
}

/// `auth/join-token/CLUSTER` → the registration token agents present to join that cluster.
pub fn join_token(cluster: &str) -> String {
    format!("auth/join-token/{cluster}")
}
pub const JOIN_TOKENS: &str = "auth/join-token/";
