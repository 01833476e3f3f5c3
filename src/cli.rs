//! Command-line interface: `serve`, plus operator commands that work straight
//! on the store. Every command takes `--json`; errors go to stderr with a
//! non-zero exit status.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::accounts::{Accounts, Acting, KeyRequest, parse_models};
use crate::domain::budget::{Budget, BudgetUpdate};
use crate::domain::{AuditAction, DEFAULT_GROUP, Group, KeyUpdate, Role, UserUpdate};
use crate::secret::Secret;
use crate::store::metering::{UsageCounters, UsageGroupBy, UsageQuery, day_range};
use crate::views::{CreatedKeyView, GroupView, KeyView, UserView, timestamp};

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "Envoy external authorization for AI / LLM gateways")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ext_authz gRPC server and the HTTP API.
    Serve(ServeArgs),
    /// Create or upgrade the database schema.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show metered LLM usage (requests, tokens, spend), summed per day,
    /// per model, or per day and model.
    Usage(UsageArgs),
    /// Send one Check to a running gatehouse and print the decision
    /// (exit status 0: allowed, 3: denied).
    Check(CheckArgs),
    /// Check the configuration and what it points at (database, Redis,
    /// OpenID providers, TLS files, the policy, an Envoy config), one line
    /// per check with a hint (exit status 1 when a check fails).
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this user (id or email).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only this API key id ("" for sessions and provider tokens).
    #[arg(long)]
    pub key: Option<String>,
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
    /// First day, YYYY-MM-DD (UTC), inclusive [default: 29 days before --to]
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC), inclusive [default: today]; at most 366 days in all
    #[arg(long)]
    pub to: Option<String>,
    /// One row per day, per model, or per day and model.
    #[arg(long = "by", default_value = "day", value_parser = parse_group_by)]
    pub by: UsageGroupBy,
}

fn parse_group_by(s: &str) -> Result<UsageGroupBy, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// An Envoy bootstrap (YAML or JSON) to check against the policy.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The gatehouse gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:9191")]
    pub addr: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A request header, `name: value` (repeat).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The client address Envoy would report.
    #[arg(long)]
    pub client_ip: Option<String>,
    /// The Host (`:authority`) of the request.
    #[arg(long, default_value = "")]
    pub host: String,
    /// The request body, as Envoy forwards it with `with_request_body`;
    /// `@FILE` reads it from a file.
    #[arg(long)]
    pub body: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address (ext_authz and health) [env: GATEHOUSE_GRPC_ADDR, default 0.0.0.0:9191]
    #[arg(long)]
    pub grpc_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address (REST API, probes) [env: GATEHOUSE_HTTP_ADDR, default 0.0.0.0:8080]
    #[arg(long)]
    pub http_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        #[arg(long)]
        name: Option<String>,
        /// Read a password (for /auth/login) from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password, read from the first line of standard input.
    SetPassword {
        /// User id or email.
        user: String,
    },
    /// List users.
    List,
    /// Set or remove a user's token and spend budgets (all their keys and sessions).
    Budget {
        /// User id or email.
        user: String,
        /// Token budget, `TOKENS/SECONDS` (e.g. 100000/60); `none` removes it.
        #[arg(long)]
        token_limit: Option<String>,
        /// Spend budget, `USD/PERIOD` (PERIOD: day, week, month or seconds); `none` removes it.
        #[arg(long)]
        spend_limit: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Create a group, optionally with a rate limit.
    Create {
        name: String,
        /// Requests allowed per period.
        #[arg(long, requires = "period_seconds")]
        requests: Option<i64>,
        #[arg(long, requires = "requests")]
        period_seconds: Option<i64>,
        #[arg(long)]
        burst: Option<i64>,
        /// A model the group's members may call, or a `*` pattern (repeat);
        /// default: any.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Token budget shared by the members, `TOKENS/SECONDS`.
        #[arg(long)]
        token_limit: Option<String>,
        /// Spend budget shared by the members, `USD/PERIOD`.
        #[arg(long)]
        spend_limit: Option<String>,
    },
    /// List groups.
    List,
    /// Set or remove a group's token and spend budgets (shared by its members).
    Budget {
        name: String,
        /// Token budget, `TOKENS/SECONDS` (e.g. 100000/60); `none` removes it.
        #[arg(long)]
        token_limit: Option<String>,
        /// Spend budget, `USD/PERIOD` (PERIOD: day, week, month or seconds); `none` removes it.
        #[arg(long)]
        spend_limit: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; the key is printed once.
    Create {
        /// Owner: user id or email.
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// A permission to grant (repeat); default: the owner's permissions.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// A model the key may call, or a `*` pattern (repeat); default: any
        /// the owner's group allows.
        #[arg(long = "model")]
        models: Vec<String>,
        /// The key's own token budget, `TOKENS/SECONDS`.
        #[arg(long)]
        token_limit: Option<String>,
        /// The key's own spend budget, `USD/PERIOD`.
        #[arg(long)]
        spend_limit: Option<String>,
    },
    /// Set or remove a key's own token and spend budgets.
    Budget {
        id: String,
        /// Token budget, `TOKENS/SECONDS` (e.g. 100000/60); `none` removes it.
        #[arg(long)]
        token_limit: Option<String>,
        /// Spend budget, `USD/PERIOD` (PERIOD: day, week, month or seconds); `none` removes it.
        #[arg(long)]
        spend_limit: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this user's keys (id or email).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: String },
    /// Give a key a new secret (printed once); the old one keeps working for
    /// the grace period.
    Rotate {
        id: String,
        /// How long the old secret keeps working; 0: stops at once.
        #[arg(long, alias = "grace-period-seconds", default_value_t = crate::accounts::DEFAULT_ROTATION_GRACE_SECONDS)]
        grace_seconds: u64,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: crate::domain::UnknownRole| e.to_string())
}

/// `--token-limit` / `--spend-limit` as a change: `none` removes a limit.
fn budget_flags(token_limit: Option<&str>, spend_limit: Option<&str>) -> anyhow::Result<BudgetUpdate> {
    fn change(v: Option<&str>) -> Option<Option<&str>> {
        v.map(|v| (!v.eq_ignore_ascii_case("none")).then_some(v))
    }
    let update = crate::accounts::parse_budget_update(change(token_limit), change(spend_limit))?;
    anyhow::ensure!(!update.is_empty(), "set --token-limit or --spend-limit (`none` removes one)");
    Ok(update)
}

fn budget_summary(b: &Budget) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    format!(
        "token limit {}, spend limit {}",
        show(b.tokens.map(|t| t.to_string())),
        show(b.spend.map(|s| s.to_string()))
    )
}

/// The operator's command runs on the system's clock.
fn now() -> i64 {
    crate::clock::Clock::now(&crate::clock::SystemClock)
}

/// Prints `value` as JSON, or `text` for people.
fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn read_password() -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(Secret::new(password))
}

