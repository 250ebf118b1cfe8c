//! EC2's VPC part over the wire, through the real AWS CLI: the default VPC, VPCs, subnets,
//! security groups and their rules, availability zones, tags and filters, with EC2's error
//! codes and nothing stored by a refused call; and ECS's checks of an `awsvpc` task's
//! network configuration.

#![allow(clippy::unwrap_used)]

mod common;

use common::{aws_cli, aws_json, TestServer};
use serde_json::{json, Value};

fn cli_error(r: Result<Value, String>, code: &str) -> String {
    let e = r.expect_err(&format!("expected {code}"));
    assert!(
        e.contains(&format!("({code})")),
        "expected {code}, got: {e}"
    );
    e
}

fn ids(v: &Value, list: &str, id: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {v}"))
        .iter()
        .map(|x| x[id].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_drives_vpcs_subnets_and_zones_with_ec2s_errors() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let ec2 = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "ec2", args);

    // The region's zones, and a default VPC with a default subnet in each.
    let zones = ec2(&["describe-availability-zones"]).unwrap();
    assert_eq!(
        ids(&zones, "AvailabilityZones", "ZoneName"),
        ["us-east-1a", "us-east-1b", "us-east-1c"]
    );
    assert_eq!(zones["AvailabilityZones"][0]["ZoneId"], "use1-az1");
    let vpcs = ec2(&["describe-vpcs", "--filters", "Name=is-default,Values=true"]).unwrap();
    assert_eq!(vpcs["Vpcs"].as_array().unwrap().len(), 1, "{vpcs}");
    assert_eq!(vpcs["Vpcs"][0]["CidrBlock"], "172.31.0.0/16");
    let default_vpc = vpcs["Vpcs"][0]["VpcId"].as_str().unwrap().to_string();
    let subnets = ec2(&[
        "describe-subnets",
        "--filters",
        &format!("Name=vpc-id,Values={default_vpc}"),
    ])
    .unwrap();
    let mut zones_of: Vec<&str> = subnets["Subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["AvailabilityZone"].as_str().unwrap())
        .collect();
    zones_of.sort();
    assert_eq!(zones_of, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert!(subnets["Subnets"][0]["DefaultForAz"].as_bool().unwrap());
    assert_eq!(subnets["Subnets"][0]["AvailableIpAddressCount"], 4091);

    // Bad blocks: EC2's codes, nothing stored.
    cli_error(
        ec2(&["create-vpc", "--cidr-block", "10.0.0.0/8"]),
        "InvalidVpc.Range",
    );
    cli_error(
        ec2(&["create-vpc", "--cidr-block", "10.0.0.1/16"]),
        "InvalidParameterValue",
    );
    cli_error(
        ec2(&["create-vpc", "--cidr-block", "not-a-block"]),
        "InvalidParameterValue",
    );
    assert_eq!(
        ec2(&["describe-vpcs"]).unwrap()["Vpcs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let vpc = ec2(&[
        "create-vpc",
        "--cidr-block",
        "10.0.0.0/16",
        "--tag-specifications",
        "ResourceType=vpc,Tags=[{Key=Name,Value=app}]",
    ])
    .unwrap();
    let vpc_id = vpc["Vpc"]["VpcId"].as_str().unwrap().to_string();
    assert!(vpc_id.starts_with("vpc-"), "{vpc}");
    assert_eq!(vpc["Vpc"]["State"], "available");
    assert_eq!(vpc["Vpc"]["IsDefault"], false);
    let tagged = ec2(&["describe-vpcs", "--filters", "Name=tag:Name,Values=ap*"]).unwrap();
    assert_eq!(ids(&tagged, "Vpcs", "VpcId"), std::slice::from_ref(&vpc_id));
    cli_error(
        ec2(&["describe-vpcs", "--vpc-ids", "vpc-00000000000000000"]),
        "InvalidVpcID.NotFound",
    );
    cli_error(
        ec2(&["describe-vpcs", "--filters", "Name=colour,Values=blue"]),
        "InvalidParameterValue",
    );

    // Every VPC comes with its default security group.
    let groups = ec2(&[
        "describe-security-groups",
        "--filters",
        &format!("Name=vpc-id,Values={vpc_id}"),
    ])
    .unwrap();
    assert_eq!(
        groups["SecurityGroups"][0]["GroupName"], "default",
        "{groups}"
    );

    // Subnets: inside the VPC, not overlapping, in one of the region's zones.
    cli_error(
        ec2(&[
            "create-subnet",
            "--vpc-id",
            &vpc_id,
            "--cidr-block",
            "10.1.0.0/24",
        ]),
        "InvalidSubnet.Range",
    );
    cli_error(
        ec2(&[
            "create-subnet",
            "--vpc-id",
            &vpc_id,
            "--cidr-block",
            "10.0.1.0/24",
            "--availability-zone",
            "us-east-1z",
        ]),
        "InvalidParameterValue",
    );
    cli_error(
        ec2(&[
            "create-subnet",
            "--vpc-id",
            "vpc-00000000000000000",
            "--cidr-block",
            "10.0.1.0/24",
        ]),
        "InvalidVpcID.NotFound",
    );
    let a = ec2(&[
        "create-subnet",
        "--vpc-id",
        &vpc_id,
        "--cidr-block",
        "10.0.1.0/24",
        "--availability-zone",
        "us-east-1a",
    ])
    .unwrap();
    let subnet_a = a["Subnet"]["SubnetId"].as_str().unwrap().to_string();
    assert_eq!(a["Subnet"]["AvailableIpAddressCount"], 251, "{a}");
    cli_error(
        ec2(&[
            "create-subnet",
            "--vpc-id",
            &vpc_id,
            "--cidr-block",
            "10.0.1.128/25",
        ]),
        "InvalidSubnet.Conflict",
    );
    let b = ec2(&[
        "create-subnet",
        "--vpc-id",
        &vpc_id,
        "--cidr-block",
        "10.0.2.0/24",
        "--availability-zone-id",
        "use1-az2",
    ])
    .unwrap();
    assert_eq!(b["Subnet"]["AvailabilityZone"], "us-east-1b");
    let subnet_b = b["Subnet"]["SubnetId"].as_str().unwrap().to_string();
    let mine = ec2(&[
        "describe-subnets",
        "--filters",
        &format!("Name=vpc-id,Values={vpc_id}"),
        "Name=availability-zone,Values=us-east-1b",
    ])
    .unwrap();
    assert_eq!(
        ids(&mine, "Subnets", "SubnetId"),
        std::slice::from_ref(&subnet_b)
    );

    // A VPC with subnets cannot go; once they are gone it can, with its default group.
    cli_error(
        ec2(&["delete-vpc", "--vpc-id", &vpc_id]),
        "DependencyViolation",
    );
    ec2(&["delete-subnet", "--subnet-id", &subnet_a]).unwrap();
    ec2(&["delete-subnet", "--subnet-id", &subnet_b]).unwrap();
    cli_error(
        ec2(&["delete-subnet", "--subnet-id", &subnet_b]),
        "InvalidSubnetID.NotFound",
    );
    ec2(&["delete-vpc", "--vpc-id", &vpc_id]).unwrap();
    let left = ec2(&["describe-security-groups"]).unwrap();
    assert!(
        left["SecurityGroups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["VpcId"] == default_vpc.as_str()),
        "the deleted VPC's default group went with it: {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_drives_security_groups_and_their_rules() {
    let Some(cli) = aws_cli() else { return };
    let s = TestServer::start().await;
    let ec2 = |args: &[&str]| aws_json(&cli, &s, &s.secret_key, "ec2", args);

    cli_error(
        ec2(&[
            "create-security-group",
            "--group-name",
            "sg-web",
            "--description",
            "web",
        ]),
        "InvalidParameterValue",
    );
    let web = ec2(&[
        "create-security-group",
        "--group-name",
        "web",
        "--description",
        "web servers",
    ])
    .unwrap();
    let web_id = web["GroupId"].as_str().unwrap().to_string();
    cli_error(
        ec2(&[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "again",
        ]),
        "InvalidGroup.Duplicate",
    );
    let lb = ec2(&[
        "create-security-group",
        "--group-name",
        "lb",
        "--description",
        "load balancers",
    ])
    .unwrap();
    let lb_id = lb["GroupId"].as_str().unwrap().to_string();

    // New groups let everything out and nothing in.
    let g = ec2(&["describe-security-groups", "--group-ids", &web_id]).unwrap();
    let g = &g["SecurityGroups"][0];
    assert_eq!(g["IpPermissions"], json!([]), "{g}");
    assert_eq!(g["IpPermissionsEgress"][0]["IpProtocol"], "-1");
    assert_eq!(
        g["IpPermissionsEgress"][0]["IpRanges"][0]["CidrIp"],
        "0.0.0.0/0"
    );

    // Rules: the flat form and IpPermissions, from a CIDR and from a group.
    let r = ec2(&[
        "authorize-security-group-ingress",
        "--group-id",
        &web_id,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    ])
    .unwrap();
    assert_eq!(r["Return"], true);
    assert!(r["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        .as_str()
        .unwrap()
        .starts_with("sgr-"));
    ec2(&[
        "authorize-security-group-ingress",
        "--group-id",
        &web_id,
        "--ip-permissions",
        &format!("IpProtocol=tcp,FromPort=8080,ToPort=8081,UserIdGroupPairs=[{{GroupId={lb_id}}}]"),
    ])
    .unwrap();
    cli_error(
        ec2(&[
            "authorize-security-group-ingress",
            "--group-id",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "0.0.0.0/0",
        ]),
        "InvalidPermission.Duplicate",
    );
    cli_error(
        ec2(&[
            "authorize-security-group-ingress",
            "--group-id",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "90-80",
            "--cidr",
            "0.0.0.0/0",
        ]),
        "InvalidParameterValue",
    );
    cli_error(
        ec2(&[
            "authorize-security-group-ingress",
            "--group-id",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--cidr",
            "10.0.0.0/33",
        ]),
        "InvalidParameterValue",
    );
    cli_error(
        ec2(&[
            "authorize-security-group-ingress",
            "--group-id",
            "sg-00000000000000000",
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--cidr",
            "10.0.0.0/8",
        ]),
        "InvalidGroup.NotFound",
    );
    let g = ec2(&["describe-security-groups", "--group-ids", &web_id]).unwrap();
    let perms = g["SecurityGroups"][0]["IpPermissions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(perms.len(), 2, "{g}");
    assert!(perms.iter().any(|p| p["FromPort"] == 8080
        && p["ToPort"] == 8081
        && p["UserIdGroupPairs"][0]["GroupId"] == lb_id.as_str()));
    let rules = ec2(&[
        "describe-security-group-rules",
        "--filters",
        &format!("Name=group-id,Values={web_id}"),
    ])
    .unwrap();
    assert_eq!(
        rules["SecurityGroupRules"].as_array().unwrap().len(),
        3,
        "{rules}"
    );

    // A group another group's rule names cannot be deleted; nor can a default group.
    cli_error(
        ec2(&["delete-security-group", "--group-id", &lb_id]),
        "DependencyViolation",
    );
    let default = ec2(&[
        "describe-security-groups",
        "--filters",
        "Name=group-name,Values=default",
    ])
    .unwrap();
    let default_id = default["SecurityGroups"][0]["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    cli_error(
        ec2(&["delete-security-group", "--group-id", &default_id]),
        "CannotDelete",
    );

    // Revoking: a rule that is not there is EC2's NotFound; one that is goes.
    cli_error(
        ec2(&[
            "revoke-security-group-ingress",
            "--group-id",
            &web_id,
            "--protocol",
            "tcp",
            "--port",
            "443",
            "--cidr",
            "0.0.0.0/0",
        ]),
        "InvalidPermission.NotFound",
    );
    ec2(&[
        "revoke-security-group-ingress",
        "--group-id",
        &web_id,
        "--ip-permissions",
        &format!("IpProtocol=tcp,FromPort=8080,ToPort=8081,UserIdGroupPairs=[{{GroupId={lb_id}}}]"),
    ])
    .unwrap();
    ec2(&["delete-security-group", "--group-id", &lb_id]).unwrap();

    // Tags on a group, and DescribeTags.
    ec2(&[
        "create-tags",
        "--resources",
        &web_id,
        "--tags",
        "Key=tier,Value=front",
    ])
    .unwrap();
    let tags = ec2(&["describe-tags", "--filters", "Name=key,Values=tier"]).unwrap();
    assert_eq!(tags["Tags"][0]["ResourceId"], web_id.as_str(), "{tags}");
    assert_eq!(tags["Tags"][0]["ResourceType"], "security-group");
    cli_error(
        ec2(&[
            "create-tags",
            "--resources",
            "i-0123",
            "--tags",
            "Key=a,Value=b",
        ]),
        "InvalidID",
    );
    ec2(&["delete-tags", "--resources", &web_id, "--tags", "Key=tier"]).unwrap();
    let tags = ec2(&["describe-tags"]).unwrap();
    assert_eq!(tags["Tags"], json!([]), "{tags}");
}
