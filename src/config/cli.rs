//! The command line, built at run time from [`SETTINGS`] with clap's builder API, and read
//! the way Gunicorn's argparse parser reads it: abbreviated long options, repeated options
//! (last wins, or appended), `-` as a value, argparse-style error messages with exit status 2.
//! The same parser reads `GUNICORN_CMD_ARGS` and `FERROCORN_CMD_ARGS`.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

use super::table::{default_doc, py_repr_str, Action, CliType, DefaultValue, SECTIONS, SETTINGS};
use super::validate::{parse_auto_int, parse_int_base10, Raw};
use super::ConfigError;

/// The usage line argparse prints above an error.
pub const USAGE: &str = "ferrocorn [OPTIONS] [APP_MODULE]";
const PROG: &str = "ferrocorn";

/// The settings one command line (or one `*_CMD_ARGS` variable) gave.
#[derive(Debug, Default)]
pub struct Source {
    /// `(index in SETTINGS, value)`, in table order.
    pub values: Vec<(usize, Raw)>,
    /// Positional arguments: APP_MODULE and anything after it.
    pub args: Vec<String>,
}

impl Source {
    /// The raw value given for setting `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Raw> {
        self.values
            .iter()
            .find(|(i, _)| SETTINGS[*i].name == name)
            .map(|(_, r)| r)
    }
}

/// What a command line asked for.
#[derive(Debug)]
pub enum Parsed {
    Run(Source),
    /// `-h`: the help text to print on stdout.
    Help(String),
    /// `-v`.
    Version,
}

/// The first sentence of a doc text, for `--help`.
fn short_help(doc: &str) -> &str {
    match doc.find(". ") {
        Some(i) => &doc[..=i],
        None => doc,
    }
}

/// Builds the parser from the table.
pub fn command() -> Command {
    let mut cmd = Command::new(PROG)
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .infer_long_args(true)
        .args_override_self(true)
        .override_usage(USAGE)
        .help_template("usage: {usage}\n\n{all-args}\n")
        .arg(
            Arg::new("APP_MODULE")
                .num_args(0..)
                .action(ArgAction::Append)
                .help("The WSGI application, MODULE:VARIABLE (e.g. myproject.wsgi:application)."),
        )
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Show this help message and exit."),
        )
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Show the version and exit."),
        );
    for section in SECTIONS {
        cmd = cmd.next_help_heading(*section);
        for s in SETTINGS
            .iter()
            .filter(|s| s.section == *section && !s.flags.is_empty())
        {
            let mut arg = Arg::new(s.name).help(format!(
                "{} [{}]",
                short_help(s.doc).replace('`', ""),
                match s.default {
                    // argparse shows a string default without quotes.
                    DefaultValue::Str(v) => v.to_owned(),
                    _ => default_doc(s).replace('`', ""),
                }
            ));
            let mut has_long = false;
            for flag in s.flags {
                if let Some(long) = flag.strip_prefix("--") {
                    arg = if has_long {
                        arg.visible_alias(long)
                    } else {
                        arg.long(long)
                    };
                    has_long = true;
                } else if let Some(c) = flag.strip_prefix('-').and_then(|f| f.chars().next()) {
                    arg = arg.short(c);
                }
            }
            let metavar = s
                .metavar
                .map_or_else(|| s.name.to_uppercase(), str::to_owned);
            arg = match s.action {
                Action::Value => arg
                    .action(ArgAction::Set)
                    .value_name(metavar)
                    .allow_negative_numbers(true),
                Action::Append => arg
                    .action(ArgAction::Append)
                    .value_name(metavar)
                    .allow_negative_numbers(true),
                Action::OptValue(missing) => arg
                    .action(ArgAction::Set)
                    .value_name(metavar)
                    .num_args(0..=1)
                    .default_missing_value(missing),
                Action::Flag | Action::NoFlag => arg.action(ArgAction::SetTrue),
                Action::None => continue,
            };
            cmd = cmd.arg(arg);
        }
    }
    cmd
}

fn usage_error(message: String) -> ConfigError {
    ConfigError {
        message: format!("usage: {USAGE}\n{PROG}: error: {message}"),
        exit_code: crate::exit_code::USAGE_ERROR,
    }
}

/// Parses one command line (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, ConfigError> {
    let mut cmd = command();
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            return Ok(Parsed::Help(cmd.render_help().to_string()));
        }
        Err(e) => return Err(usage_error(argparse_message(&e))),
    };
    if matches.get_flag("version") {
        return Ok(Parsed::Version);
    }
    let mut source = Source {
        args: matches
            .get_many::<String>("APP_MODULE")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        ..Source::default()
    };
    for (i, s) in SETTINGS.iter().enumerate() {
        if s.action == Action::None
            || matches.value_source(s.name) != Some(ValueSource::CommandLine)
        {
            continue;
        }
        let raw = match s.action {
            Action::Flag => Raw::Bool(true),
            Action::NoFlag => Raw::Bool(false),
            Action::Append => Raw::List(
                matches
                    .get_many::<String>(s.name)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default(),
            ),
            _ => {
                let Some(v) = matches.get_one::<String>(s.name) else {
                    continue;
                };
                match s.cli_type {
                    CliType::Str => Raw::Str(v.clone()),
                    CliType::Int => Raw::Int(parse_int_base10(v).ok_or_else(|| {
                        usage_error(format!(
                            "argument {}: invalid int value: {}",
                            s.flag_display(),
                            py_repr_str(v)
                        ))
                    })?),
                    CliType::AutoInt => Raw::Int(parse_auto_int(v).ok_or_else(|| {
                        usage_error(format!(
                            "argument {}: invalid auto_int value: {}",
                            s.flag_display(),
                            py_repr_str(v)
                        ))
                    })?),
                }
            }
        };
        source.values.push((i, raw));
    }
    Ok(Parsed::Run(source))
}

