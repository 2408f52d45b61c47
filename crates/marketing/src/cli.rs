//! The command line (docs/operations.md).

use crate::config::Config;
use crate::startup::{ensure_database, migrate, Application, Role};
use clap::{Parser, Subcommand};
use domain::ProjectSlug;
use event_store::connect_pool;
use uuid::Uuid;
use web::ApiKeys;

#[derive(Debug, Parser)]
#[command(
    name = "marketing",
    version,
    about = "Marketing API: event-sourced campaigns, tasks, content, analytics and leads"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: both APIs on one listener, the projectors, and
    /// the Kafka publisher when KAFKA_BROKERS is set. Creates the database if
    /// missing and applies migrations first.
    Serve,
    /// Only the write endpoints (plus health and metrics).
    CommandApi,
    /// Only the read endpoints (plus health and metrics).
    QueryApi,
    /// Only the projectors (plus health and metrics on LISTEN_ADDR).
    Projector,
    /// Only the Kafka publisher (plus health and metrics on LISTEN_ADDR); needs
    /// KAFKA_BROKERS. Several may run: one publishes, the others stand by.
    Publisher,
    /// Only the webhook dispatcher (plus health and metrics on LISTEN_ADDR).
    /// Several may run: one delivers, the others stand by.
    Webhooks,
    /// Apply all schema migrations (idempotent).
    Migrate,
    /// Delete stored media files that no event references and abandoned
    /// uploads, both only when older than the grace period.
    MediaGc {
        /// Keep anything younger than this many hours.
        #[arg(long, default_value_t = 24)]
        grace_hours: u64,
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Rebuild read models from the whole log into fresh tables and swap them in
    /// while the live ones keep serving. All projections unless one is named.
    Replay {
        #[arg(long)]
        projection: Option<String>,
    },
    /// Print a campaign's event history (its own events and those of its tasks,
    /// content, leads and analytics), oldest first.
    History {
        campaign_id: Uuid,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Only events of this type.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// Re-check every stream's hash chain; exits non-zero at the first break.
    Verify,
    /// Import leads from a CSV file into a campaign, as the HTTP import does
    /// (same rules, same report), with progress on stderr.
    ImportLeads {
        campaign_id: Uuid,
        file: std::path::PathBuf,
    },
}

impl Command {
    /// Whether this is a one-shot command run by a person (or a script) that
    /// reads its output, rather than a long-running role.
    pub fn is_one_shot(&self) -> bool {
        self.role_name().is_none()
    }

    /// The role a long-running command runs (`command-api`, ...), as its
    /// exported spans name it; `None` for one-shot commands.
    pub fn role_name(&self) -> Option<&'static str> {
        Some(match self {
            Command::Serve => "serve",
            Command::CommandApi => "command-api",
            Command::QueryApi => "query-api",
            Command::Projector => "projector",
            Command::Publisher => "publisher",
            Command::Webhooks => "webhooks",
            _ => return None,
        })
    }

    /// The log level when `RUST_LOG` is unset: one-shot commands print their
    /// result, and warnings or errors only.
    pub fn default_log_level(&self) -> &'static str {
        if self.is_one_shot() {
            "warn"
        } else {
            "info"
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; the secret is printed once, as the last line.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// What the key may do; repeat for several (e.g. `--scope
        /// campaigns:read --scope leads:write`). None: every scope.
        #[arg(long = "scope", value_name = "SCOPE", value_parser = web::Scope::parse)]
        scopes: Vec<web::Scope>,
        /// The key stops working this long from now: a number and a unit,
        /// `s`, `m`, `h`, `d` or `w` (e.g. `90d`), at most 3650d. None: never.
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys with their scopes, expiry and last use (never their secrets).
    List,
    /// Issue a new secret for a key (printed once, as the last line); the old
    /// one keeps working for the grace period.
    Rotate {
        id: Uuid,
        /// How long the old secret keeps working, e.g. `24h`; `0` ends it now.
        /// At most 30d.
        #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "24h")]
        grace: std::time::Duration,
    },
    /// Revoke a key by id; requests with it get 401 from then on.
    Revoke { id: Uuid },
}

/// `90d`, `24h`, `30m`, `45s`, `2w`; `0` alone for none.
pub fn duration(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    if raw == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{raw:?}: expected a number and a unit (s, m, h, d or w), e.g. 90d"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: expected a number and a unit (s, m, h, d or w), e.g. 90d"))?;
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = cli.config;
    if cli.command.is_one_shot() {
        config.database_url = crate::config::without_notices(&config.database_url);
    }
    let role = match cli.command {
        Command::Serve => Role::Serve,
        Command::CommandApi => Role::CommandApi,
        Command::QueryApi => Role::QueryApi,
        Command::Projector => Role::Projector,
        Command::Publisher => Role::Publisher,
        Command::Webhooks => Role::Webhooks,
        Command::Migrate => {
            ensure_database(&config.database_url).await?;
            migrate(&config.database_url).await?;
            println!("migrations applied");
            return Ok(());
        }
        Command::ApiKey { command } => return api_key(&config, command).await,
        Command::Replay { projection } => return crate::audit::replay(&config, projection.as_deref()).await,
        Command::History {
            campaign_id,
            json,
            event_type,
        } => return crate::audit::history(&config, campaign_id, json, event_type).await,
        Command::Verify => return crate::audit::verify(&config).await,
        Command::ImportLeads { campaign_id, file } => {
            return crate::import_leads::run(&config, campaign_id, &file).await
        }
        Command::MediaGc { grace_hours, dry_run } => {
            let grace = std::time::Duration::from_secs(grace_hours.saturating_mul(3600));
            let report = crate::media_gc::run(&config, grace, dry_run).await?;
            println!(
                "{} files kept, {} deleted ({} bytes), {} abandoned uploads deleted{}",
                report.files_kept,
                report.files_deleted,
                report.bytes_freed,
                report.staging_deleted,
                if dry_run {
                    " (dry run: nothing was deleted)"
                } else {
                    ""
                }
            );
            return Ok(());
        }
    };
    let app = Application::build(config, role).await?;
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        shutdown.cancel();
    });
    app.run_until_stopped().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn api_key(config: &Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    ensure_database(&config.database_url).await?;
    migrate(&config.database_url).await?;
    let keys = ApiKeys::new(connect_pool(&config.database_url, 2)?);
    match command {
        ApiKeyCommand::Create {
            project,
            name,
            scopes,
            expires_in,
        } => {
            let project = ProjectSlug::parse(&project).map_err(anyhow::Error::msg)?;
            let scopes = if scopes.is_empty() {
                web::Scopes::all()
            } else {
                web::Scopes::of(scopes)
            };
            let (info, secret) = keys.create_scoped(&project, &name, scopes, expires_in).await?;
            // One line on the key, then the secret alone on the last line,
            // for `| tail -1`.
            println!(
                "key {} (project {}, name {}, scopes {}, expires {}); shown only now, send it as `Authorization: Bearer <key>`:",
                info.id,
                info.project,
                info.name,
                info.scopes,
                when(info.expires_at, "never")
            );
            println!("{secret}");
        }
        ApiKeyCommand::List => list_keys(&keys).await?,
        ApiKeyCommand::Rotate { id, grace } => {
            let (info, secret) = keys.rotate(id, grace).await?;
            println!("id: {}", info.id);
            println!(
                "previous secret works until: {}",
                when(info.previous_secret_until, "no longer")
            );
            println!("The new secret is shown only now; store it safely:");
            println!("{secret}");
        }
        ApiKeyCommand::Revoke { id } => {
            let revoked = keys.revoke(id).await?;
            anyhow::ensure!(revoked, "no active key with id {id}");
            println!("revoked {id}");
        }
    }
    Ok(())
}

