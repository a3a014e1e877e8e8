use anyhow::Context;
use comfy_table::Table;
use ota_auth::{NewToken, TokenInfo};
use reqwest::Method;

use crate::client::{print_json, Connection, Output};

#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// Create a token; its secret is printed once and stored only hashed.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a token by id.
    Revoke { id: String },
}

pub async fn run(cmd: TokensCmd, conn: &Connection) -> anyhow::Result<()> {
    let api = conn.api()?;
    match cmd {
        TokensCmd::Create { role, name, output } => {
            let t: NewToken = api
                .send(
                    api.request(Method::POST, "/api/v1/tokens")
                        .json(&serde_json::json!({"name": name, "role": role})),
                )
                .await?;
            match output {
                Output::Json => print_json(&t)?,
                Output::Table => {
                    eprintln!(
                        "created {} token {:?} ({}); store the secret now, it is not shown again:",
                        t.info.role, t.info.name, t.info.id
                    );
                    println!("{}", t.token);
                }
            }
        }
        TokensCmd::List { output } => {
            let list: Vec<TokenInfo> = api.send(api.request(Method::GET, "/api/v1/tokens")).await?;
            match output {
                Output::Json => print_json(&list)?,
                Output::Table => {
                    let mut t = Table::new();
                    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
                    t.set_header(["id", "name", "role", "created", "revoked"]);
                    for k in list {
                        t.add_row([
                            k.id,
                            k.name,
                            k.role.to_string(),
                            k.created_at.format("%Y-%m-%d %H:%M").to_string(),
                            k.revoked_at
                                .map(|r| r.format("%Y-%m-%d %H:%M").to_string())
                                .unwrap_or_default(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        TokensCmd::Revoke { id } => {
            let t: TokenInfo = api
                .send(api.request(Method::DELETE, &format!("/api/v1/tokens/{id}")))
                .await
                .with_context(|| format!("revoking token {id}"))?;
            println!("revoked token {:?} ({})", t.name, t.id);
        }
    }
    Ok(())
}
