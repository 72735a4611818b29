//! The configuration file and the secrets read from files, both turned into clap's own inputs
//! before the command line is parsed for good: a file value goes through the same value parser
//! as its flag, and the precedence is clap's, per setting: the flag, then its environment
//! variable, then the file (injected as the flag's default), then the built-in default.
//!
//! The file is TOML whose keys are the long flag names exactly as typed on the command line
//! (kebab-case: `redis-url`, `max-staleness`, `admin-key-sha256`, `client`); a repeatable flag
//! takes an array, which replaces (never extends) the default. A key that is not a flag of the
//! command being run is an error naming the key and the file, and so is a value its flag would
//! refuse. `--iys-password-file` and the other `…-file` flags (`IYSGATE_…_FILE`) read a secret
//! from a file, as Kubernetes mounts Secrets; the file form stands at its own level of the
//! precedence, and the secret and its file at the same level are refused.
//!
//! Must never put a secret into a message: values of secret settings are redacted
//! ([`redact`]), a secret file's content is never quoted, and a TOML syntax error is reported by
//! line, not by the line's text.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::config::{Cli, ConfigError};

/// Secrets that may be read from a file instead: the secret's id and its file flag's id. Each is
/// a plain `String` flag, so no value parser can echo the content in an error.
const SECRET_FILES: [(&str, &str); 5] = [
    ("iys_password", "iys_password_file"),
    ("push_password", "push_password_file"),
    ("redis_url", "redis_url_file"),
    ("database_url", "database_url_file"),
    ("api_key", "api_key_file"),
];

/// The parsed command line and where each of its settings came from.
#[derive(Debug)]
pub struct Loaded {
    pub cli: Cli,
    pub effective: Effective,
}

/// The level a setting's value came from, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Environment,
    Flag,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Environment => "environment",
            Source::Flag => "flag",
        }
    }
}

/// One setting of the effective configuration, its value already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The long flag name, which is also the file's key.
    pub key: String,
    /// The values (several for a repeatable flag); `None` when unset.
    pub values: Option<Vec<String>>,
    /// A repeatable flag (printed as an array).
    pub repeatable: bool,
    pub source: Source,
    /// The `…-file` flag the value was read through.
    pub via: Option<String>,
}

/// The effective configuration of one command, secrets redacted; prints as TOML that could be
/// used as a configuration file again (with the secrets put back).
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// `serve`, `sync`, `brand add`, …
    pub command: String,
    pub settings: Vec<Setting>,
}

impl Effective {
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# effective configuration of `iysgate {}` (flag > environment > file > default)",
            self.command
        )?;
        for s in &self.settings {
            let Some(values) = &s.values else {
                writeln!(f, "# {} is not set", s.key)?;
                continue;
            };
            let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
            let value = if s.repeatable {
                format!("[{}]", quoted.join(", "))
            } else {
                quoted.concat()
            };
            write!(f, "{} = {value} # {}", s.key, s.source.as_str())?;
            if let Some(via) = &s.via {
                write!(f, ", read from --{via}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

/// Why the configuration could not be loaded. Each message names the key and the file, or the
/// flag and the path; none carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line or an environment variable (clap's own message; `--help` too).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("config file {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: line {line}: {message}", path = .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "config file {path}: unknown key `{key}`: not a flag of `iysgate {command}` (keys are the long flag names, e.g. `redis-url`)",
        path = .path.display()
    )]
    UnknownKey {
        path: PathBuf,
        key: String,
        command: String,
    },
    #[error("config file {path}: `{key}`: {why}", path = .path.display())]
    Value {
        path: PathBuf,
        key: String,
        why: String,
    },
    /// A secret file that cannot be used; never its content.
    #[error("--{flag} {path}: {why}", path = .path.display())]
    SecretFile {
        flag: String,
        path: PathBuf,
        why: String,
    },
    #[error("--{secret} and --{file} are both given by the {level}: give one")]
    SecretTwice {
        secret: String,
        file: String,
        level: &'static str,
    },
    #[error(
        "--{secret} ({env}) is required, or --{file} ({env}_FILE), or `{secret}` or `{file}` in the config file"
    )]
    Missing {
        secret: String,
        file: String,
        env: String,
    },
    /// Settings that disagree ([`Cli::validate`]).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Parses `argv` (with the program name first) with the configuration file of `--config` or
