//! The settings table: one entry per setting, the only place a setting's facts are written.
//!
//! Names, flags, defaults and validators are Gunicorn 27's, so that command lines and config
//! files carry over unchanged. The doc text is ours. `support` says whether ferrocorn acts on
//! the setting yet and, when it does not, whether a value other than the default is refused or
//! only warned about; a setting leaves that state in its own row once its feature lands.

/// How the command line sets a setting (argparse's action in Gunicorn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not on the command line: config file only.
    None,
    /// `--opt VALUE`; the last one wins.
    Value,
    /// `--opt VALUE`, repeatable; each occurrence adds one item.
    Append,
    /// `--opt` sets `True`.
    Flag,
    /// `--no-opt` sets `False`.
    NoFlag,
    /// `--opt [VALUE]`: the value is optional and defaults to the given constant.
    OptValue(&'static str),
}

/// How a command-line value is converted before validation (argparse's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliType {
    Str,
    /// A base-10 integer (`int`).
    Int,
    /// An integer where a leading `0` means octal (`022`), or `0o`/`0x`/`0b` prefixed.
    AutoInt,
}

/// A default value in constant form. Some defaults depend on the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    None,
    Bool(bool),
    Int(i64),
    Str(&'static str),
    List(&'static [&'static str]),
    Dict(&'static [(&'static str, &'static str)]),
    /// A server hook that does nothing until the config file supplies one.
    Hook,
    /// `0.0.0.0:$PORT` when `PORT` is in the environment, else `127.0.0.1:8000`.
    BindPort,
    /// `$WEB_CONCURRENCY` when set, else 1.
    WebConcurrency,
    /// The working directory at startup.
    Cwd,
    /// The effective user id.
    Euid,
    /// The effective group id.
    Egid,
    /// `$XDG_RUNTIME_DIR/gunicorn.ctl` when that directory exists, else `~/.gunicorn/gunicorn.ctl`.
    ControlSocket,
}

/// The validation applied to a value from any source (Gunicorn's `validate_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// A non-negative integer; strings are parsed like Python's `int(s, 0)`.
    PosInt,
    /// A positive integer of at least 1.
    Http2StreamLimit,
    /// A non-negative integer of at most 2^31-1.
    Http2WindowSize,
    /// An integer within 16384..=16777215.
    Http2FrameSize,
    /// `True`/`False`, or the strings `"true"`/`"false"` in any case.
    Bool,
    /// A string (stripped) or `None`.
    String,
    /// A list of strings; a single string becomes a one-item list.
    ListString,
    /// A list of existing files or glob patterns.
    FilesOrPatterns,
    /// A comma-separated string split into a list.
    StringToList,
    /// A comma-separated list of IP addresses or networks, or `*`.
    AddrList,
    /// A dict of string to string.
    Dict,
    /// Any dict, kept as a Python object (`logconfig_dict`).
    PyDict,
    /// A callable, or a `module.name` import string, taking this many positional arguments.
    Callable(u8),
    /// `post_request`: a callable taking 2, 3 or 4 arguments (wrapped to take 4).
    PostRequest,
    /// A class, or a string naming one.
    Class,
    /// `worker_class`: an alias or a dotted path; only `sync` and `gthread` are served.
    WorkerClass,
    /// An existing directory, made absolute.
    Chdir,
    /// A user name or uid.
    User,
    /// A group name or gid.
    Group,
    /// `HOST:PORT` or `unix://PATH`.
    StatsdAddress,
    /// `auto`, `poll` or `inotify`.
    ReloadEngine,
    /// Deprecated and ignored: any value.
    SslVersion,
    /// `off`/`v1`/`v2`/`auto` and their boolean spellings.
    ProxyProtocol,
    /// A comma-separated list of `h1`, `h2`.
    HttpProtocols,
    /// `off`, `prior-knowledge`, `upgrade` or `both` (booleans accepted).
    Http2Cleartext,
    /// One of these words (case-insensitive).
    Choice(&'static [&'static str]),
}

/// Whether ferrocorn acts on a setting yet, and what becomes of a value it does not act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Applied,
    /// Not applied yet: a value other than the default is ignored with one warning at startup.
    Warned,
    /// Not applied yet, and ignoring a value other than the default would change security, the
    /// protocol spoken or what the application can call, so such a value stops the start.
    Refused {
        /// Why, and what to use instead (the end of the error line).
        instead: &'static str,
        /// Refused only when this setting also differs from its default (warned otherwise).
        only_with: Option<&'static str>,
    },
}

/// One setting: everything known about it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub section: &'static str,
    /// Command-line flags, short first (`-w`, `--workers`); empty when config-file only.
    pub flags: &'static [&'static str],
    pub action: Action,
    pub cli_type: CliType,
    pub metavar: Option<&'static str>,
    pub default: DefaultValue,
    pub validator: Validator,
    pub doc: &'static str,
    /// Whether ferrocorn applies this setting yet.
    pub support: Support,
    /// A ferrocorn extension: Gunicorn has no such setting.
    pub extension: bool,
}

const fn set(
    name: &'static str,
    section: &'static str,
    validator: Validator,
    default: DefaultValue,
) -> Setting {
    Setting {
        name,
        section,
        flags: &[],
        action: Action::None,
        cli_type: CliType::Str,
        metavar: None,
        default,
        validator,
        doc: "",
        support: Support::Warned,
        extension: false,
    }
}

impl Setting {
    const fn cli(mut self, flags: &'static [&'static str]) -> Self {
        self.flags = flags;
        self.action = Action::Value;
        self
    }
    const fn append(mut self, flags: &'static [&'static str]) -> Self {
        self.flags = flags;
        self.action = Action::Append;
        self
    }
    const fn flag(mut self, flags: &'static [&'static str]) -> Self {
        self.flags = flags;
        self.action = Action::Flag;
        self
    }
    const fn no_flag(mut self, flags: &'static [&'static str]) -> Self {
        self.flags = flags;
        self.action = Action::NoFlag;
        self
    }
    const fn opt_value(mut self, flags: &'static [&'static str], missing: &'static str) -> Self {
        self.flags = flags;
        self.action = Action::OptValue(missing);
        self
    }
    const fn meta(mut self, metavar: &'static str) -> Self {
        self.metavar = Some(metavar);
        self
    }
    const fn int(mut self) -> Self {
        self.cli_type = CliType::Int;
        self.metavar = Some("INT");
        self
    }
    const fn auto_int(mut self) -> Self {
        self.cli_type = CliType::AutoInt;
        self
    }
    const fn on(mut self) -> Self {
        self.support = Support::Applied;
        self
    }
    /// Not applied yet, and a value other than the default is refused: why, and what instead.
    const fn refuse(mut self, instead: &'static str) -> Self {
        self.support = Support::Refused {
            instead,
            only_with: None,
        };
        self
    }
    /// Like [`Setting::refuse`], but only when setting `other` also differs from its default.
    const fn refuse_with(mut self, other: &'static str, instead: &'static str) -> Self {
        self.support = Support::Refused {
            instead,
            only_with: Some(other),
        };
        self
    }
    const fn ext(mut self) -> Self {
        self.extension = true;
        self
    }
    const fn doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }

    /// The long flags, then the short one, as argparse names an argument (`-w/--workers`).
    pub fn flag_display(&self) -> String {
        self.flags.join("/")
    }
}

