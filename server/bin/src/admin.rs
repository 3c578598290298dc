//! `estuary user ...` and `estuary migrate`: administration on the same store, whether or
//! not a server is running (SQLite waits for the server's brief write locks; PostgreSQL
//! serialises as usual).

use std::io::Read;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use estuary_core::{Config, Core};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account. Without --password or --password-stdin a random password is
    /// generated and printed once.
    Create {
        /// User name (lower case a-z, 0-9 and . _ = + -); upper case is folded to lower.
        localpart: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List all accounts.
    List,
    /// Set a new password (changes the Matrix and the XMPP credentials together).
    SetPassword {
        localpart: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Deactivate an account: erase its credentials and profile; the name stays reserved.
    Deactivate { localpart: String },
}

#[derive(Args)]
pub struct PasswordArgs {
    /// The password (visible to other local users in the process list; prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn read(&self) -> anyhow::Result<Option<String>> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if self.password_stdin {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the password from standard input")?;
            let line = input.lines().next().unwrap_or_default().to_owned();
            if line.is_empty() {
                bail!("no password on standard input");
            }
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// Create the data directory if missing, readable by the server's user only: it holds the
/// database (password hashes) and TLS keys.
pub fn create_data_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("data_dir: cannot create {}", dir.display()))
}

async fn open(config: &Config) -> anyhow::Result<Core> {
    create_data_dir(config)?;
    let store = estuary_store::open(&config.database.url)
        .await
        .context("database: cannot open the store")?;
    Core::new(config.clone(), store).await.context("starting the core")
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let core = open(config).await?;
    println!("migrations applied ({})", core.store.backend());
    core.store.close().await;
    Ok(())
}

pub async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let core = open(config).await?;
    let result = run_user(&core, command).await;
    core.store.close().await;
    result
}

async fn run_user(core: &Core, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            localpart,
            password,
            admin,
        } => {
            let localpart = localpart.to_lowercase();
            let given = password.read()?;
            let generated = given.is_none().then(random_password).transpose()?;
            let password = given.or(generated.clone());
            core.accounts.create(&localpart, password.as_deref(), admin).await?;
            println!(
                "created {} (XMPP: {})",
                core.matrix_user_id(&localpart),
                estuary_xmpp::bare_jid(&localpart, &core.config.xmpp.domain)
            );
            if let Some(p) = generated {
                println!("password: {p}");
            }
        }
        UserCommand::List => {
            let accounts = core.accounts.list().await?;
            println!(
                "{:<24} {:<40} {:<40} {:<12} ADMIN",
                "LOCALPART", "MATRIX ID", "XMPP JID", "STATUS"
            );
            for a in accounts {
                println!(
                    "{:<24} {:<40} {:<40} {:<12} {}",
                    a.localpart,
                    core.matrix_user_id(&a.localpart),
                    estuary_xmpp::bare_jid(&a.localpart, &core.config.xmpp.domain),
                    if a.is_active() { "active" } else { "deactivated" },
                    if a.admin { "yes" } else { "no" },
                );
            }
        }
        UserCommand::SetPassword { localpart, password } => {
            let Some(password) = password.read()? else {
                bail!("give the new password with --password or --password-stdin");
            };
            core.accounts.set_password(&localpart.to_lowercase(), &password).await?;
            println!(
                "password changed for {}",
                core.matrix_user_id(&localpart.to_lowercase())
            );
        }
        UserCommand::Deactivate { localpart } => {
            core.deactivate(&localpart.to_lowercase()).await?;
            println!("deactivated {}", core.matrix_user_id(&localpart.to_lowercase()));
        }
    }
    Ok(())
}

/// 20 characters from a 62-symbol alphabet: about 119 bits.
fn random_password() -> anyhow::Result<String> {
    Ok(estuary_core::random::string(20, estuary_core::random::BASE62)?)
}
