//! The admin commands of the binary — `user …`, `audit`, `upgrade-hashes`, `check-config`
//! — working directly against the configured database, so operators never need SQL. Every
//! change they make to an account is recorded in the audit trail like a change made
//! through the API; `upgrade-hashes` changes only how rows are stored, not what any
//! account accepts, so it records nothing (the start-up pass does the same).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use secrecy::ExposeSecret;
use serde_json::json;

use crate::auth::account;
use crate::auth::lookup;
use crate::auth::password::PasswordHasher;
use crate::cli::{AuditArgs, UpgradeArgs, UserAction, UserCommand};
use crate::config::Settings;
use crate::domain::Identifier;
use crate::state::now;
use crate::store::{self, AccountChange, AuditEvent, FactorChange, NewOutbox, Store, User};

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

fn fail(msg: impl Into<String>) -> Box<dyn std::error::Error> {
    msg.into().into()
}

fn timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "phone": u.phone,
        "created_at": timestamp(u.created_at),
        "email_verified": u.email_verified,
        "phone_verified": u.phone_verified,
        "disabled": u.disabled_at.is_some(),
        "disabled_at": u.disabled_at.map(timestamp),
        "mfa": {
            "totp": u.totp_enabled,
            "passkeys": u.passkey_count,
            "recovery_codes_left": u.recovery_codes_left,
        },
    })
}

/// Prints rows as an aligned table with a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

async fn find(store: &Arc<dyn Store>, raw: &str) -> Result<User, Box<dyn std::error::Error>> {
    let identifier = Identifier::parse(raw).map_err(|e| fail(e.to_string()))?;
    lookup::find_user(&**store, &identifier)
        .await?
        .ok_or_else(|| fail(format!("no user matches `{raw}`")))
}