/// `IYSGATE_CONFIG` and the secret files.
///
/// # Errors
/// [`LoadError`]: [`LoadError::Clap`] for the command line itself (including `--help`, which
/// the binary prints with `clap::Error::exit`), the others naming the key and the file or the
/// flag and the path.
pub fn load<I, T>(argv: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let (path, config) = probe(&argv)?;
    let mut built = Cli::command();
    built.build();
    let leaf = leaf_of(&built, &path);

    let mut cmd = Cli::command();
    let mut from_file = HashSet::new();
    // `config check` reads the file it is given, never its own environment's.
    if let (Some(file), false) = (&config, path.first().is_some_and(|c| c == "config")) {
        let table = read_table(file)?;
        cmd = inject(cmd, leaf, &path, file, &table, &mut from_file)?;
    }
    // A secret with a file form is required only when neither is given; checked below.
    let mut required = Vec::new();
    for (secret, file) in SECRET_FILES {
        if has_arg(leaf, secret) && has_arg(leaf, file) {
            if leaf_arg(leaf, secret).is_required_set() {
                required.push((secret, file));
            }
            cmd = mut_leaf(cmd, &path, |c| c.mut_arg(secret, |a| a.required(false)));
        }
    }

    let matches = cmd.clone().try_get_matches_from(&argv)?;
    let mut via = Vec::new();
    for (secret, file_id) in SECRET_FILES {
        let m = leaf_matches(&matches);
        if !(has_arg(leaf, secret) && has_arg(leaf, file_id)) {
            continue;
        }
        let Some(file_level) = level(m, file_id, &from_file) else {
            continue;
        };
        let secret_level = level(m, secret, &from_file);
        match secret_level {
            Some(l) if l > file_level => continue,
            Some(l) if l == file_level && l != Source::Default => {
                return Err(LoadError::SecretTwice {
                    secret: long_of(leaf, secret),
                    file: long_of(leaf, file_id),
                    level: l.as_str(),
                });
            }
            _ => {}
        }
        let secret_path = m
            .get_one::<PathBuf>(file_id)
            .expect("a level means a value")
            .clone();
        let content = read_secret(&long_of(leaf, file_id), &secret_path)?;
        // The content becomes the secret's value at the file flag's level: above whatever
        // lower level gave the secret, so the variable is dropped and the default replaced.
        cmd = mut_leaf(cmd, &path, |c| {
            c.mut_arg(secret, |a| a.env(None::<&str>).default_value(content))
        });
        via.push((secret, file_id, file_level));
    }
    let matches = if via.is_empty() {
        matches
    } else {
        cmd.clone().try_get_matches_from(&argv)?
    };
    let m = leaf_matches(&matches);
    for (secret, file) in required {
        if m.get_raw(secret).is_none() {
            return Err(LoadError::Missing {
                secret: long_of(leaf, secret),
                file: long_of(leaf, file),
                env: leaf_arg(leaf, secret)
                    .get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            });
        }
    }
    let cli = Cli::from_arg_matches(&matches)?;

    let mut settings = Vec::new();
    for arg in leaf.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if matches!(id, "help" | "version" | "config") {
            continue;
        }
        let values = m.get_raw(id).map(|raw| {
            raw.map(|v| redact(arg, &v.to_string_lossy()))
                .collect::<Vec<_>>()
        });
        let (source, via) = match via.iter().find(|(s, _, _)| *s == id) {
            Some((_, file, l)) => (*l, Some(long_of(leaf, file))),
            None => (level(m, id, &from_file).unwrap_or(Source::Default), None),
        };
        settings.push(Setting {
            key: long.to_owned(),
            values,
            repeatable: matches!(arg.get_action(), ArgAction::Append),
            source,
            via,
        });
    }
    Ok(Loaded {
        cli,
        effective: Effective {
            command: path.join(" "),
            settings,
        },
    })
}

