use anyhow::Context;
use comfy_table::Table;
use ota_auth::{NewToken, TokenInfo, TokenRequest};
use reqwest::Method;

use crate::client::{print_json, Connection, Output};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    Person,
    Service,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// Create a token; its secret is printed once and stored only hashed.
    /// The token is yours (your principal's) unless --principal names
    /// someone else: another of your tokens cannot approve your campaigns.
    Create {
        #[arg(long)]
        role: String,
        /// The token's label ("laptop", "ci-nightly"); the principal's name
        /// when left out. It says nothing about who holds the token.
        #[arg(long)]
        name: Option<String>,
        /// Whose token: a person or service other than you. A new one is
        /// created (and the audit log says you provisioned them).
        #[arg(long)]
        principal: Option<String>,
        /// The kind of a new principal: only a person can approve.
        #[arg(long, value_enum, requires = "principal")]
        kind: Option<Kind>,
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
        TokensCmd::Create {
            role,
            name,
            principal,
            kind,
            output,
        } => {
            let req = TokenRequest {
                role,
                name,
                principal,
                kind: kind.map(|k| match k {
                    Kind::Person => "person".to_owned(),
                    Kind::Service => "service".to_owned(),
                }),
            };
            let t: NewToken = api
                .send(api.request(Method::POST, "/api/v1/tokens").json(&req))
                .await?;
            match output {
                Output::Json => print_json(&t)?,
                Output::Table => {
                    if t.principal_created {
                        eprintln!("created {} {:?}", t.info.principal_kind, t.info.principal);
                    }
                    eprintln!(
                        "created {} token {:?} of {} {:?} ({}); store the secret now, it is not shown again:",
                        t.info.role, t.info.name, t.info.principal_kind, t.info.principal, t.info.id
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
                    t.set_header([
                        "id",
                        "principal",
                        "kind",
                        "name",
                        "role",
                        "created",
                        "revoked",
                    ]);
                    for k in list {
                        t.add_row([
                            k.id,
                            k.principal,
                            k.principal_kind.to_string(),
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
            println!("revoked token {:?} of {:?} ({})", t.name, t.principal, t.id);
        }
    }
    Ok(())
}
