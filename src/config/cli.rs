//! The command line, built at run time from [`SETTINGS`] with clap's builder API, and read
//! the way Gunicorn's argparse parser reads it: abbreviated long options, repeated options
//! (last wins, or appended), `-` as a value, argparse-style error messages with exit status 2.
//! The same parser reads `GUNICORN_CMD_ARGS` and `FERROCORN_CMD_ARGS`.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

use super::table::{
    default_doc, py_repr_str, unapplied_note, Action, CliType, DefaultValue, Setting, SECTIONS,
    SETTINGS,
};
use super::validate::{parse_auto_int, parse_int_base10, Raw};
use super::StartError;

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

const APP_MODULE_HELP: &str =
    "The WSGI application, MODULE:VARIABLE (e.g. myproject.wsgi:application).";

/// The help text, laid out as argparse lays it out for `width` columns (see [`help_width`]):
/// each option's invocation, then its help wrapped in a column starting at most 24 columns in.
pub fn render_help(width: usize) -> String {
    let mut groups: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "positional arguments",
            vec![("APP_MODULE".into(), APP_MODULE_HELP.into())],
        ),
        (
            "options",
            vec![
                (
                    "-h, --help".into(),
                    "Show this help message and exit.".into(),
                ),
                ("-v, --version".into(), "Show the version and exit.".into()),
            ],
        ),
    ];
    for section in SECTIONS {
        let entries = SETTINGS
            .iter()
            .filter(|s| s.section == *section && !s.flags.is_empty())
            .map(|s| (invocation(s), option_help(s)))
            .collect();
        groups.push((section, entries));
    }
    // argparse: the help column starts 2 past the longest invocation, at most 24 in, and
    // never leaves the help fewer than 20 columns (nor fewer than 11 when space is short).
    let longest = groups
        .iter()
        .flat_map(|(_, entries)| entries.iter().map(|(inv, _)| inv.chars().count() + 2))
        .max()
        .unwrap_or(0);
    let help_position = (longest + 2).min(24.min(width.saturating_sub(20).max(4)));
    let help_width = width.saturating_sub(help_position).max(11);
    let mut out = format!("usage: {USAGE}\n");
    for (title, entries) in groups {
        out.push_str(&format!("\n{title}:\n"));
        for (inv, help) in entries {
            let lines = wrap(&help, help_width);
            let room = help_position.saturating_sub(4);
            let mut lines = lines.iter();
            if inv.chars().count() <= room {
                match lines.next() {
                    Some(first) => out.push_str(&format!("  {inv:<room$}  {first}\n")),
                    None => out.push_str(&format!("  {inv}\n")),
                }
            } else {
                out.push_str(&format!("  {inv}\n"));
            }
            for line in lines {
                out.push_str(&format!("{:help_position$}{line}\n", ""));
            }
        }
    }
    out
}

/// How argparse names an option in the help: `-w INT, --workers INT`, `--reload`,
/// `--proxy-protocol [MODE]`.
fn invocation(s: &Setting) -> String {
    let metavar = s
        .metavar
        .map_or_else(|| s.name.to_uppercase(), str::to_owned);
    let forms: Vec<String> = s
        .flags
        .iter()
        .map(|f| match s.action {
            Action::Value | Action::Append => format!("{f} {metavar}"),
            Action::OptValue(_) => format!("{f} [{metavar}]"),
            Action::Flag | Action::NoFlag | Action::None => (*f).to_owned(),
        })
        .collect();
    forms.join(", ")
}

/// An option's help: the first sentence of its doc, whether it is applied yet, its default.
fn option_help(s: &Setting) -> String {
    let default = match s.default {
        // argparse shows a string default without quotes.
        DefaultValue::Str(v) => v.to_owned(),
        _ => default_doc(s),
    };
    let unapplied = unapplied_note(s, false)
        .map(|note| format!(" Not applied yet: {note}"))
        .unwrap_or_default();
    format!("{}{unapplied} [{default}]", short_help(s.doc)).replace('`', "")
}

/// Splits `text` at spaces into lines of at most `width` characters; a longer word is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(&word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line.extend(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The width `--help` is laid out for, found as argparse finds it: `$COLUMNS` when it is a
/// positive number, else the width of the terminal on standard output, else 80; less the
/// 2 columns argparse leaves free.
pub fn help_width() -> usize {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(terminal_columns)
        .unwrap_or(80);
    columns.saturating_sub(2)
}

/// The width of the terminal on standard output, if it is one.
fn terminal_columns() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a live local;
    // on a descriptor that is not a terminal it fails and writes nothing.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
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
        .arg(
            Arg::new("APP_MODULE")
                .num_args(0..)
                .action(ArgAction::Append),
        )
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help),
        )
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::SetTrue),
        );
    // The help text is laid out by `render_help`, argparse's way, not by clap.
    for s in SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
        let mut arg = Arg::new(s.name);
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
    cmd
}

fn usage_error(message: String) -> StartError {
    StartError::usage(format!("usage: {USAGE}\n{PROG}: error: {message}"))
}

/// Parses one command line (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, StartError> {
    let mut cmd = command();
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            return Ok(Parsed::Help(render_help(help_width())));
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

    fn err(s: &str) -> StartError {
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
                assert!(text.starts_with("usage: ferrocorn [OPTIONS] [APP_MODULE]\n"));
                assert!(text.contains("\nWorker Processes:\n"));
                assert!(text.contains("\n  -w INT, --workers INT\n"));
                assert!(text.contains("\n  --limit-request-field_size INT\n"));
                assert!(text.contains("\n  --reload              Restart workers"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&argv("--version")), Ok(Parsed::Version)));
        assert!(matches!(parse(&argv("-v")), Ok(Parsed::Version)));
    }

    #[test]
    fn help_fits_the_width() {
        for width in [40, 78, 118] {
            let text = render_help(width);
            let longest = text.lines().map(|l| l.chars().count()).max();
            assert!(longest.is_some_and(|n| n <= width), "{width}: {longest:?}");
            // Every option is listed, and its help is not cut short.
            for s in SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
                assert!(text.contains(&invocation(s)), "{}", s.name);
            }
        }
        // A wide terminal is used: some help line reaches past 100 columns.
        assert!(render_help(118).lines().any(|l| l.chars().count() > 100));
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij x", 4), ["abcd", "efgh", "ij x"]);
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
