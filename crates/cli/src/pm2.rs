//! `baton import pm2 FILE`: a pm2 ecosystem file (`ecosystem.config.js` or
//! `.cjs`, evaluated with node; `app.json`; `.yaml`) becomes baton.toml
//! files: one for one app, or a server file and one folder per app for
//! several. Every pm2 field Baton cannot carry over is named, with why.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The files to write, and what was not carried over.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    /// Path (relative to the output folder) and contents.
    pub files: Vec<(PathBuf, String)>,
    /// `app: field: why`, one per field left behind.
    pub notes: Vec<String>,
}

/// What a pm2 file holds.
#[derive(Debug)]
pub(crate) struct Pm2File {
    /// Its apps, as JSON values.
    pub apps: Vec<Value>,
    /// It has a `deploy` section.
    pub deploy: bool,
}

/// Reads a pm2 file.
///
/// # Errors
/// The file does not load, or has no apps.
pub(crate) fn read(file: &Path) -> Result<Pm2File, String> {
    let name = file.to_string_lossy();
    let value: Value = if name.ends_with(".js") || name.ends_with(".cjs") || name.ends_with(".mjs")
    {
        evaluate(file)?
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{name}: {e}"))?;
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            serde_norway::from_str(&text).map_err(|e| format!("{name}: {e}"))?
        } else {
            serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?
        }
    };
    let deploy = value.get("deploy").is_some();
    // `{ apps: [...] }`, a list of apps, or one app (pm2's app.json).
    let apps = match value {
        Value::Object(mut o) if o.contains_key("apps") => o.remove("apps").unwrap_or_default(),
        Value::Object(o) => Value::Array(vec![Value::Object(o)]),
        other => other,
    };
    let apps = match apps {
        Value::Array(apps) => apps,
        app @ Value::Object(_) => vec![app],
        _ => Vec::new(),
    };
    if apps.is_empty() {
        return Err(format!("{name}: no apps in it"));
    }
    Ok(Pm2File { apps, deploy })
}

/// Runs an ecosystem file through node, as pm2 does, and reads what it
/// exports.
fn evaluate(file: &Path) -> Result<Value, String> {
    let path = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let script = "const m = require(process.argv[1]); \
                  Promise.resolve(m && m.default ? m.default : m).then((c) => process.stdout.write(JSON.stringify(c)))";
    let out = Command::new("node")
        .args(["-e", script])
        .arg(&path)
        .current_dir(path.parent().unwrap_or(Path::new(".")))
        .output()
        .map_err(|e| {
            format!(
                "running node to read {}: {e} (install Node.js)",
                file.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "node could not load {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{}: {e}", file.display()))
}

/// pm2 fields that have no counterpart, and why.
const LEFT_BEHIND: &[(&str, &str)] = &[
    ("watch", "Baton does not restart on file changes; deploy a release (`baton deploy`) or run `baton reload`"),
    ("ignore_watch", "no file watching (see watch)"),
    ("watch_options", "no file watching (see watch)"),
    ("merge_logs", "Baton always writes every instance's lines to one log, each prefixed"),
    ("log_date_format", "Baton stamps each line with an RFC 3339 time"),
    ("time", "Baton stamps each line with an RFC 3339 time"),
    ("pid_file", "Baton keeps pids itself: `baton status --json`"),
    ("combine_logs", "Baton always writes one log"),
    ("vizion", "no version metadata from git: releases have ids and sources (`baton releases`)"),
    ("post_update", "use [releases] build"),
    ("instance_var", "each instance gets BATON_INSTANCE (web#1, web#2, …)"),
    ("increment_var", "each instance gets its own $PORT"),
    ("exp_backoff_restart_delay", "Baton backs off restarts on its own"),
    ("restart_delay", "Baton backs off restarts on its own"),
    ("force", "not needed"),
    ("source_map_support", "pass --enable-source-maps in node_args"),
    ("shutdown_with_message", "Baton stops with stop_signal; drain_notice = \"ipc\" sends a message before"),
    ("treekill", "Baton always stops the whole process group"),
    ("namespace", "group apps in a server file instead"),
];

/// Converts `apps` (the pm2 file `source`'s) with `env_<env>` applied.
///
/// # Errors
/// An app without a name or a script.
pub(crate) fn convert(apps: &[Value], source: &str, env: Option<&str>) -> Result<Imported, String> {
    let mut imported = Imported::default();
    let several = apps.len() > 1;
    let mut entries = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let name = app["name"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| script_stem(app))
            .ok_or_else(|| format!("app {} in {source} has neither name nor script", i + 1))?;
        let folder = if several {
            PathBuf::from(&name)
        } else {
            PathBuf::new()
        };
        let text = app_file(
            app,
            &name,
            source,
            env,
            several,
            i == 0,
            &mut imported.notes,
        )?;
        imported.files.push((folder.join("baton.toml"), text));
        entries.push(format!("{:?}", format!("{name}/baton.toml")));
    }
    if several {
        let server = format!(
            "# A server of {} apps, imported from {source} by `baton import pm2`.\n\
             # `baton up` here runs them all behind one listener, routed by host.\n\
             [server]\napps = [{}]\n\n[proxy]\nlisten = \"127.0.0.1:8080\"\n",
            apps.len(),
            entries.join(", ")
        );
        imported
            .files
            .insert(0, (PathBuf::from("baton.toml"), server));
    }
    Ok(imported)
}

