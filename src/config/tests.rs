//! Tests of merging the sources and of `load` with a real interpreter.

use super::*;

fn init() {
    Python::initialize();
}

fn argv(s: &str) -> Vec<String> {
    std::iter::once("ferrocorn".to_owned())
        .chain(cli::shlex_split(s).expect("test argv"))
        .collect()
}

fn source(s: &str) -> Source {
    match cli::parse(&cli::shlex_split(s).expect("test argv")) {
        Ok(Parsed::Run(src)) => src,
        other => panic!("{s}: {other:?}"),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn idx(name: &str) -> usize {
    table::index_of(name).expect("known setting")
}

#[test]
fn precedence_defaults_file_env_cli() {
    init();
    let mut b = Builder::with_defaults(&no_env).expect("defaults");
    b.app_specific(&source("app:x")).expect("app");
    // Config file values.
    b.set(idx("workers"), Raw::Str("3".into()))
        .expect("file workers");
    b.set(idx("bind"), Raw::Str("unix:/tmp/f.sock".into()))
        .expect("file bind");
    b.set(idx("timeout"), Raw::Int(10)).expect("file timeout");
    // GUNICORN_CMD_ARGS, then FERROCORN_CMD_ARGS, then the command line.
    b.apply(source("-w 4 -t 11 --keep-alive 7 ignored:app"))
        .expect("gunicorn env");
    b.apply(source("-w 5 -t 12")).expect("ferrocorn env");
    b.apply(source("-w 6 app:x")).expect("cli");
    let s = b.finish().expect("finish");
    assert_eq!(s.uint("workers"), 6);
    assert_eq!(s.uint("timeout"), 12);
    assert_eq!(s.uint("keepalive"), 7);
    assert_eq!(s.list("bind"), ["unix:/tmp/f.sock"]);
    assert_eq!(s.uint("backlog"), 2048);
    assert!(s.is_set("workers") && !s.is_set("backlog"));
    assert_eq!(s.app_uri.as_deref(), Some("app:x"));
    assert_eq!(s.proc_name(), "app:x");
    assert!(!s.is_set("default_proc_name"));
}

#[test]
fn append_from_cli_replaces_config_file_list() {
    init();
    let mut b = Builder::with_defaults(&no_env).expect("defaults");
    b.set(idx("bind"), Raw::List(vec!["a:1".into(), "b:2".into()]))
        .expect("file");
    b.apply(source("-b c:3 -b d:4 app:x")).expect("cli");
    b.app_specific(&source("app:x")).expect("app");
    let s = b.finish().expect("finish");
    assert_eq!(s.list("bind"), ["c:3", "d:4"]);
}

#[test]
fn environment_defaults() {
    init();
    let env = |k: &str| match k {
        "PORT" => Some("5000".to_owned()),
        "WEB_CONCURRENCY" => Some("3".to_owned()),
        _ => None,
    };
    let mut b = Builder::with_defaults(&env).expect("defaults");
    b.app_specific(&source("app:x")).expect("app");
    let s = b.finish().expect("finish");
    assert_eq!(s.list("bind"), ["0.0.0.0:5000"]);
    assert_eq!(s.uint("workers"), 3);
    assert!(!s.is_set("bind"));

    let bad = |k: &str| (k == "WEB_CONCURRENCY").then(|| "many".to_owned());
    let e = Builder::with_defaults(&bad)
        .err()
        .expect("bad WEB_CONCURRENCY");
    assert_eq!(e.exit_code, 1);
    assert!(
        e.message.contains("WEB_CONCURRENCY='many'"),
        "{}",
        e.message
    );
}

#[test]
fn invalid_values_name_setting_and_value() {
    init();
    let mut b = Builder::with_defaults(&no_env).expect("defaults");
    let e = b
        .set(idx("workers"), Raw::Str("abc".into()))
        .expect_err("error");
    assert_eq!(
        e.message,
        "Error: invalid value for workers: 'abc' (expected a positive integer)"
    );
    assert_eq!(e.exit_code, 1);
    let e = b.apply(source("-w -2")).expect_err("negative");
    assert_eq!(
        e.message,
        "Error: invalid value for workers: -2 (expected a positive integer)"
    );
    let e = b
        .apply(source("--forwarded-allow-ips 10.0.0.1/8"))
        .expect_err("addr");
    assert!(e
        .message
        .starts_with("Error: invalid value for forwarded_allow_ips"));
}

#[test]
fn missing_app_and_bad_env_entries() {
    init();
    let b = Builder::with_defaults(&no_env).expect("defaults");
    let e = b.finish().err().expect("no app");
    assert_eq!(e.message, "Error: No application module specified.");
    let mut b = Builder::with_defaults(&no_env).expect("defaults");
    b.app_specific(&source("app:x")).expect("app");
    b.apply(source("-e A=1 -e NOVALUE")).expect("cli");
    let e = b.finish().err().expect("raw_env");
    assert!(e.message.contains("raw_env: 'NOVALUE'"));
}

#[test]
fn paste_globals_are_checked_only_with_paste() {
    init();
    let finish = |args: &str| {
        let mut b = Builder::with_defaults(&no_env).expect("defaults");
        b.app_specific(&source("app:x")).expect("app");
        b.apply(source(args)).expect("cli");
        b.finish()
    };
    let e = finish("--paste x.ini --paste-global A=1 --paste-global NOVALUE")
        .err()
        .expect("bad global");
    assert_eq!(
        e.message,
        "Error: invalid value for raw_paste_global_conf: 'NOVALUE' (expected KEY=VALUE)"
    );
    // Only an unescaped `=` separates the key from the value.
    assert!(finish(r"--paste x.ini --paste-global A\\=B").is_err());
    assert!(finish(r"--paste x.ini --paste-global A\\=B=C --paste-global =D").is_ok());
    // Without --paste nothing reads them, as in Gunicorn.
    assert!(finish("--paste-global NOVALUE").is_ok());
}

fn settings_with(args: &str) -> Result<Settings, StartError> {
    init();
    let mut b = Builder::with_defaults(&no_env)?;
    let src = source(args);
    b.app_specific(&src)?;
    b.apply(src)?;
    b.finish()
}

#[test]
fn worker_classes() {
    let s = |a: &str| settings_with(a).map(|s| s.worker_class().to_owned());
    assert_eq!(s("app:x").expect("default"), "sync");
    assert_eq!(s("-k gthread app:x").expect("gthread"), "gthread");
    assert_eq!(s("--threads 4 app:x").expect("threads"), "gthread");
    assert_eq!(
        s("-k gunicorn.workers.sync.SyncWorker --threads 2 app:x").expect("path"),
        "gthread"
    );
    assert_eq!(s("-k egg:gunicorn#gthread app:x").expect("egg"), "gthread");
    assert_eq!(
        s("-k gunicorn.workers.gthread.ThreadWorker app:x").expect("path"),
        "gthread"
    );
    let e = s("-k gevent app:x").expect_err("gevent");
    assert_eq!(e.exit_code, 1);
    assert!(e.message.contains("worker class 'gevent' is not supported"));
    assert!(e.message.contains("use -k gthread"));
    for name in [
        "asgi",
        "egg:gunicorn#asgi",
        "uvicorn.workers.UvicornWorker",
        "uvicorn_worker.UvicornH11Worker",
    ] {
        assert_eq!(s(&format!("-k {name} app:x")).expect(name), "asgi");
    }
    assert_eq!(s("-k asgi --threads 4 app:x").expect("threads"), "asgi");
    let e = s("-k my.Worker app:x").expect_err("custom");
    assert!(e.message.contains("use -k sync, -k gthread or -k asgi"));
}

#[test]
fn request_limit_clamping() {
    let s = settings_with("app:x").expect("defaults");
    assert_eq!(
        s.request_limits(),
        RequestLimits {
            line: 4094,
            fields: 100,
            field_size: 8190
        }
    );
    let s = settings_with(
        "--limit-request-line 0 --limit-request-fields 0 --limit-request-field_size 0 app:x",
    )
    .expect("zeros");
    assert_eq!(
        s.request_limits(),
        RequestLimits {
            line: 1024 * 1024,
            fields: 32768,
            field_size: 8190
        }
    );
    let s = settings_with("--limit-request-line 99999 --limit-request-fields 99999 app:x")
        .expect("large");
    assert_eq!(s.request_limits().line, 8190);
    assert_eq!(s.request_limits().fields, 32768);
}

fn unapplied(args: &str) -> Unapplied {
    let s = settings_with(args).expect(args);
    Python::attach(|py| s.unapplied(py))
}

#[test]
fn unapplied_settings_are_refused_or_warned() {
    let u = unapplied("-w 2 --reload --spew --daemon --statsd-host h:1 app:x");
    assert_eq!(u.warned, ["spew = True"]);
    assert!(u.refused.is_none());
    // Defaults spelled out, in any spelling the validator accepts, are no news.
    let u = unapplied(
        "--http-protocols H1 --protocol http --cert-reqs 0 --http2-max-frame-size 16384 \
         --asgi-loop auto --dirty-workers 0 app:x",
    );
    assert!(u.refused.is_none() && u.warned.is_empty(), "{u:?}");
    // TLS settings are applied (their files are checked when the server starts).
    let u = unapplied("--spew --keyfile k.pem --certfile c.pem --ssl-version 5 app:x");
    assert!(u.refused.is_none());
    assert_eq!(u.warned, ["spew = True"]);
    // Dirty apps are refused only when dirty workers would run them.
    let u = unapplied("--dirty-app m:C app:x");
    assert!(u.refused.is_none());
    assert_eq!(u.warned, ["dirty_apps = ['m:C']"]);
    let u = unapplied("--dirty-app m:C --dirty-workers 2 app:x");
    assert!(u
        .refused
        .is_some_and(|r| r.starts_with("dirty_apps = ['m:C']: dirty workers")));
}

#[test]
fn sendfile_defaults_on() {
    let s = settings_with("app:x").expect("settings");
    assert!(s.bool("sendfile"), "sendfile defaults on");
    let s = settings_with("--no-sendfile app:x").expect("settings");
    assert!(!s.bool("sendfile"));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrocorn-config-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn load_with_file(tag: &str, body: &str, args: &str) -> Result<Loaded, StartError> {
    init();
    let path = temp_dir(tag).join("conf.py");
    std::fs::write(&path, body).expect("write config");
    let argv = argv(&format!("-c {} {args}", path.display()));
    Python::attach(|py| load(py, &argv))
}

#[test]
fn config_file_values_hooks_and_precedence() {
    let body = "\
import os
workers = '3'
threads = 2
bind = 'unix:/tmp/ferrocorn-test.sock'
preload_app = 'true'
secure_scheme_headers = {'X-PROTO': 'https'}
wsgi_app = 'pkg.mod:app'
not_a_setting = object()
def on_starting(server):
    pass
def post_request(worker, req):
    pass
";
    let loaded = load_with_file("ok", body, "-t 9").expect("load");
    let Loaded::Run(s) = loaded else {
        panic!("expected Run")
    };
    assert_eq!(s.uint("workers"), 3);
    assert_eq!(s.uint("timeout"), 9);
    assert_eq!(s.worker_class(), "gthread");
    assert_eq!(s.list("bind"), ["unix:/tmp/ferrocorn-test.sock"]);
    assert!(s.bool("preload_app"));
    assert_eq!(
        s.dict("secure_scheme_headers"),
        [("X-PROTO".to_owned(), "https".to_owned())]
    );
    assert_eq!(s.app_uri.as_deref(), Some("pkg.mod:app"));
    assert!(s.py("on_starting").is_some());
    assert!(s.py("when_ready").is_none());
    // post_request taking two arguments is wrapped to take four.
    Python::attach(|py| {
        let f = s.py("post_request").expect("post_request");
        f.bind(py)
            .call1((1, 2, 3, 4))
            .expect("called with four arguments");
    });
    assert!(s.is_set("workers") && s.is_set("on_starting") && !s.is_set("keepalive"));
}

#[test]
fn config_file_errors() {
    let e = load_with_file("raise", "x = 1\n1 / 0\n", "app:x")
        .err()
        .expect("exception");
    assert_eq!(e.exit_code, 1);
    assert!(
        e.message.starts_with("Error: failed to read config file "),
        "{}",
        e.message
    );
    assert!(e.message.contains("line 2"), "{}", e.message);
    assert!(
        e.message.ends_with("ZeroDivisionError: division by zero"),
        "{}",
        e.message
    );

    let e = load_with_file("syntax", "workers = (\n", "app:x")
        .err()
        .expect("syntax");
    assert!(e.message.contains("SyntaxError"), "{}", e.message);

    let e = load_with_file("bad", "workers = 'abc'\n", "app:x")
        .err()
        .expect("bad value");
    assert_eq!(
        e.message,
        "Error: invalid value for workers: 'abc' (expected a positive integer)"
    );

    let e = load_with_file("arity", "def when_ready():\n    pass\n", "app:x")
        .err()
        .expect("arity");
    assert!(
        e.message.contains("invalid value for when_ready"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("taking 1 arguments, not 0"),
        "{}",
        e.message
    );

    let e = load_with_file("float", "timeout = 2.5\n", "app:x")
        .err()
        .expect("float");
    assert!(
        e.message.contains("invalid value for timeout: 2.5"),
        "{}",
        e.message
    );

    init();
    let argv = argv("-c /no/such/ferrocorn.conf.py app:x");
    let e = Python::attach(|py| load(py, &argv)).err().expect("missing");
    assert_eq!(e.exit_code, 1);
    assert!(e.message.contains("/no/such/ferrocorn.conf.py"));
}

#[test]
fn usage_errors_exit_2() {
    init();
    let e = Python::attach(|py| load(py, &argv("-w abc app:x")))
        .err()
        .expect("usage");
    assert_eq!(e.exit_code, 2);
    assert!(e
        .message
        .starts_with("usage: ferrocorn [OPTIONS] [APP_MODULE]\n"));
}

#[test]
fn print_config_lines() {
    let s = settings_with("-b a:1 app:x").expect("settings");
    let text = Python::attach(|py| print_config(py, &s));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), SETTINGS.len());
    assert!(lines[0].starts_with("access_log_format "));
    assert!(text.contains("\nbind                               = ['a:1']\n"));
    assert!(text.contains("\nworkers                            = 1\n"));
    assert!(text.contains("\nproc_name                          = None\n"));
    assert!(text.contains("\ndefault_proc_name                  = app:x\n"));
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}