/// `iysgate config check FILE [COMMAND [FLAGS…]]`: the effective configuration of `command`
/// (default `serve`) with `file`, the environment and the flags, checked as at start.
///
/// # Errors
/// As [`load`], and [`LoadError::Invalid`] for settings that disagree.
pub fn check(file: &Path, command: &[OsString]) -> Result<Effective, LoadError> {
    let mut argv: Vec<OsString> = vec!["iysgate".into(), "--config".into(), file.into()];
    if command.is_empty() {
        argv.push("serve".into());
    } else {
        argv.extend(command.iter().cloned());
    }
    let loaded = load(argv)?;
    loaded.cli.validate()?;
    Ok(loaded.effective)
}

/// The subcommand path and `--config` of a first, lenient parse (a required flag the file may
/// give must not stop it).
fn probe(argv: &[OsString]) -> Result<(Vec<String>, Option<PathBuf>), LoadError> {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(argv)?;
    let mut path = Vec::new();
    let mut m = &matches;
    let mut config = m.get_one::<PathBuf>("config").cloned();
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_owned());
        m = sub;
        if let Ok(Some(c)) = m.try_get_one::<PathBuf>("config") {
            config = Some(c.clone());
        }
    }
    Ok((path, config))
}

fn leaf_of<'a>(built: &'a clap::Command, path: &[String]) -> &'a clap::Command {
    path.iter().fold(built, |c, name| {
        c.find_subcommand(name)
            .expect("the probe found this subcommand")
    })
}

fn leaf_matches(matches: &ArgMatches) -> &ArgMatches {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m
}

fn has_arg(cmd: &clap::Command, id: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_id() == id)
}

fn leaf_arg<'a>(cmd: &'a clap::Command, id: &str) -> &'a Arg {
    cmd.get_arguments()
        .find(|a| a.get_id() == id)
        .expect("checked with has_arg")
}

fn long_of(cmd: &clap::Command, id: &str) -> String {
    leaf_arg(cmd, id).get_long().unwrap_or(id).to_owned()
}

/// Applies `f` to the subcommand at `path`.
fn mut_leaf(
    cmd: clap::Command,
    path: &[String],
    f: impl FnOnce(clap::Command) -> clap::Command,
) -> clap::Command {
    match path.split_first() {
        None => f(cmd),
        Some((first, rest)) => cmd.mut_subcommand(first, |c| mut_leaf(c, rest, f)),
    }
}

fn level(m: &ArgMatches, id: &str, from_file: &HashSet<String>) -> Option<Source> {
    Some(match m.value_source(id)? {
        ValueSource::CommandLine => Source::Flag,
        ValueSource::EnvVariable => Source::Environment,
        _ if from_file.contains(id) => Source::File,
        _ => Source::Default,
    })
}

fn read_table(path: &Path) -> Result<toml::Table, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| LoadError::Syntax {
        path: path.to_owned(),
        line: e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1),
        message: e.message().trim_end().to_owned(),
    })
}

