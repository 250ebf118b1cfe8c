//! The registry's nouns: repositories and their images (ECR's API).

use super::ecs::all_pages;
use super::render::{age, bytes, cell, emit, emit_object, now, short, Output, Table};
use super::{Ctx, Failed};
use anyhow::anyhow;
use berth_api::ecr::*;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum RepoVerb {
    /// Every repository, with the URI to push to.
    Ls,
    /// Makes a repository.
    Create { name: String },
    /// Deletes a repository (with --force, even one with images).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageVerb {
    /// A repository's images: tags, digest, size, when pushed.
    Ls { repository: String },
    /// Deletes an image by tag or digest (`sha256:…`).
    Rm { repository: String, image: String },
    /// Pushes a local image through this machine's Docker Engine, a progress bar per layer.
    Push(super::push::PushArgs),
}

pub async fn repo(ctx: &Ctx, verb: RepoVerb) -> Result<(), Failed> {
    match verb {
        RepoVerb::Ls => {
            let repos = all_pages(|next_token| async {
                let r: DescribeRepositoriesResponse = ctx
                    .ecr(
                        "DescribeRepositories",
                        &DescribeRepositoriesRequest {
                            next_token,
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok((r.repositories, r.next_token))
            })
            .await?;
            let mut t = Table::new(&["NAME", "URI", "TAG MUTABILITY", "AGE"]);
            let now = now();
            for r in &repos {
                t.row(vec![
                    cell(r.repository_name.as_deref()),
                    cell(r.repository_uri.as_deref()),
                    cell(r.image_tag_mutability.as_deref()),
                    age(now, r.created_at),
                ]);
            }
            emit(ctx.output, &repos, &t)?;
        }
        RepoVerb::Create { name } => {
            let r: CreateRepositoryResponse = ctx
                .ecr(
                    "CreateRepository",
                    &CreateRepositoryRequest {
                        repository_name: Some(name),
                        ..Default::default()
                    },
                )
                .await?;
            print_repo(ctx.output, r.repository)?;
        }
        RepoVerb::Rm { name, force } => {
            let r: DeleteRepositoryResponse = ctx
                .ecr(
                    "DeleteRepository",
                    &DeleteRepositoryRequest {
                        repository_name: Some(name),
                        force: Some(force),
                        ..Default::default()
                    },
                )
                .await?;
            print_repo(ctx.output, r.repository)?;
        }
    }
    Ok(())
}

fn print_repo(output: Output, r: Option<Repository>) -> Result<(), Failed> {
    match output {
        Output::Json => emit_object(output, &r)?,
        _ => out!("{}", cell(r.and_then(|r| r.repository_uri))),
    }
    Ok(())
}

pub async fn image(ctx: &Ctx, verb: ImageVerb) -> Result<(), Failed> {
    match verb {
        ImageVerb::Ls { repository } => {
            let mut images = all_pages(|next_token| {
                let repository_name = Some(repository.clone());
                async move {
                    let r: DescribeImagesResponse = ctx
                        .ecr(
                            "DescribeImages",
                            &DescribeImagesRequest {
                                repository_name,
                                next_token,
                                ..Default::default()
                            },
                        )
                        .await?;
                    Ok((r.image_details, r.next_token))
                }
            })
            .await?;
            // Newest first, as a person looks for the image just pushed.
            images.sort_by(|a, b| {
                b.image_pushed_at
                    .unwrap_or(0.0)
                    .total_cmp(&a.image_pushed_at.unwrap_or(0.0))
            });
            let mut t = Table::new(&["TAGS", "DIGEST", "SIZE", "PUSHED"]);
            let now = now();
            for i in &images {
                let tags = i.image_tags.clone().unwrap_or_default();
                t.row(vec![
                    if tags.is_empty() {
                        "<untagged>".into()
                    } else {
                        tags.join(",")
                    },
                    digest(i.image_digest.as_deref()),
                    bytes(i.image_size_in_bytes),
                    age(now, i.image_pushed_at),
                ]);
            }
            emit(ctx.output, &images, &t)?;
        }
        ImageVerb::Push(args) => super::push::run(ctx, args).await?,
        ImageVerb::Rm { repository, image } => {
            let id = if image.starts_with("sha256:") {
                ImageIdentifier {
                    image_digest: Some(image.clone()),
                    ..Default::default()
                }
            } else {
                ImageIdentifier {
                    image_tag: Some(image.clone()),
                    ..Default::default()
                }
            };
            let r: BatchDeleteImageResponse = ctx
                .ecr(
                    "BatchDeleteImage",
                    &BatchDeleteImageRequest {
                        repository_name: Some(repository.clone()),
                        image_ids: Some(vec![id]),
                        ..Default::default()
                    },
                )
                .await?;
            if let Some(f) = r.failures.unwrap_or_default().first() {
                return Err(anyhow!(
                    "{repository}:{image}: {} ({})",
                    cell(f.failure_code.as_deref()),
                    cell(f.failure_reason.as_deref())
                )
                .into());
            }
            match ctx.output {
                Output::Json => emit_object(ctx.output, &r.image_ids)?,
                _ => {
                    for id in r.image_ids.iter().flatten() {
                        out!("deleted {}", cell(id.image_digest.as_deref()));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A digest cut to what people compare: `sha256:` and 12 hex digits.
fn digest(d: Option<&str>) -> String {
    match d {
        Some(d) => d.chars().take(7 + 12).collect(),
        None => short(None),
    }
}