const CONFIG_FILE: &str = "Config File";
const SOCKET: &str = "Server Socket";
const WORKERS: &str = "Worker Processes";
const SECURITY: &str = "Security";
const DEBUGGING: &str = "Debugging";
const MECHANICS: &str = "Server Mechanics";
const LOGGING: &str = "Logging";
const NAMING: &str = "Process Naming";
const HOOKS: &str = "Server Hooks";
const SSL: &str = "SSL";
const HTTP2: &str = "HTTP/2";
const DIRTY: &str = "Dirty Arbiters";
const DIRTY_HOOKS: &str = "Dirty Arbiter Hooks";
const CONTROL: &str = "Control";

/// Sections in the order the help and the docs show them.
pub const SECTIONS: &[&str] = &[
    CONFIG_FILE,
    SOCKET,
    WORKERS,
    SECURITY,
    DEBUGGING,
    MECHANICS,
    LOGGING,
    NAMING,
    HOOKS,
    SSL,
    HTTP2,
    DIRTY,
    DIRTY_HOOKS,
    CONTROL,
];

use DefaultValue as D;
use Validator as V;

const LOCALHOSTS: &str = "127.0.0.1,::1";

// What a refused setting's error line offers instead.
const NO_SSL_CONTEXT: &str = "a Python SSLContext cannot drive ferrocorn's TLS, which runs in \
    Rust (rustls); set certfile, keyfile, ca_certs, cert_reqs and ciphers instead";
const NO_UWSGI: &str = "only HTTP is spoken yet, not the uwsgi protocol; forward from nginx \
    with proxy_pass instead of uwsgi_pass and leave protocol at 'http'";
const NO_DIRTY: &str = "dirty workers are not supported yet; run such work in the \
    application's own workers or in a separate task queue, and leave dirty_apps empty";

