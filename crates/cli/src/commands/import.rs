//! `baton import pm2`.

use std::path::{Path, PathBuf};

use crate::pm2;
use crate::Failure;

/// `baton import pm2`: writes the files (none if any exists already), then
/// names every field left behind.
pub(crate) fn import_pm2(
    file: &Path,
    env: Option<&str>,
    out: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let read = pm2::read(file).map_err(Failure::usage)?;
    let source = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut imported = pm2::convert(&read.apps, &source, env).map_err(Failure::usage)?;
    if read.deploy {
        imported.notes.push(pm2::deploy_note());
    }
    let out = out.map_or_else(
        || file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        Path::to_path_buf,
    );
    let paths: Vec<PathBuf> = imported.files.iter().map(|(p, _)| out.join(p)).collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(Failure::usage(format!(
            "{} exists; baton import does not overwrite it (--out DIR writes elsewhere)",
            existing.display()
        )));
    }
    for (path, (_, text)) in paths.iter().zip(&imported.files) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::failed(format!("creating {}: {e}", dir.display())))?;
        }
        std::fs::write(path, text)
            .map_err(|e| Failure::failed(format!("writing {}: {e}", path.display())))?;
    }
    if json {
        let report = serde_json::json!({
            "files": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "left_behind": imported.notes,
        });
        println!("{report:#}");
        return Ok(());
    }
    for path in &paths {
        println!("wrote {}", path.display());
    }
    if !imported.notes.is_empty() {
        println!("not carried over:");
        for note in &imported.notes {
            println!("  {note}");
        }
    }
    println!(
        "check with `baton check -c {}`, then `baton up`",
        paths[0].display()
    );
    Ok(())
}