/// The notes for pm2's `deploy` section (a key beside `apps`).
pub(crate) fn deploy_note() -> String {
    "deploy: Baton ships releases itself (`baton deploy DIR|TARBALL|--git REF`, or the inbox); \
     pm2's deploy section is not carried over"
        .into()
}

fn script_stem(app: &Value) -> Option<String> {
    let script = app["script"].as_str()?;
    let file = Path::new(script)
        .file_stem()?
        .to_string_lossy()
        .into_owned();
    Some(file)
}

/// One app's baton.toml.
fn app_file(
    app: &Value,
    name: &str,
    source: &str,
    env: Option<&str>,
    several: bool,
    first: bool,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let Some(o) = app.as_object() else {
        return Err(format!("{name}: an app must be an object"));
    };
    let mut note = |field: &str, why: &str| notes.push(format!("{name}: {field}: {why}"));
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Imported from {source} (pm2 app {name:?}) by `baton import pm2`."
    );
    let _ = writeln!(t, "[app]\nname = {}", quote(name));
    if several {
        let _ = writeln!(
            t,
            "hosts = [{}]  # the names this app serves: set them",
            quote(&format!("{name}.example.com"))
        );
        if first {
            let _ = writeln!(t, "default = true  # answers hosts no other app claims");
        }
    } else {
        let _ = writeln!(
            t,
            "\n[proxy]\nlisten = \"127.0.0.1:8080\"  # the public address (pm2 had the app listen itself)"
        );
    }
    let _ = writeln!(t, "\n[web]\ncommand = {}", quote(&command(o, &mut note)?));
    let _ = writeln!(
        t,
        "# Each instance must listen on $PORT: Baton owns the public port and balances."
    );
    if let Some(instances) = instances(o) {
        let _ = writeln!(t, "instances = {instances}");
    }
    if o.get("exec_mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains("cluster"))
    {
        note(
            "exec_mode",
            "cluster mode shared one port through Node's cluster module; each Baton instance is its own process on $PORT",
        );
    }
    if let Some(cwd) = o.get("cwd").and_then(Value::as_str) {
        let _ = writeln!(t, "cwd = {}", quote(cwd));
    }
    let vars = environment(o, env, &mut note);
    if !vars.is_empty() {
        let pairs: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("{} = {}", bare_or_quoted(k), quote(v)))
            .collect();
        let _ = writeln!(t, "env = {{ {} }}", pairs.join(", "));
    }
    for (field, key) in [
        ("listen_timeout", "start_timeout"),
        ("kill_timeout", "kill_timeout"),
        ("min_uptime", "min_uptime"),
    ] {
        match o.get(field).map(millis) {
            Some(Some(d)) => {
                let _ = writeln!(t, "{key} = {}  # pm2 {field}", quote(&human(d)));
            }
            Some(None) => note(
                field,
                "not a duration (milliseconds, or a string such as \"60s\")",
            ),
            None => {}
        }
    }
    if let Some(n) = o.get("max_restarts").and_then(Value::as_u64) {
        let _ = writeln!(t, "max_restarts = {n}");
    }
    if let Some(size) = o.get("max_memory_restart").and_then(memory) {
        let _ = writeln!(t, "max_memory = {}  # pm2 max_memory_restart", quote(&size));
    }
    if let Some(cron) = o.get("cron_restart").and_then(Value::as_str) {
        let _ = writeln!(t, "cron_restart = {}", quote(cron));
    }
    if let Some(auto) = o.get("autorestart").and_then(Value::as_bool) {
        let _ = writeln!(t, "autorestart = {auto}");
    }
    let wait_ready = o.get("wait_ready").and_then(Value::as_bool) == Some(true);
    let _ = writeln!(t, "\n[web.readiness]");
    if wait_ready {
        let _ = writeln!(
            t,
            "kind = \"node-ipc\"  # pm2 wait_ready: process.send('ready')"
        );
    } else {
        let _ = writeln!(
            t,
            "kind = \"tcp\"  # ready once $PORT accepts; \"http\" with a path checks more"
        );
    }
    let log = ["log", "out_file", "log_file"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str));
    if let Some(log) = log {
        let _ = writeln!(
            t,
            "\n[daemon]\napp_log = {}  # every instance's stdout and stderr",
            quote(log)
        );
    }
    for field in ["error_file", "out_file", "log_file", "log"] {
        if o.contains_key(field) && o.get(field).and_then(Value::as_str) != log {
            note(
                field,
                "Baton writes stdout and stderr to one log (app_log), each line marked",
            );
        }
    }
    for (field, why) in LEFT_BEHIND {
        if o.contains_key(*field) {
            note(field, why);
        }
    }
    Ok(t)
}