/// Every setting, in Gunicorn's order.
pub static SETTINGS: &[Setting] = &[
    // Config File
    set(
        "config",
        CONFIG_FILE,
        V::String,
        D::Str("./gunicorn.conf.py"),
    )
    .cli(&["-c", "--config"])
    .meta("CONFIG")
    .on()
    .doc(
        "The config file to run: `PATH`, `file:PATH` or `python:MODULE_NAME`. Without it, \
              `./ferrocorn.conf.py` is read if it exists, else `./gunicorn.conf.py`.",
    ),
    set("wsgi_app", CONFIG_FILE, V::String, D::None)
        .meta("STRING")
        .on()
        .doc(
            "The application as `MODULE:VARIABLE`, used when no APP_MODULE is given on the \
              command line. Default: none.",
        ),
    // Server Socket
    set("bind", SOCKET, V::ListString, D::BindPort)
        .append(&["-b", "--bind"])
        .meta("ADDRESS")
        .on()
        .doc(
            "An address to listen on: `HOST`, `HOST:PORT`, `[IPV6]:PORT`, `unix:PATH` or \
              `fd://FD`; repeat to listen on several. Default `127.0.0.1:8000`, or \
              `0.0.0.0:$PORT` when `PORT` is set.",
        ),
    set("backlog", SOCKET, V::PosInt, D::Int(2048))
        .cli(&["--backlog"])
        .int()
        .on()
        .doc(
            "How many connections may wait in the kernel's accept queue of each listener. \
              Default 2048.",
        ),
    // Worker Processes
    set("workers", WORKERS, V::PosInt, D::WebConcurrency)
        .cli(&["-w", "--workers"])
        .int()
        .on()
        .doc(
            "How many worker processes serve requests. Default 1, or `$WEB_CONCURRENCY` when set.",
        ),
    set("worker_class", WORKERS, V::WorkerClass, D::Str("sync"))
        .cli(&["-k", "--worker-class"])
        .meta("STRING")
        .on()
        .doc(
            "The worker type: `sync` (one request at a time per process), `gthread` (a thread \
              pool per process) or `asgi` (an asyncio loop per process, for ASGI \
              applications; uvicorn's worker names and their subclasses run on it). Default \
              `sync`; other Gunicorn worker classes are refused.",
        ),
    set("threads", WORKERS, V::PosInt, D::Int(1))
        .cli(&["--threads"])
        .int()
        .on()
        .doc(
            "Python threads per worker that run the application; more than 1 turns `sync` into \
              `gthread`. Default 1.",
        ),
    set("worker_connections", WORKERS, V::PosInt, D::Int(1000))
        .cli(&["--worker-connections"])
        .int()
        .on()
        .doc(
            "The most connections one worker keeps open at once (every worker class). At \
              the cap a new connection is still accepted: the connection that has waited \
              longest without sending a byte is closed to make room, or, when every open \
              connection has sent something, the new one is answered `503 Service \
              Unavailable` with `Connection: close` and closed, so clients learn at once that \
              the server is full instead of waiting in the listen queue. Default 1000.",
        ),
    set("max_requests", WORKERS, V::PosInt, D::Int(0))
        .cli(&["--max-requests"])
        .int()
        .on()
        .doc(
            "Restart a worker after it has served this many requests, to contain leaks; 0 \
              never restarts. Default 0.",
        ),
    set("max_requests_jitter", WORKERS, V::PosInt, D::Int(0))
        .cli(&["--max-requests-jitter"])
        .int()
        .on()
        .doc(
            "Adds a random 0..N to each worker's `max_requests` so workers do not all restart \
              together. Default 0.",
        ),
    set("timeout", WORKERS, V::PosInt, D::Int(30))
        .cli(&["-t", "--timeout"])
        .int()
        .on()
        .doc(
            "A worker that shows no sign of life for this many seconds is killed and replaced; \
              0 disables the check. Default 30.",
        ),
    set("graceful_timeout", WORKERS, V::PosInt, D::Int(30))
        .cli(&["--graceful-timeout"])
        .int()
        .on()
        .doc(
            "Seconds a worker may take to finish its requests after a graceful stop before it \
              is killed. Default 30.",
        ),
    set("keepalive", WORKERS, V::PosInt, D::Int(2))
        .cli(&["--keep-alive"])
        .int()
        .on()
        .doc(
            "Seconds an idle keep-alive connection is held open waiting for the next request; \
              0 closes after each response. Default 2.",
        ),
    // Security
    set("limit_request_line", SECURITY, V::PosInt, D::Int(4094))
        .cli(&["--limit-request-line"])
        .int()
        .on()
        .doc(
            "The longest request line accepted, in bytes; values above 8190 mean 8190, and 0 \
              means no limit (bounded at 1 MiB). Default 4094.",
        ),
    set("limit_request_fields", SECURITY, V::PosInt, D::Int(100))
        .cli(&["--limit-request-fields"])
        .int()
        .on()
        .doc(
            "The most header fields a request may carry; 0 or above 32768 means 32768. \
              Default 100.",
        ),
    set(
        "limit_request_field_size",
        SECURITY,
        V::PosInt,
        D::Int(8190),
    )
    .cli(&["--limit-request-field_size"])
    .int()
    .on()
    .doc("The longest header field line accepted, in bytes; 0 means 8190. Default 8190."),
    set("header_timeout", SECURITY, V::PosInt, D::Int(10))
        .cli(&["--header-timeout"])
        .int()
        .on()
        .ext()
        .doc(
            "Seconds a client has to send a complete request head once a connection is open or \
              a request has started; a late head is answered `408 Request Timeout` and the \
              connection closed (a new connection that sends nothing is closed silently). \
              Idle time between kept-alive requests is `keepalive`. ferrocorn extension: \
              Gunicorn has no such setting. Default 10.",
        ),
    set("body_timeout", SECURITY, V::PosInt, D::Int(30))
        .cli(&["--body-timeout"])
        .int()
        .on()
        .ext()
        .doc(
            "Seconds the server waits for the next bytes of a request body before it gives up \
              on the request: `408 Request Timeout` while the body is buffered before the \
              application runs, an error from `wsgi.input` afterwards. ferrocorn extension: \
              Gunicorn has no such setting. Default 30.",
        ),
    set("body_buffer_size", SECURITY, V::PosInt, D::Int(1048576))
        .cli(&["--body-buffer-size"])
        .int()
        .on()
        .ext()
        .doc(
            "Request bodies up to this many bytes are read completely, by the event loop, \
              before the application is called, so a slow upload holds no Python thread; a \
              longer body is buffered up to this size, then streams through `wsgi.input`. \
              0 means no buffering. ferrocorn extension: Gunicorn has no such setting. \
              Default 1048576 (1 MiB).",
        ),
    set("response_buffer_size", SECURITY, V::PosInt, D::Int(1048576))
        .cli(&["--response-buffer-size"])
        .int()
        .on()
        .ext()
        .doc(
            "Unsent response bytes held per connection before the application's body \
              iterator is asked for more: past this, a `sync` worker pauses that response and \
              serves other connections until the client has read, and a `gthread` worker's \
              thread waits for the client. ferrocorn extension: Gunicorn has no such setting. \
              Default 1048576 (1 MiB).",
        ),
    // Debugging
    set("reload", DEBUGGING, V::Bool, D::Bool(false))
        .flag(&["--reload"])
        .on()
        .doc(
            "Restart workers when application code changes: each worker watches the source \
              files of its loaded modules (and `reload_extra_files`) and stops gracefully when \
              one changes; the master starts a fresh worker. For development only. Default off.",
        ),
    set("reload_engine", DEBUGGING, V::ReloadEngine, D::Str("auto"))
        .cli(&["--reload-engine"])
        .meta("STRING")
        .on()
        .doc("How `--reload` watches files: `auto`, `poll` or `inotify`. Default `auto`."),
    set(
        "reload_extra_files",
        DEBUGGING,
        V::FilesOrPatterns,
        D::List(&[]),
    )
    .append(&["--reload-extra-file"])
    .meta("FILES")
    .on()
    .doc("More files or glob patterns whose change triggers a reload. Default none."),
    set("spew", DEBUGGING, V::Bool, D::Bool(false))
        .flag(&["--spew"])
        .doc("Trace every line the server executes; extremely verbose. Default off."),
    set("check_config", DEBUGGING, V::Bool, D::Bool(false))
        .flag(&["--check-config"])
        .on()
        .doc(
            "Check the settings, load the application and exit: 0 when it loads, 1 when it \
              does not. Default off.",
        ),
    set("print_config", DEBUGGING, V::Bool, D::Bool(false))
        .flag(&["--print-config"])
        .on()
        .doc("Print every setting with its resolved value, then exit. Default off."),
    // Server Mechanics
    set("preload_app", MECHANICS, V::Bool, D::Bool(false))
        .flag(&["--preload"])
        .on()
        .doc(
            "Import the application in the master before forking, sharing its memory between \
              workers; code changes then need a full restart. Default off.",
        ),
    set("sendfile", MECHANICS, V::Bool, D::None)
        .no_flag(&["--no-sendfile"])
        .on()
        .doc(
            "`--no-sendfile` stops file responses from being sent with `sendfile()`. When not \
              set, the `SENDFILE` environment variable decides, and sendfile is on by default.",
        ),
    set("reuse_port", MECHANICS, V::Bool, D::Bool(false))
        .on()
        .flag(&["--reuse-port"])
        .on()
        .doc(
            "Set `SO_REUSEPORT` on listening sockets, so another server (a new deployment) can \
              bind the same port while this one runs. The master binds once and its workers \
              share the sockets; Gunicorn instead binds one socket per worker. Default off.",
        ),
    set("chdir", MECHANICS, V::Chdir, D::Cwd)
        .cli(&["--chdir"])
        .on()
        .doc(
            "Change to this directory (and put it first on `sys.path`) before loading the \
              application. Default: the current directory.",
        ),
    set("daemon", MECHANICS, V::Bool, D::Bool(false))
        .flag(&["-D", "--daemon"])
        .on()
        .doc("Detach from the terminal and run in the background. Default off."),
    set("raw_env", MECHANICS, V::ListString, D::List(&[]))
        .append(&["-e", "--env"])
        .meta("ENV")
        .on()
        .doc(
            "An environment variable `KEY=VALUE` to set in the server; repeat for several. \
              Default none.",
        ),
    set("pidfile", MECHANICS, V::String, D::None)
        .cli(&["-p", "--pid"])
        .meta("FILE")
        .on()
        .doc(
            "Write the master's process id to this file (atomically), removed on exit. A file \
              naming a live process stops the start; a stale one is replaced. A master started \
              by USR2 writes `FILE.2` until the old master exits. Default: no file.",
        ),
    set("worker_tmp_dir", MECHANICS, V::String, D::None)
        .cli(&["--worker-tmp-dir"])
        .meta("DIR")
        .on()
        .doc(
            "Accepted for compatibility: ferrocorn's worker heartbeat lives in shared memory, \
              not in files. Default none.",
        ),
    set("user", MECHANICS, V::User, D::Euid)
        .cli(&["-u", "--user"])
        .meta("USER")
        .on()
        .doc("Run workers as this user (name or uid). Default: the current effective user."),
    set("group", MECHANICS, V::Group, D::Egid)
        .cli(&["-g", "--group"])
        .meta("GROUP")
        .on()
        .doc("Run workers as this group (name or gid). Default: the current effective group."),
    set("umask", MECHANICS, V::PosInt, D::Int(0))
        .cli(&["-m", "--umask"])
        .meta("INT")
        .auto_int()
        .on()
        .doc(
            "The umask for files the server creates, such as unix sockets; `022`-style octal is \
              accepted. Default 0.",
        ),
    set("initgroups", MECHANICS, V::Bool, D::Bool(false))
        .flag(&["--initgroups"])
        .on()
        .doc("Give workers all the supplementary groups of `user`. Default off."),
    set("tmp_upload_dir", MECHANICS, V::String, D::None)
        .meta("DIR")
        .doc("Kept for compatibility; it has no effect. Default none."),
    set(
        "secure_scheme_headers",
        MECHANICS,
        V::Dict,
        D::Dict(&[
            ("X-FORWARDED-PROTOCOL", "ssl"),
            ("X-FORWARDED-PROTO", "https"),
            ("X-FORWARDED-SSL", "on"),
        ]),
    )
    .on()
    .doc(
        "Headers, with the value that means HTTPS, that a trusted proxy (see \
              `forwarded_allow_ips`) uses to say the client connected over TLS. Default \
              `X-FORWARDED-PROTOCOL: ssl`, `X-FORWARDED-PROTO: https`, `X-FORWARDED-SSL: on`.",
    ),
    set(
        "forwarded_allow_ips",
        MECHANICS,
        V::AddrList,
        D::Str(LOCALHOSTS),
    )
    .cli(&["--forwarded-allow-ips"])
    .meta("STRING")
    .on()
    .doc(
        "Comma-separated addresses or networks of the proxies trusted to say that the client \
              used HTTPS (`secure_scheme_headers`) and to set `forwarder_headers`, or `*` for \
              all; unix-socket peers are always trusted. Default `127.0.0.1,::1`.",
    ),
    // Logging
    set("accesslog", LOGGING, V::String, D::None)
        .on()
        .cli(&["--access-logfile"])
        .meta("FILE")
        .doc("Where to write the access log; `-` is standard output. Default: no access log."),
    set(
        "disable_redirect_access_to_syslog",
        LOGGING,
        V::Bool,
        D::Bool(false),
    )
    .flag(&["--disable-redirect-access-to-syslog"])
    .on()
    .doc("Keep access log lines out of syslog when syslog is on. Default off."),
    set(
        "access_log_format",
        LOGGING,
        V::String,
        D::Str("%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\""),
    )
    .on()
    .cli(&["--access-logformat"])
    .meta("STRING")
    .doc(
        "The access log line, written with Gunicorn's `%(x)s` atoms. Default: the combined \
              log format.",
    ),
    set("errorlog", LOGGING, V::String, D::Str("-"))
        .cli(&["--error-logfile", "--log-file"])
        .meta("FILE")
        .on()
        .doc("Where to write the error log; `-` is standard error. Default `-`."),
    set("loglevel", LOGGING, V::String, D::Str("info"))
        .cli(&["--log-level"])
        .meta("LEVEL")
        .on()
        .doc(
            "The least severe messages the error log keeps: `debug`, `info`, `warning`, \
              `error` or `critical`. Default `info`.",
        ),
    set("capture_output", LOGGING, V::Bool, D::Bool(false))
        .flag(&["--capture-output"])
        .on()
        .doc(
            "Send the application's stdout and stderr (descriptors 1 and 2, in the master and \
              every worker) to the error log file; no effect when the error log is `-`. The \
              file is reopened with the logs on USR1. Default off.",
        ),
    set(
        "logger_class",
        LOGGING,
        V::Class,
        D::Str("gunicorn.glogging.Logger"),
    )
    .cli(&["--logger-class"])
    .meta("STRING")
    .on()
    .doc(
        "A Python class with Gunicorn's logger interface (`__init__(cfg)`, `info`, `error`, \
              `exception`, ..., `access(resp, req, environ, request_time)`, `reopen_files`), \
              given as a class or a `module.Class` string; an instance made in the master \
              receives every error log message and every request. \
              `gunicorn.glogging.Logger` (and `simple`) name the built-in logger, written in \
              Rust. Default: the built-in logger.",
    ),
    set("logconfig", LOGGING, V::String, D::None)
        .cli(&["--log-config"])
        .meta("FILE")
        .on()
        .doc(
            "A `logging.config.fileConfig` (ini) file to configure logging with. Error and \
              access lines then go through the `logging` loggers `gunicorn.error` and \
              `gunicorn.access` (handlers on `ferrocorn.error`/`ferrocorn.access` get them \
              too). Default none.",
        ),
    set("logconfig_dict", LOGGING, V::PyDict, D::Dict(&[]))
        .on()
        .doc(
            "A `logging.config.dictConfig` dictionary to configure logging with, laid over \
              Gunicorn's default dictionary one level deep; it wins over the other logging \
              config settings. Default empty.",
        ),
    set("logconfig_json", LOGGING, V::String, D::None)
        .cli(&["--log-config-json"])
        .meta("FILE")
        .on()
        .doc(
            "A JSON file holding a `logging.config.dictConfig` dictionary to configure logging \
              with, laid over Gunicorn's default dictionary one level deep (as \
              `logconfig_dict` is). Default none.",
        ),
    set(
        "syslog_addr",
        LOGGING,
        V::String,
        D::Str("udp://localhost:514"),
    )
    .cli(&["--log-syslog-to"])
    .meta("SYSLOG_ADDR")
    .on()
    .doc(
        "Where syslog messages go: `unix://PATH#TYPE`, `udp://HOST:PORT` or \
              `tcp://HOST:PORT`. Default `udp://localhost:514`.",
    ),
    set("syslog", LOGGING, V::Bool, D::Bool(false))
        .flag(&["--log-syslog"])
        .on()
        .doc(
            "Also send error log messages, and access lines, to syslog, framed as Gunicorn \
              frames them (`<PRI>gunicorn.PREFIX.error: [PID] message`). Default off.",
        ),
    set("syslog_prefix", LOGGING, V::String, D::None)
        .cli(&["--log-syslog-prefix"])
        .meta("SYSLOG_PREFIX")
        .on()
        .doc(
            "The PREFIX in the syslog program name `gunicorn.PREFIX.error`. Default: the \
              process name, with `:` replaced by `.`.",
        ),
    set("syslog_facility", LOGGING, V::String, D::Str("user"))
        .cli(&["--log-syslog-facility"])
        .meta("SYSLOG_FACILITY")
        .on()
        .doc("The syslog facility name (`user`, `daemon`, `local0`...). Default `user`."),
    set("enable_stdio_inheritance", LOGGING, V::Bool, D::Bool(false))
        .flag(&["-R", "--enable-stdio-inheritance"])
        .on()
        .doc(
            "With `--daemon`, keep standard output and error where they point (a file given \
              by shell redirection, say) unless they are a terminal; standard input still goes \
              to /dev/null. Default off: all three go to /dev/null.",
        ),
    set("statsd_host", LOGGING, V::StatsdAddress, D::None)
        .cli(&["--statsd-host"])
        .meta("STATSD_ADDR")
        .on()
        .doc(
            "A StatsD server, `HOST:PORT` (port 8125 by default) or `unix://PATH`, to send \
              Gunicorn's metrics to over UDP or a unix datagram socket. Default: no metrics.",
        ),
    set("dogstatsd_tags", LOGGING, V::String, D::Str(""))
        .cli(&["--dogstatsd-tags"])
        .meta("DOGSTATSD_TAGS")
        .on()
        .doc(
            "Comma-separated DogStatsD tags (`key:value`) added to every metric. Default \
              empty.",
        ),
    set("statsd_prefix", LOGGING, V::String, D::Str(""))
        .cli(&["--statsd-prefix"])
        .meta("STATSD_PREFIX")
        .on()
        .doc("A prefix for every StatsD metric name; a `.` is added. Default empty."),
    set("enable_backlog_metric", LOGGING, V::Bool, D::Bool(false))
        .flag(&["--enable-backlog-metric"])
        .on()
        .doc(
            "Report the connections waiting in the TCP listen queues as the StatsD histogram \
              `gunicorn.backlog`, once a second (Linux). Default off.",
        ),
    set("metrics_bind", LOGGING, V::String, D::None)
        .cli(&["--metrics-bind"])
        .meta("ADDRESS")
        .on()
        .ext()
        .doc(
            "Serve Prometheus metrics (`GET /metrics`, text format) from the master at \
              `HOST:PORT` or `unix:PATH`: requests by status class, a latency histogram, \
              requests in flight, open connections, workers, and worker restarts by reason. \
              Workers count into shared memory; the master answers scrapes without blocking. \
              See docs/logging.md. ferrocorn extension: Gunicorn has no such setting. \
              Default: off.",
        ),
    // Process Naming
    set("proc_name", NAMING, V::String, D::None)
        .cli(&["-n", "--name"])
        .meta("STRING")
        .on()
        .doc(
            "The base of the process titles shown by `ps` and `top`. Default: \
              `default_proc_name`.",
        ),
    set("default_proc_name", NAMING, V::String, D::Str("ferrocorn"))
        .on()
        .doc(
            "The process title used when `proc_name` is not set; the APP_MODULE when one is \
              given. Default `ferrocorn`.",
        ),
    // Server Mechanics
    set("pythonpath", MECHANICS, V::String, D::None)
        .cli(&["--pythonpath"])
        .meta("STRING")
        .on()
        .doc("Comma-separated directories put at the front of `sys.path`. Default none."),
    set("paste", MECHANICS, V::String, D::None)
        .cli(&["--paste", "--paster"])
        .meta("STRING")
        .on()
        .doc(
            "Load the application from a PasteDeploy ini file, `FILE` or `FILE#NAME` (NAME picks \
              the `[app:NAME]`, pipeline or composite section; `main` by default), instead of an APP_MODULE. \
              Needs the PasteDeploy package. When the file has a `[loggers]` section, \
              `logconfig` defaults to the file. For `[server:main]`, PasteDeploy's server \
              runner is `use = egg:ferrocorn#main`. Give it on the command line: as in Gunicorn, \
              `paste` set only in a config file or `GUNICORN_CMD_ARGS` does not name the \
              file to load. Default none.",
        ),
    // Server Hooks
    set("on_starting", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `on_starting(server)`, called in the master before it starts. Default: \
              does nothing.",
    ),
    set("on_reload", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `on_reload(server)`, called in the master when it reloads on SIGHUP. \
              Default: does nothing.",
    ),
    set("when_ready", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `when_ready(server)`, called once the listeners are bound. Default: does \
              nothing.",
    ),
    set("pre_fork", HOOKS, V::Callable(2), D::Hook).on().doc(
        "Hook `pre_fork(server, worker)`, called in the master before a worker is forked. \
              Default: does nothing.",
    ),
    set("post_fork", HOOKS, V::Callable(2), D::Hook).on().doc(
        "Hook `post_fork(server, worker)`, called in a new worker right after fork. \
              Default: does nothing.",
    ),
    set("post_worker_init", HOOKS, V::Callable(1), D::Hook)
        .on()
        .doc(
            "Hook `post_worker_init(worker)`, called in a worker once the application is \
              loaded. Default: does nothing.",
        ),
    set("worker_int", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `worker_int(worker)`, called in a worker on SIGINT or SIGQUIT. Default: \
              does nothing.",
    ),
    set("worker_abort", HOOKS, V::Callable(1), D::Hook)
        .on()
        .doc(
            "Hook `worker_abort(worker)`, called in a worker killed with SIGABRT after a \
              timeout. Default: does nothing.",
        ),
    set("pre_exec", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `pre_exec(server)`, called before a new master is executed on SIGUSR2. \
              Default: does nothing.",
    ),
    set("pre_request", HOOKS, V::Callable(2), D::Hook).on().doc(
        "Hook `pre_request(worker, req)`, called before the application handles a \
              request. Default: does nothing.",
    ),
    set("post_request", HOOKS, V::PostRequest, D::Hook)
        .on()
        .doc(
            "Hook `post_request(worker, req, environ, resp)`, called after a request; \
              functions taking only the first two or three arguments are accepted. Default: \
              does nothing.",
        ),
    set("child_exit", HOOKS, V::Callable(2), D::Hook).on().doc(
        "Hook `child_exit(server, worker)`, called in the master after a worker exits. \
              Default: does nothing.",
    ),
    set("worker_exit", HOOKS, V::Callable(2), D::Hook).on().doc(
        "Hook `worker_exit(server, worker)`, called in a worker as it exits. Default: \
              does nothing.",
    ),
    set("nworkers_changed", HOOKS, V::Callable(3), D::Hook)
        .on()
        .doc(
            "Hook `nworkers_changed(server, new_value, old_value)`, called when the worker \
              count changes. Default: does nothing.",
        ),
    set("on_exit", HOOKS, V::Callable(1), D::Hook).on().doc(
        "Hook `on_exit(server)`, called just before the master exits. Default: does \
              nothing.",
    ),
    set("ssl_context", HOOKS, V::Callable(2), D::Hook)
        .refuse(NO_SSL_CONTEXT)
        .doc(
            "Hook `ssl_context(config, default_ssl_context_factory)` returning the TLS \
              context to use. Default: the factory's context.",
        ),
    // Server Mechanics
    set("proxy_protocol", MECHANICS, V::ProxyProtocol, D::Str("off"))
        .on()
        .opt_value(&["--proxy-protocol"], "auto")
        .meta("MODE")
        .doc(
            "Accept the HAProxy PROXY protocol: `off`, `v1`, `v2` or `auto`; the bare flag \
              means `auto`. Default `off`.",
        ),
    set(
        "proxy_allow_ips",
        MECHANICS,
        V::AddrList,
        D::Str(LOCALHOSTS),
    )
    .on()
    .cli(&["--proxy-allow-from"])
    .doc(
        "Comma-separated addresses or networks allowed to send a PROXY header, or `*`. \
              Default `127.0.0.1,::1`.",
    ),
    set("protocol", MECHANICS, V::String, D::Str("http"))
        .cli(&["--protocol"])
        .meta("STRING")
        .refuse(NO_UWSGI)
        .doc("The wire protocol spoken on the listeners: `http` or `uwsgi`. Default `http`."),
    set(
        "uwsgi_allow_ips",
        MECHANICS,
        V::AddrList,
        D::Str(LOCALHOSTS),
    )
    .cli(&["--uwsgi-allow-from"])
    .doc(
        "Comma-separated addresses allowed to speak the uwsgi protocol, or `*`. Default \
              `127.0.0.1,::1`.",
    ),
    // SSL
    set("keyfile", SSL, V::String, D::None)
        .cli(&["--keyfile"])
        .meta("FILE")
        .on()
        .doc(
            "The TLS private key file (PEM); without it the key is read from `certfile`. \
              Default none.",
        ),
    set("certfile", SSL, V::String, D::None)
        .cli(&["--certfile"])
        .meta("FILE")
        .on()
        .doc(
            "The TLS certificate file (PEM, the chain after the certificate); setting it (or \
              `keyfile`) turns TLS on for every listener. Re-read on HUP. Default none.",
        ),
    set("ssl_version", SSL, V::SslVersion, D::Int(2))
        .cli(&["--ssl-version"])
        .on()
        .doc(
            "Deprecated and ignored, with Gunicorn's warning: TLS 1.2 and 1.3 are offered. \
              Default 2 (`PROTOCOL_TLS`).",
        ),
    set("cert_reqs", SSL, V::PosInt, D::Int(0))
        .cli(&["--cert-reqs"])
        .on()
        .doc(
            "Whether a client certificate is asked for: 0 not asked, 1 optional (verified \
              when sent), 2 required and verified, against `ca_certs`. Default 0.",
        ),
    set("ca_certs", SSL, V::String, D::None)
        .cli(&["--ca-certs"])
        .meta("FILE")
        .on()
        .doc("The CA bundle (PEM) client certificates are verified against. Default none."),
    set("suppress_ragged_eofs", SSL, V::Bool, D::Bool(true))
        .flag(&["--suppress-ragged-eofs"])
        .on()
        .doc(
            "Treat a TLS connection closed without close_notify as a normal end of stream; \
              when off, such a close is reported to the reader as an error. Default on.",
        ),
    set("do_handshake_on_connect", SSL, V::Bool, D::Bool(false))
        .flag(&["--do-handshake-on-connect"])
        .on()
        .doc(
            "Accepted for compatibility: the TLS handshake always runs as soon as a connection \
              is accepted, on the event loop, within `header_timeout`. Default off.",
        ),
    set("ciphers", SSL, V::String, D::None)
        .cli(&["--ciphers"])
        .on()
        .doc(
            "An OpenSSL cipher string choosing the TLS 1.2 suites offered, among those rustls \
              has (ECDHE with AES-GCM or ChaCha20-Poly1305); TLS 1.3 suites are always \
              offered, as with OpenSSL. A string selecting none is an error. Default: all.",
        ),
    // HTTP/2
    set("http_protocols", HTTP2, V::HttpProtocols, D::Str("h1"))
        .cli(&["--http-protocols"])
        .meta("STRING")
        .on()
        .doc(
            "Comma-separated protocols, most preferred first (offered through ALPN with \
              TLS): `h1`, `h2`. Default `h1`. Without TLS, `h2` is spoken as \
              `http2_cleartext` allows.",
        ),
    set("http2_cleartext", HTTP2, V::Http2Cleartext, D::Str("off"))
        .cli(&["--http2-cleartext"])
        .meta("STRING")
        .on()
        .doc(
            "HTTP/2 without TLS (h2c), with `h2` in `http_protocols`: `off`; \
              `prior-knowledge` (connections that open with the HTTP/2 preface; then a \
              trusted peer that does not send it gets 400); `upgrade` (an HTTP/1.1 request \
              without a body, with `Upgrade: h2c` and `HTTP2-Settings`, gets `101` and the \
              connection goes on as HTTP/2); or `both`. Only peers in \
              `forwarded_allow_ips` and unix-socket peers may use it. Default `off`.",
        ),
    set(
        "http2_max_concurrent_streams",
        HTTP2,
        V::Http2StreamLimit,
        D::Int(100),
    )
    .cli(&["--http2-max-concurrent-streams"])
    .int()
    .on()
    .doc("The most streams a client may have open on one HTTP/2 connection. Default 100."),
    set(
        "http2_initial_window_size",
        HTTP2,
        V::Http2WindowSize,
        D::Int(65535),
    )
    .cli(&["--http2-initial-window-size"])
    .int()
    .on()
    .doc("The initial HTTP/2 flow-control window, in bytes. Default 65535."),
    set(
        "http2_max_frame_size",
        HTTP2,
        V::Http2FrameSize,
        D::Int(16384),
    )
    .cli(&["--http2-max-frame-size"])
    .int()
    .on()
    .doc(
        "The largest HTTP/2 frame payload accepted, 16384 to 16777215 bytes. Default \
              16384.",
    ),
    set(
        "http2_max_header_list_size",
        HTTP2,
        V::PosInt,
        D::Int(65536),
    )
    .cli(&["--http2-max-header-list-size"])
    .int()
    .on()
    .doc(
        "The largest HTTP/2 header list accepted, in bytes; 0 means no limit. Default \
              65536.",
    ),
    // Server Mechanics
    set(
        "raw_paste_global_conf",
        MECHANICS,
        V::ListString,
        D::List(&[]),
    )
    .append(&["--paste-global"])
    .meta("CONF")
    .on()
    .doc(
        "A `KEY=VALUE` variable added to the PasteDeploy global configuration (`global_conf`) \
              the `--paste` application is loaded with; repeat for several. `\\=` stands \
              for a `=` inside the key or the value. Default none.",
    ),
    set(
        "permit_obsolete_folding",
        MECHANICS,
        V::Bool,
        D::Bool(false),
    )
    .flag(&["--permit-obsolete-folding"])
    .on()
    .doc(
        "Accept header values continued on the next line (obsolete line folding) instead \
              of refusing the request. Default off.",
    ),
    set("strip_header_spaces", MECHANICS, V::Bool, D::Bool(false))
        .flag(&["--strip-header-spaces"])
        .on()
        .doc(
            "Accept and remove spaces between a header name and its colon; unsafe behind \
              proxies that read them differently. Default off.",
        ),
    set(
        "permit_unconventional_http_method",
        MECHANICS,
        V::Bool,
        D::Bool(false),
    )
    .flag(&["--permit-unconventional-http-method"])
    .on()
    .doc(
        "Accept request methods that are lowercase, contain `#`, or are shorter than 3 or \
              longer than 20 characters. Default off.",
    ),
    set(
        "permit_unconventional_http_version",
        MECHANICS,
        V::Bool,
        D::Bool(false),
    )
    .on()
    .flag(&["--permit-unconventional-http-version"])
    .doc("Accept HTTP versions other than 1.0 and 1.1. Default off."),
    set("casefold_http_method", MECHANICS, V::Bool, D::Bool(false))
        .flag(&["--casefold-http-method"])
        .on()
        .doc("Uppercase request methods before the application sees them. Default off."),
    set(
        "forwarder_headers",
        MECHANICS,
        V::StringToList,
        D::Str("SCRIPT_NAME,PATH_INFO"),
    )
    .on()
    .cli(&["--forwarder-headers"])
    .doc(
        "Comma-separated underscore header names that a proxy trusted by \
              `forwarded_allow_ips` may set into the environ. Default `SCRIPT_NAME,PATH_INFO`.",
    ),
    set(
        "header_map",
        MECHANICS,
        V::Choice(&["drop", "refuse", "dangerous"]),
        D::Str("drop"),
    )
    .cli(&["--header-map"])
    .on()
    .doc(
        "What to do with header names containing `_`: `drop` them, `refuse` the request, \
              or map them like `-` (`dangerous`). Default `drop`.",
    ),
    // Worker Processes
    set(
        "asgi_loop",
        WORKERS,
        V::Choice(&["auto", "asyncio", "uvloop"]),
        D::Str("auto"),
    )
    .cli(&["--asgi-loop"])
    .meta("STRING")
    .on()
    .doc("The event loop of the ASGI worker: `auto`, `asyncio` or `uvloop`. Default `auto`."),
    set(
        "asgi_lifespan",
        WORKERS,
        V::Choice(&["auto", "on", "off"]),
        D::Str("auto"),
    )
    .cli(&["--asgi-lifespan"])
    .meta("STRING")
    .on()
    .doc("Whether ASGI lifespan events are sent: `auto`, `on` or `off`. Default `auto`."),
    set(
        "asgi_disconnect_grace_period",
        WORKERS,
        V::PosInt,
        D::Int(3),
    )
    .cli(&["--asgi-disconnect-grace-period"])
    .int()
    .on()
    .doc(
        "Seconds an ASGI app may keep running after its client went away before it is \
              cancelled. Default 3.",
    ),
    set(
        "websocket_max_message_size",
        WORKERS,
        V::PosInt,
        D::Int(16_777_216),
    )
    .cli(&["--websocket-max-message-size"])
    .int()
    .on()
    .doc("The largest WebSocket message accepted, in bytes. Default 16777216."),
    set(
        "websocket_ping_interval",
        WORKERS,
        V::PosInt,
        D::Int(20),
    )
    .cli(&["--websocket-ping-interval"])
    .int()
    .on()
    .ext()
    .doc(
        "Seconds a WebSocket connection may be silent before the server pings the client; \
              0 sends no keepalive pings. ferrocorn extension (uvicorn's `ws_ping_interval`): \
              Gunicorn has no such setting. Default 20.",
    ),
    set(
        "websocket_ping_timeout",
        WORKERS,
        V::PosInt,
        D::Int(20),
    )
    .cli(&["--websocket-ping-timeout"])
    .int()
    .on()
    .ext()
    .doc(
        "Seconds the client has to answer a keepalive ping before the connection is closed \
              with 1011; 0 waits forever (and pings again each interval). ferrocorn extension (uvicorn's \
              `ws_ping_timeout`): Gunicorn has no such setting. Default 20.",
    ),
    set(
        "http_parser",
        WORKERS,
        V::Choice(&["auto", "fast", "python"]),
        D::Str("auto"),
    )
    .cli(&["--http-parser"])
    .meta("STRING")
    .doc(
        "Gunicorn's choice of HTTP parser: `auto`, `fast` or `python`. ferrocorn always \
              parses in Rust. Default `auto`.",
    ),
    // Server Mechanics
    set("root_path", MECHANICS, V::String, D::Str(""))
        .cli(&["--root-path"])
        .meta("STRING")
        .on()
        .doc("The mount prefix passed to ASGI apps as `root_path`. Default empty."),
    // Dirty Arbiters
    set("dirty_apps", DIRTY, V::ListString, D::List(&[]))
        .append(&["--dirty-app"])
        .meta("STRING")
        .refuse_with("dirty_workers", NO_DIRTY)
        .doc(
            "A dirty application `module:Class[:N]` run by separate dirty workers; repeat for \
              several. Default none.",
        ),
    set("dirty_workers", DIRTY, V::PosInt, D::Int(0))
        .cli(&["--dirty-workers"])
        .int()
        .doc("How many dirty worker processes to run; 0 runs none. Default 0."),
    set("dirty_timeout", DIRTY, V::PosInt, D::Int(300))
        .cli(&["--dirty-timeout"])
        .int()
        .doc(
            "Seconds a dirty task may run before it is abandoned; 0 means no limit. \
              Default 300.",
        ),
    set("dirty_threads", DIRTY, V::PosInt, D::Int(1))
        .cli(&["--dirty-threads"])
        .int()
        .doc("Threads in each dirty worker. Default 1."),
    set("dirty_graceful_timeout", DIRTY, V::PosInt, D::Int(30))
        .cli(&["--dirty-graceful-timeout"])
        .int()
        .doc("Seconds dirty workers get to finish after a graceful stop. Default 30."),
    // Dirty Arbiter Hooks
    set("on_dirty_starting", DIRTY_HOOKS, V::Callable(1), D::Hook).doc(
        "Hook `on_dirty_starting(arbiter)`, called as the dirty arbiter starts. Default: \
              does nothing.",
    ),
    set("dirty_post_fork", DIRTY_HOOKS, V::Callable(2), D::Hook).doc(
        "Hook `dirty_post_fork(arbiter, worker)`, called after a dirty worker is forked. \
              Default: does nothing.",
    ),
    set("dirty_worker_init", DIRTY_HOOKS, V::Callable(1), D::Hook).doc(
        "Hook `dirty_worker_init(worker)`, called once a dirty worker has loaded its apps. \
              Default: does nothing.",
    ),
    set("dirty_worker_exit", DIRTY_HOOKS, V::Callable(2), D::Hook).doc(
        "Hook `dirty_worker_exit(arbiter, worker)`, called as a dirty worker exits. \
              Default: does nothing.",
    ),
    // Control
    set("control_socket", CONTROL, V::String, D::ControlSocket)
        .cli(&["--control-socket"])
        .meta("PATH")
        .doc(
            "The unix socket of the control interface. Default \
              `$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`.",
        ),
    set("control_socket_mode", CONTROL, V::PosInt, D::Int(0o600))
        .cli(&["--control-socket-mode"])
        .meta("INT")
        .auto_int()
        .doc("The permission bits of the control socket. Default `0o600` (384)."),
    set("control_socket_disable", CONTROL, V::Bool, D::Bool(false))
        .flag(&["--no-control-socket"])
        .on()
        .doc(
            "Do not create the control socket. ferrocorn has no control interface yet, so it \
              creates no socket either way. Default off.",
        ),
];

