//! The `aws-sdk-ecs` crate, unchanged, against Berth.
#![allow(clippy::unwrap_used)]

mod common;
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{ContainerDefinition, PortMapping, Tag, TaskDefinitionStatus};
use common::TestServer;

fn client(s: &TestServer, secret: &str) -> aws_sdk_ecs::Client {
    common::sdk_client!(aws_sdk_ecs, s, secret)
}

#[tokio::test]
async fn sdk_drives_clusters_and_task_definitions() {
    let s = TestServer::start().await;
    let ecs = client(&s, &s.secret_key);
    let c = ecs
        .create_cluster()
        .cluster_name("sdk")
        .tags(Tag::builder().key("k").value("v").build())
        .send()
        .await
        .unwrap();
    assert_eq!(c.cluster().unwrap().cluster_name(), Some("sdk"));
    let d = ecs
        .describe_clusters()
        .clusters("sdk")
        .clusters("ghost")
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .unwrap();
    assert_eq!(d.clusters()[0].tags()[0].key(), Some("k"));
    assert_eq!(d.failures()[0].reason(), Some("MISSING"));
    assert_eq!(
        ecs.list_clusters()
            .send()
            .await
            .unwrap()
            .cluster_arns()
            .len(),
        1
    );

    let container = ContainerDefinition::builder()
        .name("web")
        .image("busybox")
        .memory(64)
        .port_mappings(PortMapping::builder().container_port(8080).build())
        .build();
    let r = ecs
        .register_task_definition()
        .family("sdkweb")
        .container_definitions(container.clone())
        .send()
        .await
        .unwrap();
    let td = r.task_definition().unwrap();
    assert_eq!(td.revision(), 1);
    assert_eq!(td.status(), Some(&TaskDefinitionStatus::Active));
    assert!(
        td.registered_at().is_some(),
        "timestamps parse as epoch seconds"
    );
    ecs.register_task_definition()
        .family("sdkweb")
        .container_definitions(container)
        .send()
        .await
        .unwrap();
    let desc = ecs
        .describe_task_definition()
        .task_definition("sdkweb")
        .send()
        .await
        .unwrap();
    assert_eq!(desc.task_definition().unwrap().revision(), 2);
    let list = ecs
        .list_task_definitions()
        .family_prefix("sdk")
        .send()
        .await
        .unwrap();
    assert_eq!(list.task_definition_arns().len(), 2);
    let fams = ecs.list_task_definition_families().send().await.unwrap();
    assert_eq!(fams.families(), ["sdkweb"]);
    let dereg = ecs
        .deregister_task_definition()
        .task_definition("sdkweb:1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        dereg.task_definition().unwrap().status(),
        Some(&TaskDefinitionStatus::Inactive)
    );
    let del = ecs
        .delete_task_definitions()
        .task_definitions("sdkweb:1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        del.task_definitions()[0].status(),
        Some(&TaskDefinitionStatus::DeleteInProgress)
    );

    let arn = c.cluster().unwrap().cluster_arn().unwrap().to_string();
    ecs.tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("x").value("y").build())
        .send()
        .await
        .unwrap();
    ecs.untag_resource()
        .resource_arn(&arn)
        .tag_keys("k")
        .send()
        .await
        .unwrap();
    let tags = ecs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 1);
    ecs.put_account_setting()
        .name(aws_sdk_ecs::types::SettingName::ContainerInsights)
        .value("enabled")
        .send()
        .await
        .unwrap();
    let settings = ecs
        .list_account_settings()
        .effective_settings(true)
        .send()
        .await
        .unwrap();
    assert_eq!(settings.settings().len(), 10);
    ecs.update_cluster_settings()
        .cluster("sdk")
        .settings(
            aws_sdk_ecs::types::ClusterSetting::builder()
                .name(aws_sdk_ecs::types::ClusterSettingName::ContainerInsights)
                .value("enabled")
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs.update_cluster().cluster("sdk").send().await.unwrap();
    let gone = ecs.delete_cluster().cluster("sdk").send().await.unwrap();
    assert_eq!(gone.cluster().unwrap().status(), Some("INACTIVE"));
    s.stop().await;
}