/// The command: the interpreter (node for JavaScript), its arguments, the
/// script and its arguments.
fn command(
    o: &serde_json::Map<String, Value>,
    note: &mut impl FnMut(&str, &str),
) -> Result<String, String> {
    let script = o
        .get("script")
        .and_then(Value::as_str)
        .ok_or("an app needs a script")?;
    let args = words(o.get("args"));
    let interpreter = o.get("interpreter").and_then(Value::as_str);
    let interpreter_args = words(o.get("interpreter_args").or_else(|| o.get("node_args")));
    let javascript = [".js", ".cjs", ".mjs"].iter().any(|e| script.ends_with(e));
    let runner = match interpreter {
        Some("none") => None,
        Some(i) => Some(i.to_string()),
        None if javascript => Some("node".to_string()),
        None if script.ends_with(".ts") => {
            note(
                "script",
                "a TypeScript script: run with ts-node, or build it first",
            );
            Some("npx ts-node".to_string())
        }
        None => None,
    };
    let mut parts = Vec::new();
    if let Some(runner) = runner {
        parts.push(runner);
        parts.extend(interpreter_args);
    }
    parts.push(shell_word(script));
    parts.extend(args);
    Ok(parts.join(" "))
}

/// `args` as pm2 takes them: a string (split on spaces) or a list.
fn words(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(shell_word).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(shell_word).collect(),
        _ => Vec::new(),
    }
}

/// A word for `sh -c`, quoted when it needs to be.
fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// `instances`: a count, or "max" (pm2's 0, -1 and "max" use the CPUs).
fn instances(o: &serde_json::Map<String, Value>) -> Option<String> {
    match o.get("instances")? {
        Value::Number(n) => match n.as_i64()? {
            n if n > 0 => Some(n.to_string()),
            _ => Some("\"max\"".into()),
        },
        Value::String(s) if s == "max" => Some("\"max\"".into()),
        Value::String(s) => s.parse::<u32>().ok().map(|n| n.to_string()),
        _ => None,
    }
}

/// `env` with `env_<name>` over it, as `pm2 start --env <name>`.
fn environment(
    o: &serde_json::Map<String, Value>,
    env: Option<&str>,
    note: &mut impl FnMut(&str, &str),
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut apply = |table: &Value| {
        if let Some(t) = table.as_object() {
            for (k, v) in t {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                vars.retain(|(name, _)| name != k);
                vars.push((k.clone(), value));
            }
        }
    };
    if let Some(base) = o.get("env") {
        apply(base);
    }
    for key in o.keys().filter(|k| k.starts_with("env_")) {
        if env.is_some_and(|e| key[4..] == *e) {
            apply(&o[key]);
        } else {
            note(
                key,
                &format!(
                    "not applied (`baton import pm2 --env {}` applies it)",
                    &key[4..]
                ),
            );
        }
    }
    vars
}

/// A pm2 duration: milliseconds as a number, or a string such as "60s".
fn millis(value: &Value) -> Option<Duration> {
    match value {
        Value::Number(n) => n.as_u64().map(Duration::from_millis),
        Value::String(s) => s
            .parse::<u64>()
            .map(Duration::from_millis)
            .ok()
            .or_else(|| humantime::parse_duration(s).ok()),
        _ => None,
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `max_memory_restart`: "1G", "300M", "200K" or bytes.
fn memory(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|b| b.to_string()),
        Value::String(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn bare_or_quoted(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        quote(key)
    }
}
