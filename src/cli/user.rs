//! `iysgate user …`: the panel's accounts from the command line. The accounts live beside the
//! evidence store (its database's tables, or `panel.log` next to the evidence file); on the
//! embedded default that file belongs to one process, so like `brand add` these commands run
//! while `serve` is stopped. Every change is written to the audit log with the actor `cli`.
//! Passwords are printed once and never stored in clear.

use chrono::Utc;

use crate::app::config::{StoreArgs, UserCommand};
use crate::cli::Error;
use crate::domain::BusinessCalendar;
use crate::panel::pages::users as accounts;
use crate::panel::store::{AuditEntry, PanelStore};
use crate::write::evidence::EvidenceStore;

/// The environment variable a new account's password may come from.
pub const ENV_USER_PASSWORD: &str = "IYSGATE_USER_PASSWORD";

/// The actor of the audit lines these commands write.
pub const ACTOR: &str = "cli";

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(e.to_string()))
}

async fn open(args: &StoreArgs) -> Result<(EvidenceStore, PanelStore), Error> {
    let evidence = crate::app::open_evidence(
        args.database_url.as_deref(),
        &args.evidence_file,
        BusinessCalendar::embedded(),
    )
    .await?;
    let panel = PanelStore::beside(&evidence, &args.evidence_file).map_err(failed)?;
    Ok((evidence, panel))
}

async fn audit(
    store: &PanelStore,
    action: &str,
    brand: Option<u32>,
    detail: String,
) -> Result<(), Error> {
    store
        .audit(&AuditEntry {
            at: Utc::now(),
            actor: ACTOR.to_owned(),
            action: action.to_owned(),
            brand,
            detail,
        })
        .await
        .map_err(failed)
}

/// Refuses a brand the evidence store does not know.
async fn known_brand(evidence: &EvidenceStore, brand: u32) -> Result<(), Error> {
    if evidence
        .brands()
        .await?
        .iter()
        .any(|b| b.brand_code == brand)
    {
        Ok(())
    } else {
        Err(failed(format!(
            "no brand {brand} in the evidence store (iysgate brand add)"
        )))
    }
}

/// Runs one `user` subcommand.
///
/// # Errors
/// The stores cannot be opened, the account is unknown (or exists already), the brand is not
/// in the evidence store, or the password is too short.
pub async fn run(cmd: UserCommand) -> Result<(), Error> {
    match cmd {
        UserCommand::Add {
            store,
            name,
            role,
            brands,
        } => {
            let (evidence, panel) = open(&store).await?;
            for brand in &brands {
                known_brand(&evidence, *brand).await?;
            }
            let given = std::env::var(ENV_USER_PASSWORD)
                .ok()
                .filter(|p| !p.is_empty());
            let shown = given.is_none();
            let password = accounts::add_account(&panel, &name, role, &brands, given, Utc::now())
                .await
                .map_err(failed)?;
            audit(
                &panel,
                "user.add",
                None,
                accounts::add_detail(&name, role, &brands),
            )
            .await?;
            println!("panel account {name} ({}) added", role.as_str());
            if shown {
                println!("its password (shown once): {password}");
            }
        }
        UserCommand::Grant {
            store,
            name,
            brand,
            revoke,
        } => {
            let (evidence, panel) = open(&store).await?;
            if !revoke {
                known_brand(&evidence, brand).await?;
            }
            panel
                .set_grant(&name, brand, !revoke)
                .await
                .map_err(failed)?;
            let action = if revoke { "user.revoke" } else { "user.grant" };
            audit(&panel, action, Some(brand), format!("account {name}")).await?;
            let done = if revoke { "revoked" } else { "granted" };
            println!("panel account {name}: brand {brand} {done}");
        }
        UserCommand::Reset { store, name } => {
            let (_, panel) = open(&store).await?;
            let password = accounts::reset_password(&panel, &name)
                .await
                .map_err(failed)?;
            audit(&panel, "user.reset", None, format!("account {name}")).await?;
            println!("panel account {name}: new password (shown once): {password}");
            println!("every session of {name} has ended");
        }
        UserCommand::List { store } => {
            let (_, panel) = open(&store).await?;
            println!("{:<20}  {:<10}  {:<16}  brands", "name", "role", "created");
            for u in panel.users().await.map_err(failed)? {
                let brands = if u.role == crate::panel::store::Role::Admin {
                    "*".to_owned()
                } else {
                    u.brands
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!(
                    "{:<20}  {:<10}  {:<16}  {brands}",
                    u.name,
                    u.role.as_str(),
                    crate::panel::layout::turkey_time(u.created_at),
                );
            }
        }
    }
    Ok(())
}