/// Checks every key and value of the file against `leaf` (the built command being run) and sets
/// them as defaults of `cmd`; records the ids set in `from_file`.
fn inject(
    mut cmd: clap::Command,
    leaf: &clap::Command,
    path: &[String],
    file: &Path,
    table: &toml::Table,
    from_file: &mut HashSet<String>,
) -> Result<clap::Command, LoadError> {
    let value_error = |key: &str, why: String| LoadError::Value {
        path: file.to_owned(),
        key: key.to_owned(),
        why,
    };
    // The command being run with nothing required and no environment: parsing one flag with
    // it runs exactly that flag's value parser.
    let probe = leaf
        .clone()
        .mut_args(|a| a.env(None::<&str>).required(false));
    for (key, value) in table {
        let arg = leaf
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version" | "config"))
            .find(|a| {
                a.get_long() == Some(key.as_str())
                    || a.get_visible_aliases()
                        .is_some_and(|aliases| aliases.contains(&key.as_str()))
            })
            .ok_or_else(|| LoadError::UnknownKey {
                path: file.to_owned(),
                key: key.clone(),
                command: path.join(" "),
            })?;
        let id = arg.get_id().as_str().to_owned();
        if !from_file.insert(id.clone()) {
            return Err(value_error(
                key,
                "set twice (by its name and an alias)".into(),
            ));
        }
        let many = matches!(arg.get_action(), ArgAction::Append);
        let values = match value {
            toml::Value::Array(items) if many => items
                .iter()
                .map(|v| scalar(v).ok_or_else(|| value_error(key, NOT_SCALAR.into())))
                .collect::<Result<Vec<_>, _>>()?,
            toml::Value::Array(_) => {
                return Err(value_error(key, "takes one value, not an array".into()));
            }
            v => vec![scalar(v).ok_or_else(|| value_error(key, NOT_SCALAR.into()))?],
        };
        validate(&probe, arg, &values).map_err(|why| value_error(key, why))?;
        let set = |c: clap::Command| c.mut_arg(&id, |a| a.default_values(values).required(false));
        cmd = if arg.is_global_set() {
            set(cmd)
        } else {
            mut_leaf(cmd, path, set)
        };
    }
    Ok(cmd)
}

/// Runs `arg`'s own value parser (clap's, through a parse of `--flag=value`) on each value.
fn validate(probe: &clap::Command, arg: &Arg, values: &[String]) -> Result<(), String> {
    let long = arg.get_long().expect("file keys are long flags");
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match values {
            [v] if v == "true" || v == "false" => Ok(()),
            [v] => Err(format!("{v:?}: expected true or false")),
            _ => Err("expected true or false".into()),
        };
    }
    let argv = std::iter::once(OsString::from("iysgate")).chain(
        values
            .iter()
            .map(|v| OsString::from(format!("--{long}={v}"))),
    );
    match probe.clone().try_get_matches_from(argv) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let bad = e
                .get(ContextKind::InvalidValue)
                .and_then(|v| match v {
                    ContextValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            Err(parse_failure(arg, &bad, &e))
        }
        // Anything else (a `requires` this one flag cannot meet) is not about the value.
        _ => Ok(()),
    }
}

const NOT_SCALAR: &str = "expected a string, a number, a boolean or an array of them";

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The value parser's refusal in words, with the value unless it is a secret.
fn parse_failure(arg: &Arg, value: &str, e: &clap::Error) -> String {
    use std::error::Error as _;
    let why = if let Some(source) = e.source() {
        source.to_string()
    } else if let (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) =
        (e.kind(), e.get(ContextKind::ValidValue))
    {
        format!("expected one of {}", valid.join(", "))
    } else {
        e.kind().to_string()
    };
    if is_secret(arg) {
        why
    } else {
        format!("{value:?}: {why}")
    }
}

