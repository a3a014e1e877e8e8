use std::path::PathBuf;

use anyhow::{bail, Context};
use comfy_table::Table;
use futures::StreamExt;
use ota_rest::model::{Artifact, NewPackage, Package};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::{print_json, Connection, Output};

// One value per command line, parsed once: the size of the largest
// variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum PackagesCmd {
    /// Register a package: from flags, from a definition (-d, JSON or YAML
    /// with the same fields), or both (flags override the definition; --hw,
    /// --artifact and --file add to it).
    Add {
        /// A package definition: name, version, ecu, compatible_hw, artifacts
        /// [{url, sha256, size}], release_notes.
        #[arg(short = 'd', long)]
        definition: Option<PathBuf>,
        /// An artifact file to upload: the platform hosts it (vehicles
        /// download it from this server, with Range) and computes its hashes.
        /// May be given several times.
        #[arg(long)]
        file: Vec<PathBuf>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        /// The ECU the package is for (BMS, TCU, ...).
        #[arg(long)]
        ecu: Option<String>,
        /// A compatible hardware revision; repeat for several.
        #[arg(long = "hw")]
        hw: Vec<String>,
        /// An artifact URL; repeat, each with its own --sha256 and --size, in order.
        #[arg(long = "artifact")]
        artifacts: Vec<String>,
        #[arg(long)]
        sha256: Vec<String>,
        /// Artifact size in bytes.
        #[arg(long)]
        size: Vec<u64>,
        /// Release notes.
        #[arg(long)]
        notes: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List packages, optionally only those with one name.
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one package by id or NAME@VERSION.
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

/// A package file: every field may be left to the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageFile {
    name: Option<String>,
    version: Option<String>,
    ecu: Option<String>,
    #[serde(default)]
    compatible_hw: Vec<String>,
    #[serde(default)]
    artifacts: Vec<Artifact>,
    release_notes: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct PackageList {
    packages: Vec<Package>,
}

pub async fn run(cmd: PackagesCmd, conn: &Connection) -> anyhow::Result<i32> {
    let api = conn.api()?;
    match cmd {
        PackagesCmd::Add {
            definition,
            file,
            name,
            version,
            ecu,
            hw,
            artifacts,
            sha256,
            size,
            notes,
            output,
        } => {
            let mut f = match &definition {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_yaml_ng::from_str::<PackageFile>(&text).with_context(|| {
                        format!("{} is not a valid package file", path.display())
                    })?
                }
                None => PackageFile::default(),
            };
            if artifacts.len() != sha256.len() || artifacts.len() != size.len() {
                bail!(
                    "{} --artifact, {} --sha256 and {} --size given: give one --sha256 and one --size for every --artifact",
                    artifacts.len(),
                    sha256.len(),
                    size.len()
                );
            }
            f.compatible_hw.extend(hw);
            for path in &file {
                f.artifacts.push(upload(&api, path).await?);
            }
            f.artifacts.extend(
                artifacts
                    .into_iter()
                    .zip(sha256)
                    .zip(size)
                    .map(|((url, sha256), size)| Artifact { url, sha256, size }),
            );
            let required = |flag: Option<String>, from_file: Option<String>, what: &str| {
                flag.or(from_file).with_context(|| {
                    format!("the package needs a {what}: pass --{what} or put `{what}` in -d FILE")
                })
            };
            let body = NewPackage {
                name: required(name, f.name, "name")?,
                version: required(version, f.version, "version")?,
                ecu: required(ecu, f.ecu, "ecu")?,
                compatible_hw: f.compatible_hw,
                artifacts: f.artifacts,
                release_notes: notes.or(f.release_notes).unwrap_or_default(),
            };
            let p: Package = api
                .send(api.request(Method::POST, "/api/v1/packages").json(&body))
                .await?;
            match output {
                Output::Json => print_json(&p)?,
                Output::Table => {
                    println!("added package {}@{} ({})", p.name, p.version, p.id);
                }
            }
        }
        PackagesCmd::List { name, output } => {
            let mut req = api.request(Method::GET, "/api/v1/packages");
            if let Some(n) = &name {
                req = req.query(&[("name", n)]);
            }
            let list: PackageList = api.send(req).await?;
            match output {
                Output::Json => print_json(&list)?,
                Output::Table => {
                    let mut t = Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                    t.set_header([
                        "id",
                        "name",
                        "version",
                        "ecu",
                        "hw",
                        "artifacts",
                        "in use",
                        "created",
                    ]);
                    for p in &list.packages {
                        t.add_row([
                            p.id.clone(),
                            p.name.clone(),
                            p.version.clone(),
                            p.ecu.clone(),
                            p.compatible_hw.join(" "),
                            p.artifacts.len().to_string(),
                            if p.in_use { "yes" } else { "no" }.to_owned(),
                            created(p),
                        ]);
                    }
                    println!("{t}");
                    println!("{} packages", list.packages.len());
                }
            }
        }
        PackagesCmd::Get { id, output } => {
            let p: Package = api
                .send(api.request(Method::GET, &format!("/api/v1/packages/{id}")))
                .await?;
            match output {
                Output::Json => print_json(&p)?,
                Output::Table => print_package(&p),
            }
        }
    }
    Ok(0)
}

fn created(p: &Package) -> String {
    let at = p
        .created_at
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    format!("{at} by {}", p.created_by)
}

fn print_package(p: &Package) {
    println!("id         {}", p.id);
    println!("package    {}@{}", p.name, p.version);
    println!("ecu        {}", p.ecu);
    println!(
        "hardware   {}",
        if p.compatible_hw.is_empty() {
            "any".to_owned()
        } else {
            p.compatible_hw.join(", ")
        }
    );
    println!(
        "in use     {}",
        if p.in_use { "yes (immutable)" } else { "no" }
    );
    println!("created    {}", created(p));
    if !p.release_notes.is_empty() {
        println!("notes      {}", p.release_notes);
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(["artifact", "sha256", "size"]);
    for a in &p.artifacts {
        t.add_row([a.url.clone(), a.sha256.clone(), a.size.to_string()]);
    }
    println!("{t}");
}

/// Uploads an artifact file; the answer says where the platform hosts it.
async fn upload(api: &crate::client::Api, path: &std::path::Path) -> anyhow::Result<Artifact> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string();
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().await?.len();
    let bar = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template("uploading {msg} {bytes}/{total_bytes} [{bar:30}]")
            .expect("valid template"),
    );
    bar.set_message(name.clone());
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
        if let Ok(c) = chunk {
            progress.inc(c.len() as u64);
        }
    });
    let stored: serde_json::Value = api
        .send(
            api.request(Method::POST, "/api/v1/artifacts")
                .query(&[("filename", &name)])
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
        .with_context(|| format!("uploading {}", path.display()))?;
    bar.finish_and_clear();
    Ok(Artifact {
        url: stored["url"].as_str().unwrap_or_default().to_string(),
        sha256: stored["sha256"].as_str().unwrap_or_default().to_string(),
        size: stored["size"].as_u64().unwrap_or(size),
    })
}