/// The index of setting `name` in [`SETTINGS`].
pub fn index_of(name: &str) -> Option<usize> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static INDEX: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            SETTINGS
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name, i))
                .collect()
        })
        .get(name)
        .copied()
}

/// The default as docs show it: the same on every machine.
pub fn default_doc(s: &Setting) -> String {
    match s.default {
        DefaultValue::None => "None".into(),
        DefaultValue::Bool(b) => if b { "True" } else { "False" }.into(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Str(v) => py_repr_str(v),
        DefaultValue::List(l) => py_repr_list(l.iter().copied()),
        DefaultValue::Dict(d) => py_repr_dict(d.iter().map(|(k, v)| (*k, *v))),
        DefaultValue::Hook => "no-op hook".into(),
        DefaultValue::BindPort => {
            "`['127.0.0.1:8000']`, or `['0.0.0.0:$PORT']` when `PORT` is set".into()
        }
        DefaultValue::WebConcurrency => "`1`, or `$WEB_CONCURRENCY` when set".into(),
        DefaultValue::Cwd => "the current directory".into(),
        DefaultValue::Euid => "the effective user id".into(),
        DefaultValue::Egid => "the effective group id".into(),
        DefaultValue::ControlSocket => {
            "`$XDG_RUNTIME_DIR/gunicorn.ctl`, else `~/.gunicorn/gunicorn.ctl`".into()
        }
    }
}

/// What becomes of a value other than the default of a setting not applied yet, as the help
/// (`detail` false) and the docs (`detail` true: why, and what to use instead) say it; `None`
/// when the setting is applied.
pub fn unapplied_note(s: &Setting, detail: bool) -> Option<String> {
    const OTHER: &str = "a value other than the default";
    let (instead, only_with) = match s.support {
        Support::Applied => return None,
        Support::Warned => return Some(format!("{OTHER} is ignored, with a warning.")),
        Support::Refused { instead, only_with } => (instead, only_with),
    };
    let when = only_with
        .map(|other| format!(" when `{other}` is not at its default either"))
        .unwrap_or_default();
    Some(match (detail, only_with) {
        (false, _) => format!("{OTHER} stops the start{when}."),
        (true, None) => format!("{OTHER} stops the start: {instead}."),
        (true, Some(_)) => {
            format!("{OTHER} stops the start{when}: {instead}; otherwise it is ignored, with a warning.")
        }
    })
}

/// Python's `repr()` of a string.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a list of strings.
pub fn py_repr_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let parts: Vec<String> = items.map(py_repr_str).collect();
    format!("[{}]", parts.join(", "))
}

