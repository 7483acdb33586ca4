//! Puts the commit into `--version`: `ACQUIRE_DIGEST_COMMIT` if set (a Docker build has no
//! .git), else `git rev-parse --short HEAD`, else the version alone.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=ACQUIRE_DIGEST_COMMIT");
    let commit = std::env::var("ACQUIRE_DIGEST_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    // Rebuilt when HEAD moves: a commit, a checkout, a reset all write HEAD's reflog.
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let id = commit.as_deref().unwrap_or("unknown");
    println!("cargo:rustc-env=ACQUIRE_DIGEST_BUILD_COMMIT={id}");
    let full = match commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=ACQUIRE_DIGEST_VERSION={full}");
}