fn when(at: Option<chrono::DateTime<chrono::Utc>>, otherwise: &str) -> String {
    at.map_or_else(
        || otherwise.to_owned(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// One line per key. Last use is as the serving processes last wrote it, at
/// most web::auth::usage::FLUSH_INTERVAL behind.
async fn list_keys(keys: &ApiKeys) -> anyhow::Result<()> {
    println!(
        "{:<36}  {:<20}  {:<20}  {:<10}  {:<20}  {:<20}  {:<20}  {:<30}  status",
        "id", "project", "name", "prefix", "created", "expires", "last used", "scopes"
    );
    let now = chrono::Utc::now();
    for key in keys.list().await? {
        let mut status = key.status(now).to_owned();
        if let Some(at) = key.revoked_at {
            status = format!("revoked {}", when(Some(at), ""));
        }
        if let Some(until) = key.previous_secret_until.filter(|_| key.revoked_at.is_none()) {
            status.push_str(&format!(" (previous secret until {})", when(Some(until), "")));
        }
        println!(
            "{:<36}  {:<20}  {:<20}  {:<10}  {:<20}  {:<20}  {:<20}  {:<30}  {status}",
            key.id,
            key.project,
            key.name,
            key.key_prefix,
            when(Some(key.created_at), ""),
            when(key.expires_at, "never"),
            when(key.last_used_at, "never"),
            key.scopes.to_string(),
        );
    }
    Ok(())
}