/// Python's `repr()` of a dict of strings.
pub fn py_repr_dict<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let parts: Vec<String> = items
        .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr_str(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The settings reference (docs/settings.md), generated from [`SETTINGS`].
pub fn render_markdown() -> String {
    let mut out = String::new();
    out.push_str("# Settings\n\n");
    out.push_str(
        "<!-- Generated from src/config/table.rs by `python -m ferrocorn._docs`; do not edit. -->\n\n",
    );
    out.push_str(
        "Settings come from, lowest precedence first: defaults, the config file, the \
         `GUNICORN_CMD_ARGS` then `FERROCORN_CMD_ARGS` environment variables, and the command \
         line. Names, flags and defaults are Gunicorn's. Settings marked *not applied yet* are \
         accepted and validated but have no effect in this version. Set to their default (as a \
         config file listing every setting does), they pass silently. Set to anything else, \
         most are ignored and the server logs one warning naming them; those whose neglect \
         would change security, the protocol spoken or what the application can call stop the \
         start instead (exit status 1, and `--check-config` fails), with a line saying what to \
         use instead.\n",
    );
    for section in SECTIONS {
        out.push_str(&format!("\n## {section}\n"));
        for s in SETTINGS.iter().filter(|s| s.section == *section) {
            out.push_str(&format!("\n### `{}`\n\n", s.name));
            if s.flags.is_empty() {
                out.push_str("- Command line: none (config file only)\n");
            } else {
                let flags: Vec<String> = s
                    .flags
                    .iter()
                    .map(|f| match (s.action, s.metavar) {
                        (Action::Value | Action::Append, Some(m)) => format!("`{f} {m}`"),
                        (Action::Value | Action::Append, None) => {
                            format!("`{f} {}`", s.name.to_uppercase())
                        }
                        (Action::OptValue(_), m) => {
                            format!("`{f} [{}]`", m.unwrap_or("VALUE"))
                        }
                        _ => format!("`{f}`"),
                    })
                    .collect();
                out.push_str(&format!("- Command line: {}", flags.join(", ")));
                if s.action == Action::Append {
                    out.push_str(" (repeatable)");
                }
                out.push('\n');
            }
            let literal = matches!(
                s.default,
                DefaultValue::None
                    | DefaultValue::Bool(_)
                    | DefaultValue::Int(_)
                    | DefaultValue::Str(_)
                    | DefaultValue::List(_)
                    | DefaultValue::Dict(_)
            );
            if literal {
                out.push_str(&format!("- Default: `{}`\n", default_doc(s)));
            } else {
                out.push_str(&format!("- Default: {}\n", default_doc(s)));
            }
            if let Some(note) = unapplied_note(s, true) {
                out.push_str(&format!("- *Not applied yet:* {note}\n"));
            }
            out.push('\n');
            out.push_str(s.doc);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_all_gunicorn_settings_once() {
        let gunicorn = SETTINGS.iter().filter(|s| !s.extension).count();
        assert_eq!(gunicorn, 120);
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!(index_of(s.name), Some(i), "duplicate {}", s.name);
            assert!(SECTIONS.contains(&s.section), "{} section", s.name);
            assert!(!s.doc.is_empty(), "{} has no doc", s.name);
            assert!(s.flags.iter().all(|f| f.starts_with('-')));
            assert_eq!(s.flags.is_empty(), s.action == Action::None, "{}", s.name);
        }
    }

    #[test]
    fn refusals_are_complete() {
        for s in SETTINGS {
            if let Support::Refused { instead, only_with } = s.support {
                assert!(
                    instead.contains("; "),
                    "{}: say why, then what instead",
                    s.name
                );
                if let Some(other) = only_with {
                    assert!(index_of(other).is_some(), "{}: {other}", s.name);
                }
            }
        }
    }

    #[test]
    fn markdown_lists_every_setting() {
        let md = render_markdown();
        for s in SETTINGS {
            assert!(md.contains(&format!("### `{}`", s.name)));
        }
        assert!(md.contains("`--limit-request-field_size INT`"));
        for s in SETTINGS.iter().filter(|s| s.extension) {
            assert!(s.doc.contains("Gunicorn has no such setting"), "{}", s.name);
        }
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(py_repr_str("a'b"), "\"a'b\"");
        assert_eq!(py_repr_str("a\\b"), "'a\\\\b'");
        assert_eq!(
            py_repr_list(["127.0.0.1:8000"].into_iter()),
            "['127.0.0.1:8000']"
        );
    }
}