/// Rewrites a clap error in argparse's words.
fn argparse_message(e: &clap::Error) -> String {
    let invalid_arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match (e.kind(), invalid_arg) {
        (ErrorKind::UnknownArgument, Some(arg)) => {
            let name = arg.split('=').next().unwrap_or(&arg);
            if name.starts_with("--") && name.len() > 2 {
                let mut candidates: Vec<&str> = SETTINGS
                    .iter()
                    .flat_map(|s| s.flags.iter().copied())
                    .chain(["--help", "--version"])
                    .filter(|f| f.starts_with(name))
                    .collect();
                candidates.dedup();
                if candidates.len() > 1 {
                    return format!(
                        "ambiguous option: {name} could match {}",
                        candidates.join(", ")
                    );
                }
            }
            format!("unrecognized arguments: {arg}")
        }
        (ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::TooFewValues, Some(arg)) => {
            let flag = arg.split([' ', '=']).next().unwrap_or(&arg);
            match SETTINGS.iter().find(|s| s.flags.contains(&flag)) {
                Some(s) => format!("argument {}: expected one argument", s.flag_display()),
                None => format!("argument {flag}: expected one argument"),
            }
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    }
}

/// Splits a string into words like Python's `shlex.split` (POSIX mode, no comments).
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('\\' | '"' | '$' | '`' | '\n')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("No closing quotation".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("No escaped character".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        shlex_split(s).expect("test argv")
    }

    fn run(s: &str) -> Source {
        match parse(&argv(s)) {
            Ok(Parsed::Run(src)) => src,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn err(s: &str) -> ConfigError {
        match parse(&argv(s)) {
            Err(e) => e,
            Ok(other) => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn values_flags_and_positionals() {
        let src =
            run("-w 4 --threads=8 -b :1 --bind unix:/x --preload --no-sendfile app:wsgi extra");
        assert!(matches!(src.get("workers"), Some(Raw::Int(4))));
        assert!(matches!(src.get("threads"), Some(Raw::Int(8))));
        assert!(matches!(src.get("bind"), Some(Raw::List(l)) if l == &[":1", "unix:/x"]));
        assert!(matches!(src.get("preload_app"), Some(Raw::Bool(true))));
        assert!(matches!(src.get("sendfile"), Some(Raw::Bool(false))));
        assert!(src.get("timeout").is_none());
        assert_eq!(src.args, ["app:wsgi", "extra"]);
    }

    #[test]
    fn argparse_habits() {
        // Abbreviations, last one wins, `-` as a value, attached short values, odd spellings.
        let src =
            run("--backl 7 -w2 -w3 --access-logfile - --limit-request-field_size 10 --log-file /l");
        assert!(matches!(src.get("workers"), Some(Raw::Int(3))));
        assert!(matches!(src.get("backlog"), Some(Raw::Int(7))));
        assert!(matches!(src.get("accesslog"), Some(Raw::Str(s)) if s == "-"));
        assert!(matches!(
            src.get("limit_request_field_size"),
            Some(Raw::Int(10))
        ));
        assert!(matches!(src.get("errorlog"), Some(Raw::Str(s)) if s == "/l"));
        // Negative numbers reach the validator, as with argparse.
        assert!(matches!(run("-w -1").get("workers"), Some(Raw::Int(-1))));
        assert!(matches!(run("-m 022").get("umask"), Some(Raw::Int(0o22))));
        assert!(
            matches!(run("--proxy-protocol").get("proxy_protocol"), Some(Raw::Str(s)) if s == "auto")
        );
        assert!(
            matches!(run("--proxy-protocol v2").get("proxy_protocol"), Some(Raw::Str(s)) if s == "v2")
        );
    }

    #[test]
    fn argparse_errors() {
        let e = err("-w abc");
        assert_eq!(e.exit_code, 2);
        assert_eq!(
            e.message,
            "usage: ferrocorn [OPTIONS] [APP_MODULE]\n\
             ferrocorn: error: argument -w/--workers: invalid int value: 'abc'"
        );
        assert!(err("--bogus")
            .message
            .ends_with("unrecognized arguments: --bogus"));
        assert!(err("--worker x")
            .message
            .contains("ambiguous option: --worker could match"));
        assert!(err("--timeout")
            .message
            .ends_with("argument -t/--timeout: expected one argument"));
        assert!(err("-m 9z")
            .message
            .ends_with("invalid auto_int value: '9z'"));
    }

    #[test]
    fn help_and_version() {
        match parse(&argv("-h")) {
            Ok(Parsed::Help(text)) => {
                if std::env::var_os("FERROCORN_SHOW_HELP").is_some() {
                    println!("{text}");
                }
                assert!(text.starts_with("usage: ferrocorn [OPTIONS] [APP_MODULE]"));
                assert!(text.contains("Worker Processes:"));
                assert!(text.contains("--limit-request-field_size <INT>"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&argv("--version")), Ok(Parsed::Version)));
        assert!(matches!(parse(&argv("-v")), Ok(Parsed::Version)));
    }

    #[test]
    fn shlex_like_python() {
        assert_eq!(
            argv(r#"-w 2  --name 'my app' -e "A=\"b c\"" x\ y"#),
            ["-w", "2", "--name", "my app", "-e", "A=\"b c\"", "x y"]
        );
        assert_eq!(argv("''"), [""]);
        assert!(shlex_split("'open").is_err());
        assert!(shlex_split("trail\\").is_err());
    }
}