pub async fn run_users(accounts: Accounts, json: bool, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create { email, role, group, name, password_stdin } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let user = accounts.create_user_with_password(&email, name.as_deref(), role, &group, password).await?;
            let detail = format!("role {}, group {}", user.role, user.group);
            accounts.record_operator(AuditAction::UserCreated, format!("user:{}", user.id), detail).await;
            print(json, &UserView::from(&user), || {
                format!("created user {} ({}, {}, group {})", user.id, user.email, user.role, user.group)
            })
        }
        UsersCommand::SetPassword { user } => {
            let user = accounts.find_user(&user).await?;
            accounts.set_password(&user.id, read_password()?).await?;
            accounts
                .record_operator(AuditAction::UserUpdated, format!("user:{}", user.id), "password set".into())
                .await;
            print(json, &UserView::from(&user), || format!("password set for {}", user.email))
        }
        UsersCommand::Budget { user, token_limit, spend_limit } => {
            let user = accounts.find_user(&user).await?;
            let update = UserUpdate {
                budget: budget_flags(token_limit.as_deref(), spend_limit.as_deref())?,
                ..UserUpdate::default()
            };
            let user = accounts.update_user(&user.id, &update).await?;
            let detail = format!("budget: {}", budget_summary(&user.budget));
            accounts.record_operator(AuditAction::UserUpdated, format!("user:{}", user.id), detail.clone()).await;
            print(json, &UserView::from(&user), || format!("{}: {detail}", user.email))
        }
        UsersCommand::List => {
            let users = accounts.list_users().await?;
            let views: Vec<UserView> = users.iter().map(UserView::from).collect();
            print(json, &views, || {
                users
                    .iter()
                    .map(|u| {
                        format!(
                            "{}  {}  {}  {}{}",
                            u.id,
                            u.email,
                            u.role,
                            u.group,
                            if u.disabled { "  (disabled)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub async fn run_groups(accounts: Accounts, json: bool, cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::Create { name, requests, period_seconds, burst, models, token_limit, spend_limit } => {
            let models = (!models.is_empty()).then(|| parse_models(&models)).transpose()?;
            let budget = crate::accounts::parse_budget(token_limit.as_deref(), spend_limit.as_deref())?;
            let group = Group { name, requests_per_period: requests, period_seconds, burst, models, budget };
            let group = accounts.create_group(group).await?;
            accounts.record_operator(AuditAction::GroupCreated, format!("group:{}", group.name), String::new()).await;
            print(json, &GroupView::from(&group), || format!("created group {}", group.name))
        }
        GroupsCommand::Budget { name, token_limit, spend_limit } => {
            let mut group = accounts.group(&name).await?.ok_or_else(|| anyhow::anyhow!("no group '{name}'"))?;
            budget_flags(token_limit.as_deref(), spend_limit.as_deref())?.apply(&mut group.budget);
            let group = accounts.update_group(group).await?;
            let detail = format!("budget: {}", budget_summary(&group.budget));
            accounts.record_operator(AuditAction::GroupUpdated, format!("group:{}", group.name), detail.clone()).await;
            print(json, &GroupView::from(&group), || format!("group {}: {detail}", group.name))
        }
        GroupsCommand::List => {
            let groups = accounts.list_groups().await?;
            let views: Vec<GroupView> = groups.iter().map(GroupView::from).collect();
            print(json, &views, || {
                groups
                    .iter()
                    .map(|g| match (g.requests_per_period, g.period_seconds) {
                        (Some(r), Some(p)) => format!("{}  {r} requests / {p}s", g.name),
                        _ => format!("{}  unlimited", g.name),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

pub async fn run_keys(accounts: Accounts, json: bool, cmd: KeysCommand) -> anyhow::Result<()> {
    let now = now();
    match cmd {
        KeysCommand::Create { user, name, permissions, expires_in_days, models, token_limit, spend_limit } => {
            let request = KeyRequest {
                name: &name,
                permissions: (!permissions.is_empty()).then_some(permissions.as_slice()),
                expires_in_days,
                models: (!models.is_empty()).then_some(models.as_slice()),
                budget: crate::accounts::parse_budget(token_limit.as_deref(), spend_limit.as_deref())?,
            };
            let (key, secret) = accounts.create_key(&Acting::operator(), Some(&user), request, now).await?;
            let owner = accounts.find_user(&key.user_id).await?;
            let view = CreatedKeyView { info: KeyView::new(&key, now), secret };
            print(json, &view, || {
                format!(
                    "created API key {} ({}) for {}\nkey (shown once, store it now): {}",
                    key.id,
                    key.name,
                    owner.email,
                    view.secret.expose()
                )
            })
        }
        KeysCommand::Budget { id, token_limit, spend_limit } => {
            let update = KeyUpdate {
                budget: budget_flags(token_limit.as_deref(), spend_limit.as_deref())?,
                ..KeyUpdate::default()
            };
            let key = accounts.update_key(&Acting::operator(), &id, &update).await?;
            let detail = budget_summary(&key.budget);
            print(json, &KeyView::new(&key, now), || format!("key {}: {detail}", key.id))
        }
        KeysCommand::List { user } => {
            let user_id = match user {
                Some(u) => Some(accounts.find_user(&u).await?.id),
                None => None,
            };
            let keys = accounts.list_keys(user_id.as_deref()).await?;
            let views: Vec<KeyView> = keys.iter().map(|k| KeyView::new(k, now)).collect();
            print(json, &views, || {
                views
                    .iter()
                    .map(|k| {
                        format!(
                            "{}  {}  {}  {}  {}",
                            k.id,
                            k.status,
                            k.user_id,
                            k.name,
                            k.expires_at.as_deref().unwrap_or("never")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        KeysCommand::Revoke { id } => {
            let key = accounts.revoke_key(&Acting::operator(), &id, now).await?;
            print(json, &KeyView::new(&key, now), || format!("revoked API key {}", key.id))
        }
        KeysCommand::Rotate { id, grace_seconds } => {
            let rotated = accounts.rotate_key(&Acting::operator(), &id, Some(grace_seconds), now).await?;
            let until = rotated.key.previous_secret_expires_at;
            let view = CreatedKeyView { info: KeyView::new(&rotated.key, now), secret: rotated.secret };
            print(json, &view, || {
                let old =
                    until.map_or_else(|| "stopped working now".to_owned(), |t| format!("works until {}", timestamp(t)));
                format!(
                    "rotated API key {id}; the old secret {old}\nnew key (shown once, store it now): {}",
                    view.secret.expose()
                )
            })
        }
    }
}

mod check;
mod usage;
pub use check::run_check;
pub use usage::run_usage;