#[tokio::test]
async fn sdk_sees_typed_errors() {
    let s = TestServer::start().await;
    let ecs = client(&s, &s.secret_key);
    let e = ecs
        .delete_cluster()
        .cluster("ghost")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_cluster_not_found_exception(),
        "{e:?}"
    );
    let e = ecs
        .describe_task_definition()
        .task_definition("ghost")
        .send()
        .await
        .unwrap_err();
    assert!(e.as_service_error().unwrap().is_client_exception(), "{e:?}");
    let e = ecs
        .create_cluster()
        .cluster_name("no spaces")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_invalid_parameter_exception(),
        "{e:?}"
    );
    let bad = client(&s, "wrong-secret");
    let e = bad.list_clusters().send().await.unwrap_err();
    assert_eq!(e.code(), Some("InvalidSignatureException"), "{e:?}");
    s.stop().await;
}

#[tokio::test]
async fn sdk_drives_auto_scaling_group_capacity_providers() {
    use aws_sdk_ecs::types::{
        AutoScalingGroupProvider, AutoScalingGroupProviderUpdate, CapacityProviderField,
        CapacityProviderStatus, CapacityProviderStrategyItem, ManagedScaling, ManagedScalingStatus,
    };
    let s = TestServer::start().await;
    let ecs = client(&s, &s.secret_key);
    ecs.create_cluster()
        .cluster_name("sdk")
        .send()
        .await
        .unwrap();
    let asg = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0b4d7c0e-1111-2222-3333-444455556666:autoScalingGroupName/sdk-asg";
    let created = ecs
        .create_capacity_provider()
        .name("sdk-cp")
        .auto_scaling_group_provider(
            AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn(asg)
                .managed_scaling(
                    ManagedScaling::builder()
                        .status(ManagedScalingStatus::Enabled)
                        .target_capacity(90)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .tags(Tag::builder().key("k").value("v").build())
        .send()
        .await
        .unwrap();
    let cp = created.capacity_provider().unwrap();
    assert_eq!(cp.status(), Some(&CapacityProviderStatus::Active));
    let scaling = cp
        .auto_scaling_group_provider()
        .unwrap()
        .managed_scaling()
        .unwrap();
    assert_eq!(scaling.target_capacity(), Some(90));
    assert_eq!(scaling.maximum_scaling_step_size(), Some(10_000));

    // The same group twice: ClientException.
    let e = ecs
        .create_capacity_provider()
        .name("sdk-cp-2")
        .auto_scaling_group_provider(
            AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn(asg)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(e.as_service_error().unwrap().is_client_exception(), "{e:?}");

    let d = ecs
        .describe_capacity_providers()
        .capacity_providers("sdk-cp")
        .include(CapacityProviderField::Tags)
        .send()
        .await
        .unwrap();
    assert_eq!(d.capacity_providers()[0].tags()[0].key(), Some("k"));
    let put = ecs
        .put_cluster_capacity_providers()
        .cluster("sdk")
        .capacity_providers("sdk-cp")
        .default_capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("sdk-cp")
                .weight(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.cluster().unwrap().capacity_providers(),
        ["sdk-cp".to_string()]
    );
    let updated = ecs
        .update_capacity_provider()
        .name("sdk-cp")
        .auto_scaling_group_provider(
            AutoScalingGroupProviderUpdate::builder()
                .managed_scaling(ManagedScaling::builder().target_capacity(50).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let scaling = updated
        .capacity_provider()
        .unwrap()
        .auto_scaling_group_provider()
        .unwrap()
        .managed_scaling()
        .unwrap();
    assert_eq!(scaling.target_capacity(), Some(50));
    assert_eq!(
        scaling.status(),
        Some(&ManagedScalingStatus::Enabled),
        "kept"
    );
    // Pages go by name, the built-in providers among the rest.
    ecs.create_capacity_provider()
        .name("Alpha-cp")
        .auto_scaling_group_provider(
            AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn("alpha-asg")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut token = None;
    for _ in 0..10 {
        let page = ecs
            .describe_capacity_providers()
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        names.extend(
            page.capacity_providers()
                .iter()
                .filter_map(|p| p.name().map(str::to_string)),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["Alpha-cp", "FARGATE", "FARGATE_SPOT", "sdk-cp"]);
    // Associated with a cluster: not deleted.
    let e = ecs
        .delete_capacity_provider()
        .capacity_provider("sdk-cp")
        .send()
        .await
        .unwrap_err();
    assert!(e.as_service_error().unwrap().is_client_exception(), "{e:?}");
    s.stop().await;
}

/// Task sets of a CODE_DEPLOY service through the SDK: the service's own PRIMARY set, a new
/// set made PRIMARY, the old one deleted, and ECS's typed errors.
#[tokio::test]
async fn sdk_drives_a_code_deploy_services_task_sets() {
    use aws_sdk_ecs::types::{DeploymentController, DeploymentControllerType, Scale, ScaleUnit};
    let s = TestServer::start().await;
    let ecs = client(&s, &s.secret_key);
    ecs.create_cluster()
        .cluster_name("bg")
        .send()
        .await
        .unwrap();
    let container = ContainerDefinition::builder()
        .name("web")
        .image("busybox")
        .memory(64)
        .build();
    for _ in 0..2 {
        ecs.register_task_definition()
            .family("bg")
            .container_definitions(container.clone())
            .send()
            .await
            .unwrap();
    }
    let svc = ecs
        .create_service()
        .cluster("bg")
        .service_name("web")
        .task_definition("bg:1")
        .desired_count(0)
        .deployment_controller(
            DeploymentController::builder()
                .r#type(DeploymentControllerType::CodeDeploy)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let svc = svc.service().unwrap();
    assert!(svc.deployments().is_empty());
    assert_eq!(svc.task_sets().len(), 1);
    let blue = svc.task_sets()[0].clone();
    assert_eq!(blue.status(), Some("PRIMARY"));

    let e = ecs
        .update_service()
        .cluster("bg")
        .service("web")
        .task_definition("bg:2")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_invalid_parameter_exception(),
        "{e:?}"
    );
    assert!(
        e.message().unwrap().starts_with(
            "Unable to update task definition on services with a CODE_DEPLOY deployment controller."
        ),
        "{e:?}"
    );

    let green = ecs
        .create_task_set()
        .cluster("bg")
        .service("web")
        .task_definition("bg:2")
        .external_id("green")
        .scale(
            Scale::builder()
                .value(50.0)
                .unit(ScaleUnit::Percent)
                .build(),
        )
        .tags(Tag::builder().key("color").value("green").build())
        .send()
        .await
        .unwrap();
    let green = green.task_set().unwrap().clone();
    assert_eq!(green.status(), Some("ACTIVE"));
    assert_eq!(green.computed_desired_count(), 0, "ceil(0 × 50 %)");
    let described = ecs
        .describe_task_sets()
        .cluster("bg")
        .service("web")
        .task_sets(green.task_set_arn().unwrap())
        .task_sets("ecs-svc/none")
        .include(aws_sdk_ecs::types::TaskSetField::Tags)
        .send()
        .await
        .unwrap();
    assert_eq!(described.task_sets()[0].tags()[0].value(), Some("green"));
    assert_eq!(described.failures()[0].reason(), Some("MISSING"));

    let primary = ecs
        .update_service_primary_task_set()
        .cluster("bg")
        .service("web")
        .primary_task_set(green.id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(primary.task_set().unwrap().status(), Some("PRIMARY"));
    let e = ecs
        .delete_task_set()
        .cluster("bg")
        .service("web")
        .task_set(blue.id().unwrap())
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_invalid_parameter_exception(),
        "a set scaled above 0 needs force: {e:?}"
    );
    let deleted = ecs
        .delete_task_set()
        .cluster("bg")
        .service("web")
        .task_set(blue.id().unwrap())
        .force(true)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.task_set().unwrap().status(), Some("DRAINING"));
    let e = ecs
        .update_task_set()
        .cluster("bg")
        .service("web")
        .task_set("ecs-svc/none")
        .scale(
            Scale::builder()
                .value(10.0)
                .unit(ScaleUnit::Percent)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_task_set_not_found_exception(),
        "{e:?}"
    );
    let svc = ecs
        .describe_services()
        .cluster("bg")
        .services("web")
        .send()
        .await
        .unwrap();
    let svc = &svc.services()[0];
    assert!(
        svc.task_definition()
            .unwrap()
            .ends_with("task-definition/bg:2"),
        "the service shows its PRIMARY set's revision: {svc:?}"
    );
    s.stop().await;
}