/// The audit row of a change made from the command line, committed with the change.
fn by_cli(event: &'static str, user_id: i64) -> AuditEvent<'static> {
    AuditEvent {
        user_id: Some(user_id),
        event,
        ip: None,
        user_agent: Some("gatehouse-cli"),
        at: now(),
    }
}

pub async fn user(cmd: UserCommand) -> CliResult {
    let store = store::connect(&cmd.database).await?;
    match cmd.action {
        UserAction::List {
            search,
            limit,
            json,
        } => {
            let users = store.list_users(search.as_deref(), limit).await?;
            if json {
                let list: Vec<_> = users.iter().map(user_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.to_string(),
                            u.username.clone(),
                            u.email.clone(),
                            u.phone.clone().unwrap_or_default(),
                            timestamp(u.created_at),
                            if u.disabled_at.is_some() {
                                "disabled"
                            } else {
                                "active"
                            }
                            .into(),
                        ]
                    })
                    .collect();
                print_table(
                    &["ID", "USERNAME", "EMAIL", "PHONE", "CREATED", "STATUS"],
                    &rows,
                );
            }
        }
        UserAction::Show { identifier, json } => {
            let u = find(&store, &identifier).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&user_json(&u))?);
            } else {
                let v = user_json(&u);
                let rows: Vec<Vec<String>> = [
                    "id",
                    "username",
                    "email",
                    "phone",
                    "created_at",
                    "email_verified",
                    "phone_verified",
                    "disabled",
                    "disabled_at",
                ]
                .iter()
                .map(|k| {
                    let cell = match &v[*k] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    vec![k.to_string(), cell]
                })
                .collect();
                print_table(&["FIELD", "VALUE"], &rows);
            }
        }
        UserAction::Disable { identifier } => {
            let u = find(&store, &identifier).await?;
            let events = [
                by_cli("account_disabled", u.id),
                by_cli("sessions_revoked", u.id),
            ];
            store.set_disabled(u.id, Some(now()), &events).await?;
            println!("disabled {} and revoked their sessions", u.username);
        }
        UserAction::Enable { identifier } => {
            let u = find(&store, &identifier).await?;
            let events = [by_cli("account_enabled", u.id)];
            store.set_disabled(u.id, None, &events).await?;
            println!("enabled {}", u.username);
        }
        UserAction::RevokeSessions { identifier } => {
            let u = find(&store, &identifier).await?;
            let events = [by_cli("sessions_revoked", u.id)];
            let n = store.revoke_sessions(u.id, None, &events).await?;
            println!("revoked {n} session(s) of {}", u.username);
        }
        UserAction::Verify {
            identifier,
            channel,
        } => {
            let u = find(&store, &identifier).await?;
            if channel == "sms" && u.phone.is_none() {
                return Err(fail(format!("{} has no phone", u.username)));
            }
            let event = if channel == "sms" {
                "phone_verified"
            } else {
                "email_verified"
            };
            let change = AccountChange::Prove { channel: &channel };
            if !store
                .apply_change(u.id, None, &change, now(), &[], &[by_cli(event, u.id)])
                .await?
            {
                return Err(fail(format!("{} is gone", u.username)));
            }
            println!("marked the {channel} of {} verified", u.username);
        }
        UserAction::Delete {
            identifier,
            yes,
            secret,
        } => {
            let u = find(&store, &identifier).await?;
            if !yes {
                return Err(fail(format!(
                    "deleting {} cannot be undone: add --yes",
                    u.username
                )));
            }
            // The goodbye is sealed like every queued message, for a server to send.
            let secret = crate::auth::secret::load(&cmd.database, &secret, &*store).await?;
            let keys = crate::auth::keys::Keys::from_secret(secret.expose_secret())?;
            let payload = crate::notify::outbox::seal(&keys, &account::goodbye(&u))?;
            let goodbye = NewOutbox {
                channel: crate::notify::Channel::Email.as_str(),
                payload: &payload,
                user_id: None,
                now: now(),
            };
            let event = AuditEvent {
                user_agent: None,
                ..by_cli("account_deleted", u.id)
            };
            if !store.delete_user(u.id, &[goodbye], &[event]).await? {
                return Err(fail(format!("{} is gone", u.username)));
            }
            println!("deleted {}", u.username);
        }
        UserAction::ResetMfa { identifier, secret } => {
            let u = find(&store, &identifier).await?;
            let secret = crate::auth::secret::load(&cmd.database, &secret, &*store).await?;
            let keys = crate::auth::keys::Keys::from_secret(secret.expose_secret())?;
            let notice = account::email_to(
                &u,
                "Your second factors were reset",
                format!(
                    "An administrator removed every second factor of your account {} \
                     (authenticator app, passkeys, recovery codes) and signed out every \
                     session. Sign in with your password and set up a second factor again.\n\n\
                     If you did not ask for this, contact support now.",
                    u.username
                ),
            );
            let payload = crate::notify::outbox::seal(&keys, &notice)?;
            let notice = NewOutbox {
                channel: crate::notify::Channel::Email.as_str(),
                payload: &payload,
                user_id: Some(u.id),
                now: now(),
            };
            let events = [by_cli("mfa_reset", u.id), by_cli("sessions_revoked", u.id)];
            if !store
                .change_factors(u.id, &FactorChange::ResetAll, now(), &[notice], &events)
                .await?
            {
                return Err(fail(format!("{} is gone", u.username)));
            }
            println!(
                "removed every second factor of {} and ended their sessions",
                u.username
            );
        }
        UserAction::SetPassword {
            identifier,
            hashing,
        } => {
            let u = find(&store, &identifier).await?;
            let password = read_password()?;
            let password = account::new_password_for(&u, "password", password)
                .map_err(|e| fail(e.to_string()))?;
            let hasher = PasswordHasher::new(&hashing)?;
            let hash = hasher.hash(&password).await?;
            let events = [
                by_cli("password_set", u.id),
                by_cli("sessions_revoked", u.id),
            ];
            store.set_password_hash(u.id, &hash, now(), &events).await?;
            println!(
                "password of {} set; their sessions were revoked",
                u.username
            );
        }
    }
    Ok(())
}

/// The new password, from standard input — never from the argument list, where `ps` and
/// shell history would see it.
fn read_password() -> Result<String, Box<dyn std::error::Error>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("New password (input is visible; pipe it in to avoid that): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(fail("no password on standard input"));
    }
    Ok(password.to_owned())
}

