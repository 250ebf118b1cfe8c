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
    format!("{FAMILIES}{family}")
}
pub const FAMILIES: &str = "families/";

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
/// Every region's records, each under [`region_prefix`]; at the store's root beside them only
/// users' access keys and [`ADMIN_KEY`].
pub const REGIONS: &str = "regions/";
/// `task-set-tokens/CLUSTER/SERVICE/TOKEN` → the id of the task set CreateTaskSet made for
/// that clientToken.
pub const TASK_SET_TOKENS: &str = "task-set-tokens/";
pub fn region_prefix(region: &str) -> String {
    format!("regions/{region}/")
}
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

/// `service-deployments/CLUSTER/SERVICE/DEPLOYMENT_ID` → a deployment's history
/// (`deployments::Record`: its ServiceDeployment and ServiceRevision).
pub const SERVICE_DEPLOYMENTS: &str = "service-deployments/";
pub fn service_deployments_of(cluster: &str, service: &str) -> String {
    format!("service-deployments/{cluster}/{service}/")
}

/// `protection/CLUSTER/TASK_ID` → a service task's scale-in protection
/// (`protection::Protection`, its expiration date).
pub const PROTECTION: &str = "protection/";
pub fn protection(cluster: &str, id: &str) -> String {
    format!("protection/{cluster}/{id}")
}
pub fn protections_of(cluster: &str) -> String {
    format!("protection/{cluster}/")
}

/// `capacity-providers/NAME` → an Auto Scaling group capacity provider (`ecs::CapacityProvider`;
/// FARGATE and FARGATE_SPOT are built in and not stored).
pub const CAPACITY_PROVIDERS: &str = "capacity-providers/";
pub fn capacity_provider(name: &str) -> String {
    format!("capacity-providers/{name}")
}
/// `capacity-provider-groups/GROUP` → the provider of an Auto Scaling group (one per group).
pub const CAPACITY_PROVIDER_GROUPS: &str = "capacity-provider-groups/";
pub fn capacity_provider_group(group: &str) -> String {
    format!("capacity-provider-groups/{group}")
}
/// `capacity-provider-owners/NAME` → the cluster an Auto Scaling group provider serves (one).
pub const CAPACITY_PROVIDER_OWNERS: &str = "capacity-provider-owners/";
pub fn capacity_provider_owner(name: &str) -> String {
    format!("capacity-provider-owners/{name}")
}

/// `task-targets/CLUSTER/TASK_ID` → what was registered in target groups for a service's task
/// (`targets::TaskTargets`).
pub const TASK_TARGETS: &str = "task-targets/";
pub fn task_targets(cluster: &str, id: &str) -> String {
    format!("task-targets/{cluster}/{id}")
}
pub fn task_targets_of(cluster: &str) -> String {
    format!("task-targets/{cluster}/")
}

/// Elastic Load Balancing's records, all under one prefix:
/// `elb/lbs/NAME` → a load balancer and its attributes, `elb/tgs/NAME` → a target group, its
/// attributes and the listeners using it, `elb/listeners/LB_ID/ID` → `elbv2::Listener`,
/// `elb/rules/LISTENER_ID/ID` → `elbv2::Rule`, `elb/targets/GROUP_ID/ID|PORT` → a target,
/// `elb/tags/ARN` → `Vec<elbv2::Tag>`.
pub const ELB: &str = "elb/";
pub fn elb_lb(name: &str) -> String {
    format!("elb/lbs/{name}")
}
pub const ELB_LBS: &str = "elb/lbs/";
pub fn elb_tg(name: &str) -> String {
    format!("elb/tgs/{name}")
}
pub const ELB_TGS: &str = "elb/tgs/";
pub fn elb_listener(lb_id: &str, id: &str) -> String {
    format!("elb/listeners/{lb_id}/{id}")
}
pub fn elb_listeners_of(lb_id: &str) -> String {
    format!("elb/listeners/{lb_id}/")
}
pub const ELB_LISTENERS: &str = "elb/listeners/";
pub fn elb_rule(listener_id: &str, id: &str) -> String {
    format!("elb/rules/{listener_id}/{id}")
}
pub fn elb_rules_of(listener_id: &str) -> String {
    format!("elb/rules/{listener_id}/")
}
pub fn elb_target(group_id: &str, id: &str, port: i32) -> String {
    format!("elb/targets/{group_id}/{id}|{port}")
}
pub fn elb_targets_of(group_id: &str) -> String {
    format!("elb/targets/{group_id}/")
}
pub const ELB_TARGETS: &str = "elb/targets/";
pub fn elb_tags(arn: &str) -> String {
    format!("elb/tags/{arn}")
}

/// `metering/CLUSTER/TASK_ID` → a stopped FARGATE task's metered use (`metering::TaskUsage`).
/// When an instance's agent was last heard from, by any server (on a store several servers
/// share): `presence/INSTANCE_ARN`, epoch seconds.
pub const PRESENCE: &str = "presence/";
pub fn presence(instance_arn: &str) -> String {
    format!("{PRESENCE}{instance_arn}")
}
/// The instance ARN of a `presence/` key.
pub fn presence_instance(key: &str) -> Option<&str> {
    key.strip_prefix(PRESENCE)
}

pub const METERING: &str = "metering/";
pub fn metering(cluster: &str, id: &str) -> String {
    format!("metering/{cluster}/{id}")
}
pub fn metering_of(cluster: &str) -> String {
    format!("metering/{cluster}/")
}

/// EC2's VPC records, all under one prefix: `ec2/vpcs/ID` → `ec2::VpcRecord`,
/// `ec2/subnets/ID` → `ec2::Subnet`, `ec2/sgs/ID` → `ec2::SgRecord` (the group and its rules),
/// `ec2/enis/ID` → `ec2::EniRecord` (an awsvpc task's interface), `ec2/ips/SUBNET/IP` and
/// `ec2/public-ips/IP` → the interface holding that address (written with it, so two
/// interfaces never get one address), `ec2/default-vpc` → the default VPC's id.
pub const EC2: &str = "ec2/";
pub const EC2_VPCS: &str = "ec2/vpcs/";
pub fn ec2_vpc(id: &str) -> String {
    format!("ec2/vpcs/{id}")
}
pub const EC2_SUBNETS: &str = "ec2/subnets/";
pub fn ec2_subnet(id: &str) -> String {
    format!("ec2/subnets/{id}")
}
pub const EC2_SGS: &str = "ec2/sgs/";
pub fn ec2_sg(id: &str) -> String {
    format!("ec2/sgs/{id}")
}
pub const EC2_ENIS: &str = "ec2/enis/";
pub fn ec2_eni(id: &str) -> String {
    format!("ec2/enis/{id}")
}
pub const EC2_IPS: &str = "ec2/ips/";
pub fn ec2_ip(subnet: &str, ip: &str) -> String {
    format!("ec2/ips/{subnet}/{ip}")
}
pub const EC2_PUBLIC_IPS: &str = "ec2/public-ips/";
pub fn ec2_public_ip(ip: &str) -> String {
    format!("ec2/public-ips/{ip}")
}
pub const EC2_DEFAULT_VPC: &str = "ec2/default-vpc";

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
