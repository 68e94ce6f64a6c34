//! `baton init`: a commented baton.toml for the app in a folder, as `npm
//! init` writes a package.json. A Node app is read from its package.json
//! (the `start` script or `main`, the lock file for its build, a health
//! route found in its code); anything else gets a generic template. An
//! existing baton.toml is never overwritten.

use std::path::Path;

/// What was found in the folder.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Detected {
    /// The app's name (package.json `name`, else the folder's).
    pub name: String,
    /// The command that starts one instance.
    pub command: String,
    /// The build run in each new release folder.
    pub build: Option<String>,
    /// A route that answers when the app is up.
    pub health: Option<String>,
    /// Whether it is a Node app (package.json).
    pub node: bool,
}

/// Reads the folder `dir`.
pub(crate) fn detect(dir: &Path) -> Detected {
    let folder = (dir.canonicalize().ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".into());
    let package = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let Some(package) = package else {
        return Detected {
            name: folder,
            command: "./start.sh".into(),
            ..Detected::default()
        };
    };
    let name = (package["name"].as_str())
        .map(|n| n.rsplit('/').next().unwrap_or(n).to_owned())
        .unwrap_or(folder);
    let main = package["main"].as_str().unwrap_or("index.js").to_owned();
    let command = match package["scripts"]["start"].as_str() {
        // `npm start` adds a process between Baton and the app, which
        // delays signals; the script itself is what it runs.
        Some(start) if start.starts_with("node ") => start.to_owned(),
        Some(_) => "npm start".to_owned(),
        None => format!("node {main}"),
    };
    let build = if dir.join("package-lock.json").exists() {
        Some("npm ci --omit=dev")
    } else if dir.join("yarn.lock").exists() {
        Some("yarn install --frozen-lockfile --production")
    } else if dir.join("pnpm-lock.yaml").exists() {
        Some("pnpm install --frozen-lockfile --prod")
    } else {
        None
    };
    Detected {
        name,
        command,
        build: build.map(str::to_owned),
        health: health_route(dir, &main),
        node: true,
    }
}

/// `/health`, `/healthz` or `/ping`, when the entry file (or a file in
/// `app/` or `src/`) names it in quotes, as a route does.
fn health_route(dir: &Path, main: &str) -> Option<String> {
    let mut files = vec![dir.join(main)];
    for sub in ["app", "src", "routes", "app/router.js"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            files.extend(entries.flatten().map(|e| e.path()));
        } else {
            files.push(dir.join(sub));
        }
    }
    let texts: Vec<String> = (files.iter())
        .filter(|f| {
            f.extension()
                .is_some_and(|e| e == "js" || e == "ts" || e == "mjs")
        })
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    ["/health", "/healthz", "/ping"]
        .into_iter()
        .find(|route| {
            texts.iter().any(|t| {
                t.contains(&format!("'{route}'"))
                    || t.contains(&format!("\"{route}\""))
                    || t.contains(&format!("`{route}`"))
            })
        })
        .map(str::to_owned)
}

/// The commented baton.toml for `found`.
pub(crate) fn render(found: &Detected) -> String {
    let mut out = String::new();
    out.push_str("# baton.toml, written by `baton init`; `baton check` validates it and\n");
    out.push_str("# README.md's configuration reference lists every field.\n\n");
    out.push_str(&format!("[app]\nname = {:?}\n", found.name));
    out.push_str("# hosts = [\"example.com\"]         # the names served (and certified with [tls] acme_email)\n\n");
    out.push_str("[proxy]\nlisten = [\"127.0.0.1:8080\"]      # the public address; the app listens on $PORT\n\n");
    out.push_str(&format!("[web]\ncommand = {:?}", found.command));
    if !found.node {
        out.push_str("           # must listen on $PORT");
    }
    out.push_str("\ninstances = 2                      # or \"max\": one per CPU (pm2's -i max)\n");
    if found.node {
        out.push_str("env = { NODE_ENV = \"production\" }\n");
    }
    out.push_str("\n[web.readiness]\n");
    match &found.health {
        Some(route) => out.push_str(&format!(
            "kind = \"http\"                      # ready once this route answers 2xx\npath = {route:?}\n"
        )),
        None => out.push_str(
            "kind = \"tcp\"                       # ready once $PORT accepts; an http health route is better:\n# kind = \"http\"\n# path = \"/health\"\n",
        ),
    }
    out.push_str("\n[releases]\n");
    match &found.build {
        Some(build) => out.push_str(&format!(
            "build = {build:?}          # run in each new release folder before it starts\n"
        )),
        None => out.push_str("# build = \"...\"                    # run in each new release folder before it starts\n"),
    }
    out.push_str("keep = 5                           # releases kept for `baton rollback`\n");
    out
}

/// `baton init [DIR]`: a baton.toml for what the folder holds, never
/// over an existing one.
pub(crate) fn run(dir: Option<&std::path::Path>) -> Result<(), crate::Failure> {
    use crate::Failure;
    let dir = dir.map_or_else(
        || std::path::PathBuf::from("."),
        std::path::Path::to_path_buf,
    );
    let file = dir.join("baton.toml");
    if file.exists() {
        return Err(Failure::usage(format!(
            "{} exists; baton init does not overwrite it",
            file.display()
        )));
    }
    let found = detect(&dir);
    std::fs::write(&file, render(&found))
        .map_err(|e| Failure::failed(format!("writing {}: {e}", file.display())))?;
    println!(
        "wrote {} ({}: command {:?}, readiness {}, build {}); check it with `baton check`",
        file.display(),
        if found.node {
            "a Node app"
        } else {
            "a generic template"
        },
        found.command,
        found.health.as_deref().unwrap_or("tcp"),
        found.build.as_deref().unwrap_or("none"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_app_is_read_from_its_package_json() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "@acme/shop", "main": "server.js", "scripts": {"start": "node server.js --port $PORT"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        std::fs::write(dir.path().join("server.js"), "app.get('/healthz', ok);").unwrap();
        let found = detect(dir.path());
        assert_eq!(
            found,
            Detected {
                name: "shop".into(),
                command: "node server.js --port $PORT".into(),
                build: Some("npm ci --omit=dev".into()),
                health: Some("/healthz".into()),
                node: true,
            }
        );
        let text = render(&found);
        let config = crate::config::parse(&text, Path::new("baton.toml")).expect("valid");
        assert_eq!(config.web.readiness.path, "/healthz");
        assert_eq!(config.releases.build.as_deref(), Some("npm ci --omit=dev"));
    }

    #[test]
    fn other_apps_get_the_generic_template() {
        let dir = tempfile::tempdir().unwrap();
        let found = detect(dir.path());
        assert!(!found.node);
        assert_eq!(found.command, "./start.sh");
        let config = crate::config::parse(&render(&found), Path::new("baton.toml")).expect("valid");
        assert_eq!(config.web.readiness.kind, crate::config::ReadinessKind::Tcp);
    }

    #[test]
    fn an_npm_script_that_is_not_node_runs_through_npm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "egg", "scripts": {"start": "egg-scripts start --title=egg"}}"#,
        )
        .unwrap();
        let found = detect(dir.path());
        assert_eq!(found.command, "npm start");
        assert_eq!(found.build, None);
        assert_eq!(found.health, None);
    }
}