pub async fn audit(args: AuditArgs) -> CliResult {
    let store = store::connect(&args.database).await?;
    let u = find(&store, &args.user).await?;
    let since = match &args.since {
        None => 0,
        Some(s) => parse_since(s)?,
    };
    let events = store.audit_for_user(u.id, since, args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    timestamp(e.created_at),
                    e.event.clone(),
                    e.ip.clone().unwrap_or_else(|| "-".into()),
                    e.user_agent.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(&["TIME", "EVENT", "IP", "USER AGENT"], &rows);
    }
    Ok(())
}

/// `--since` takes an RFC 3339 time or a duration back from now (`24h`, `7d`).
fn parse_since(s: &str) -> Result<i64, Box<dyn std::error::Error>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        fail(format!(
            "--since `{s}`: expected an RFC 3339 time or a duration like 24h"
        ))
    })?;
    Ok(now() - d.as_secs() as i64)
}

/// Validates every setting and checks that the database, SMTP server and Redis answer.
/// Prints one line per check; fails if any check fails.
/// `gatehouse upgrade-hashes`: one pass of `crate::upgrade`, then what it did. Email keys
/// left because another account holds the new one are named by user id (`user show` has
/// the rest), for the operator to settle.
pub async fn upgrade_hashes(args: UpgradeArgs) -> CliResult {
    let store = store::connect(&args.database).await?;
    let hasher = PasswordHasher::new(&args.hashing)?;
    let done = crate::upgrade::run(store.as_ref(), &hasher).await?;
    println!(
        "{} users: {} hashes wrapped, {} email keys rewritten, {} email keys left (taken by another account)",
        done.users, done.hashes_wrapped, done.emails_rekeyed, done.email_conflicts
    );
    Ok(())
}

pub async fn check_config(settings: Settings) -> CliResult {
    let mut failures = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(e) => {
            failures += 1;
            println!("FAIL  {name}: {e}");
        }
    };
    report("settings", settings.validate().map(|()| "valid".into()));
    report(
        "argon2",
        PasswordHasher::new(&settings.hashing)
            .map(|h| {
                format!(
                    "m={} KiB t={} p={}, {} hashes at once",
                    settings.hashing.argon2_memory_kib,
                    settings.hashing.argon2_iterations,
                    settings.hashing.argon2_parallelism,
                    h.concurrency()
                )
            })
            .map_err(|e| e.to_string()),
    );
    report("database", store::check_reachable(&settings.database).await);
    report(
        "secret",
        crate::auth::secret::describe(&settings.database, &settings.secret),
    );
    match crate::notify::smtp::SmtpNotifier::from_settings(
        &settings.email,
        settings.outbox.notify_timeout,
    ) {
        Ok(Some(smtp)) => report(
            "smtp",
            smtp.check()
                .await
                .map(|()| format!("{} answers", smtp.endpoint())),
        ),
        Ok(None) => report(
            "smtp",
            Ok("not configured: codes for email are printed to the log".into()),
        ),
        Err(e) => report("smtp", Err(e)),
    }
    match crate::notify::twilio::TwilioNotifier::from_settings(
        &settings.sms,
        settings.outbox.notify_timeout,
    ) {
        Ok(Some(t)) => report("twilio", Ok(format!("configured ({})", t.endpoint()))),
        Ok(None) => report(
            "twilio",
            Ok("not configured: codes for SMS are printed to the log".into()),
        ),
        Err(e) => report("twilio", Err(e)),
    }
    match &settings.redis_url {
        None => report(
            "redis",
            Ok("not configured: rate limits are per instance".into()),
        ),
        Some(url) => report("redis", redis_ping(url.expose_secret()).await),
    }
    if failures > 0 {
        return Err(fail(format!("{failures} check(s) failed")));
    }
    Ok(())
}

async fn redis_ping(url: &str) -> Result<String, String> {
    let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => Ok("answers PING".into()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err("unreachable: timed out".into()),
    }
}