/// Reads a secret mounted as a file; one trailing line end is not part of it.
fn read_secret(flag: &str, path: &Path) -> Result<String, LoadError> {
    let fail = |why: String| LoadError::SecretFile {
        flag: flag.to_owned(),
        path: path.to_owned(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.kind().to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(fail("empty".into()));
    }
    Ok(text.to_owned())
}

/// Settings whose value is never shown: passwords, tokens, keys, and whatever clap hides
/// from `--help`'s environment values.
fn is_secret(arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    arg.is_hide_env_values_set()
        || ["password", "token", "secret"]
            .iter()
            .any(|w| id.contains(w))
        || id == "api_key"
        || id.ends_with("_api_key")
}

/// The value as it may be shown: a URL keeps all but its password (`redis://user:***@host`,
/// `?password=***`); any other secret is `***`.
pub fn redact(arg: &Arg, value: &str) -> String {
    if arg.get_id().as_str().ends_with("url") {
        redact_url(value)
    } else if is_secret(arg) && !value.is_empty() {
        "***".to_owned()
    } else {
        value.to_owned()
    }
}

/// `scheme://user:password@host/…?password=…` with both passwords replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::app::config::Command;

    /// A file of its own per call (tests run in parallel), removed by nobody: the OS temp dir.
    fn file(text: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "iysgate-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn serve(argv: &[&str]) -> Result<(crate::app::config::ServeArgs, Effective), LoadError> {
        let loaded = load(argv.iter().copied())?;
        let Command::Serve(args) = loaded.cli.command else {
            panic!("serve expected")
        };
        Ok((args, loaded.effective))
    }

    fn err(argv: &[&str]) -> String {
        load(argv.iter().copied()).unwrap_err().to_string()
    }

    #[test]
    fn the_file_is_over_the_default_and_the_flag_over_the_file() {
        let f = file("grace = \"3s\"\nmax-in-flight = 77\nlog-format = \"json\"\n");
        let f = f.to_str().unwrap();
        let (args, eff) = serve(&["iysgate", "--config", f, "serve"]).unwrap();
        assert_eq!(args.grace, Duration::from_secs(3), "file over default");
        assert_eq!(args.max_in_flight, 77);
        assert_eq!(args.logging.log_format, crate::telemetry::LogFormat::Json);
        assert_eq!(args.quota_hold, Duration::from_millis(50), "default");
        assert_eq!(eff.get("grace").unwrap().source, Source::File);
        assert_eq!(eff.get("quota-hold").unwrap().source, Source::Default);

        let (args, eff) = serve(&["iysgate", "serve", "--config", f, "--grace", "5s"]).unwrap();
        assert_eq!(args.grace, Duration::from_secs(5), "flag over file");
        assert_eq!(args.max_in_flight, 77, "--config after the subcommand too");
        assert_eq!(eff.get("grace").unwrap().source, Source::Flag);
    }

    #[test]
    fn the_redis_ca_file_is_a_key_of_the_file() {
        let f = file("redis-url = \"rediss://r:6380\"\nredis-ca-file = \"/etc/iysgate/ca.pem\"\n");
        let f = f.to_str().unwrap();
        let (args, eff) = serve(&["iysgate", "--config", f, "serve"]).unwrap();
        assert_eq!(
            args.redis_ca_file.as_deref(),
            Some(Path::new("/etc/iysgate/ca.pem"))
        );
        assert_eq!(eff.get("redis-ca-file").unwrap().source, Source::File);
    }

    #[test]
    fn unknown_keys_name_the_key_the_file_and_the_command() {
        let f = file("grace = \"3s\"\nredis_url = \"redis://x\"\n");
        let e = err(&["iysgate", "--config", f.to_str().unwrap(), "serve"]);
        assert!(e.contains("`redis_url`"), "{e}");
        assert!(e.contains(f.to_str().unwrap()), "{e}");
        assert!(e.contains("iysgate serve"), "{e}");
        // A flag of another command is not one of this command's.
        let f = file("brand = [\"1:2\"]\n");
        let e = err(&["iysgate", "--config", f.to_str().unwrap(), "serve"]);
        assert!(e.contains("unknown key `brand`"), "{e}");
    }

    #[test]
    fn file_values_go_through_the_flags_value_parser() {
        for (text, key, needle) in [
            ("max-staleness = \"soon\"", "max-staleness", "expected e.g."),
            ("max-staleness = 30", "max-staleness", "\"30\""),
            ("listen = \"nowhere\"", "listen", "\"nowhere\""),
            ("max-in-flight = -1", "max-in-flight", "\"-1\""),
            ("runtime = \"fast\"", "runtime", "multi-thread"),
            (
                "reconcile-confirm = \"yes\"",
                "reconcile-confirm",
                "\"yes\"",
            ),
            ("reconcile-at = \"25:00\"", "reconcile-at", "HH:MM"),
            ("grace = [\"1s\"]", "grace", "not an array"),
            ("log-format = \"xml\"", "log-format", "json"),
            ("grace = { a = 1 }", "grace", "expected a string"),
        ] {
            let f = file(text);
            let e = err(&["iysgate", "--config", f.to_str().unwrap(), "serve"]);
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
            assert!(e.contains(f.to_str().unwrap()), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn repeatable_flags_take_arrays_and_a_flag_replaces_the_files_list() {
        let f =
            file("admin-key-sha256 = [\"aa\", \"bb\"]\nclient = [\"name=a;sha256=cc;brands=1\"]\n");
        let f = f.to_str().unwrap();
        let (args, eff) = serve(&["iysgate", "--config", f, "serve"]).unwrap();
        assert_eq!(args.admin_keys, ["aa", "bb"]);
        assert_eq!(args.clients, ["name=a;sha256=cc;brands=1"]);
        assert!(
            eff.to_string()
                .contains("admin-key-sha256 = [\"aa\", \"bb\"] # file")
        );
        let (args, _) = serve(&[
            "iysgate",
            "--config",
            f,
            "serve",
            "--admin-key-sha256",
            "dd",
        ])
        .unwrap();
        assert_eq!(
            args.admin_keys,
            ["dd"],
            "the flag's list replaces the file's"
        );
    }

    #[test]
    fn a_file_can_give_a_required_flag_and_global_ones() {
        let f = file(concat!(
            "iys-url = \"http://127.0.0.1:1\"\niys-username = \"u\"\niys-password = \"p\"\n",
            "redis-url = \"redis://127.0.0.1\"\nbrand = [\"700000:700001\"]\n",
            "runtime = \"current-thread\"\nworker-threads = 3\n"
        ));
        let loaded = load(["iysgate", "--config", f.to_str().unwrap(), "sync"]).unwrap();
        assert_eq!(
            loaded.cli.runtime,
            crate::app::config::RuntimeFlavor::CurrentThread
        );
        assert_eq!(loaded.cli.worker_threads, Some(3));
        let Command::Sync(sync) = loaded.cli.command else {
            panic!("sync expected")
        };
        assert_eq!(sync.brands[0].brand_code, 700_001);
        assert_eq!(sync.iys_password, "p");
        // Without the file, clap still asks for them.
        assert!(matches!(load(["iysgate", "sync"]), Err(LoadError::Clap(_))));
    }

    #[test]
    fn syntax_errors_give_the_line_and_not_its_text() {
        let f = file("grace = \"3s\"\niys-password = \"hunter2\n");
        let e = err(&["iysgate", "--config", f.to_str().unwrap(), "serve"]);
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err(&["iysgate", "--config", "/nonexistent/iysgate.toml", "serve"]);
        assert!(e.contains("/nonexistent/iysgate.toml"), "{e}");
    }

    #[test]
    fn secrets_are_read_from_files_without_their_trailing_newline() {
        let pw = file("s3cret\n");
        let url = file("redis://app:r3dis@cache:6379/0\r\n");
        let (args, eff) = serve(&[
            "iysgate",
            "serve",
            "--iys-password-file",
            pw.to_str().unwrap(),
            "--redis-url-file",
            url.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(args.iys_password, "s3cret");
        assert_eq!(
            args.redis_url.as_deref(),
            Some("redis://app:r3dis@cache:6379/0")
        );
        let shown = eff.to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("r3dis"),
            "{shown}"
        );
        assert!(shown.contains("iys-password = \"***\" # flag, read from --iys-password-file"));
        assert!(
            shown.contains("redis-url = \"redis://app:***@cache:6379/0\""),
            "{shown}"
        );
        // From the config file: the file flag at the file's level, over the default.
        let conf = file(&format!("iys-password-file = {:?}\n", pw.to_str().unwrap()));
        let (args, _) = serve(&["iysgate", "--config", conf.to_str().unwrap(), "serve"]).unwrap();
        assert_eq!(args.iys_password, "s3cret");
        // The flag over the file's file flag.
        let (args, _) = serve(&[
            "iysgate",
            "--config",
            conf.to_str().unwrap(),
            "serve",
            "--iys-password",
            "flag",
        ])
        .unwrap();
        assert_eq!(args.iys_password, "flag");
    }

    #[test]
    fn a_secret_file_that_cannot_be_read_names_the_flag_and_path_only() {
        let e = err(&["iysgate", "serve", "--iys-password-file", "/nonexistent/pw"]);
        assert!(e.contains("--iys-password-file /nonexistent/pw"), "{e}");
        let empty = file("\n");
        let e = err(&[
            "iysgate",
            "serve",
            "--redis-url-file",
            empty.to_str().unwrap(),
        ]);
        assert!(e.contains("--redis-url-file") && e.contains("empty"), "{e}");
        let pw = file("s3cret");
        let e = err(&[
            "iysgate",
            "serve",
            "--iys-password",
            "x",
            "--iys-password-file",
            pw.to_str().unwrap(),
        ]);
        assert!(e.contains("give one"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn a_required_secret_is_satisfied_by_its_file() {
        let pw = file("s3cret\n");
        let base = [
            "iysgate",
            "sync",
            "--iys-url",
            "http://127.0.0.1:1",
            "--iys-username",
            "u",
            "--redis-url",
            "redis://127.0.0.1",
            "--brand",
            "700000:700001",
        ];
        let mut argv = base.to_vec();
        argv.extend(["--iys-password-file", pw.to_str().unwrap()]);
        let Command::Sync(sync) = load(argv).unwrap().cli.command else {
            panic!("sync expected")
        };
        assert_eq!(sync.iys_password, "s3cret");
        let e = load(base).unwrap_err().to_string();
        assert!(
            e.contains("--iys-password") && e.contains("--iys-password-file"),
            "{e}"
        );
    }

    #[test]
    fn a_half_tls_pair_from_the_file_stops_the_start() {
        let f = file("tls-cert = \"/etc/iysgate/tls.crt\"\n");
        let e = check(&f, &[]).unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
    }

    #[test]
    fn check_prints_every_setting_with_secrets_redacted() {
        let f = file(concat!(
            "database-url = \"postgres://iysgate:pgpass@db/iysgate?sslmode=require\"\n",
            "iys-password = \"iyspass\"\n",
        ));
        let shown = check(&f, &[]).unwrap().to_string();
        assert!(shown.contains("iysgate serve"), "{shown}");
        assert!(
            shown.contains(
                "database-url = \"postgres://iysgate:***@db/iysgate?sslmode=require\" # file"
            ),
            "{shown}"
        );
        assert!(shown.contains("iys-password = \"***\" # file"), "{shown}");
        assert!(
            shown.contains("listen = \"127.0.0.1:50051\" # default"),
            "{shown}"
        );
        assert!(shown.contains("# tls-cert is not set"), "{shown}");
        assert!(
            !shown.contains("pgpass") && !shown.contains("iyspass"),
            "{shown}"
        );
        // The printed configuration reads back as TOML.
        let table: toml::Table = shown.parse().unwrap();
        assert_eq!(table["grace"].as_str(), Some("10s"));
    }

    #[test]
    fn urls_lose_only_their_passwords() {
        for (url, shown) in [
            (
                "redis://user:pw@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("rediss://:pw@host", "rediss://:***@host"),
            ("redis://host:6379", "redis://host:6379"),
            (
                "postgres://u@db/x?password=pw&sslmode=verify-full",
                "postgres://u@db/x?password=***&sslmode=verify-full",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
