//! image-bouncer: a Kubernetes admission webhook that decides which
//! container images may run.
//!
//! The map (docs/design.md has the diagrams):
//! - `run` dispatches a parsed command line (`cli` holds the raw flags);
//!   `config` turns flags, environment and files into validated values.
//! - `server` owns sockets, TLS, HTTP and reloads, and hands each review
//!   body to `admit::Admission`, **the** admission step (as `check` and
//!   `policytest`, the `test` command, do):
//!   read (`review`, one module per wire format) → gather facts that need
//!   I/O (`registry` for digests and signatures, `verify` to check them) →
//!   decide (`policy`, pure) → reply (`review`).
//! - `mutate` patches objects; `image_ref` parses references; `digest`,
//!   `credentials`, `der`, `files`, `logging`, `metrics` and `yaml` are
//!   shared parts with no policy in them.
//! - `certs`, `setup` and `verify_bundle` are the set-up commands.

use std::fmt;
use std::process::ExitCode;

pub mod admit;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod der;
pub mod digest;
pub mod files;
pub mod flight;
#[doc(hidden)]
pub mod fuzzing;
pub mod image_ref;
pub mod kinds;
pub mod logging;
pub mod metrics;
pub mod mutate;
pub mod policy;
pub mod policytest;
pub mod registry;
pub mod review;
pub mod server;
pub mod setup;
pub mod time;
pub mod trust;
pub mod tuf;
pub mod verify;
pub mod verify_bundle;
pub mod yaml;

/// What can stop a command. Exit status 2 for everything the user can fix
/// in the invocation or configuration, 1 for runtime failures.
#[derive(Debug)]
pub enum Error {
    Usage(String),
    Config(config::ConfigError),
    /// An input document or file could not be read.
    Input(String),
    /// The server could not start (exit status 1).
    Serve(server::ServeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Input(m) => f.write_str(m),
            Error::Config(e) => e.fmt(f),
            Error::Serve(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<config::ConfigError> for Error {
    fn from(e: config::ConfigError) -> Self {
        Error::Config(e)
    }
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Input(_) => ExitCode::from(2),
            // Unreadable policy, certificate or key files are configuration.
            Error::Serve(server::ServeError::Config(_) | server::ServeError::Tls(_)) => {
                ExitCode::from(2)
            }
            Error::Serve(_) => ExitCode::from(1),
        }
    }
}

/// Exit status of a denied check.
const EXIT_DENIED: u8 = 1;

/// Runs the command line (without the program name) and returns the exit
/// status: 0 ok, 1 denied or runtime failure, 2 usage or configuration.
pub fn run(args: &[String]) -> ExitCode {
    let cmd = match cli::parse(args) {
        Ok(cmd) => cmd,
        Err(early) if early.ok => {
            println!("{}", early.output);
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            eprintln!("{}", early.output);
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        cli::Command::Print(text) => {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Check(args) => {
            logging::init(logging::Format::Text, false, true);
            check::run(&args).map(|allowed| {
                if allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_DENIED)
                }
            })
        }
        cli::Command::Test(a) => {
            logging::init(logging::Format::Text, false, true);
            // Each case's decision line would repeat what the summary says.
            log::set_max_level(log::LevelFilter::Warn);
            policytest::run(&a).map(|passed| {
                if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_DENIED)
                }
            })
        }
        cli::Command::VerifyBundle(a) => match verify_bundle::run(&a) {
            Ok(signer) => {
                println!("verified: {signer}");
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!("not verified: {why}");
                Ok(ExitCode::from(1))
            }
        },
        cli::Command::TrustUpdate(a) => match trust::update(&a) {
            Ok(done) => {
                println!("{done}");
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!("not updated: {why}; {} is left as it was", a.out);
                Ok(ExitCode::from(1))
            }
        },
        cli::Command::TrustShow(a) => match trust::show(&a) {
            Ok(text) => {
                println!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!("{why}");
                Ok(ExitCode::from(1))
            }
        },
        cli::Command::Certs(a) => setup::run_certs(&a).map(|()| ExitCode::SUCCESS),
        cli::Command::ConfigApiserver(a) => setup::run_apiserver(&a).map(|()| ExitCode::SUCCESS),
        cli::Command::ConfigWebhook(a) => setup::run_webhook(&a).map(|()| ExitCode::SUCCESS),
        cli::Command::Serve(args, legacy_env) => {
            let format = match args.log_format.as_deref() {
                Some("json") => logging::Format::Json,
                _ => logging::Format::Text,
            };
            logging::init(format, args.debug, args.log_sync);
            config::serve_settings(&args, legacy_env)
                .map_err(Error::Config)
                .and_then(|settings| server::serve(settings).map_err(Error::Serve))
                .map(|()| ExitCode::SUCCESS)
        }
    };
    // The log lines still buffered go out before anything else is said.
    logging::flush();
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", error_chain(&e));
        e.exit_code()
    })
}

/// `error: cause: cause` in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
