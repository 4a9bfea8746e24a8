//! Refuses a platform qiao does not run on, and records what `qiao --version` says about
//! the build: the git revision of the sources and the Python the extension is built for.

use std::path::Path;
use std::process::Command;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_FAMILY").as_deref() != Ok("unix") {
        let target = std::env::var("TARGET").unwrap_or_default();
        eprintln!(
            "error: qiao does not support {target}: it runs on Linux and macOS. On \
             Windows, run it under WSL or in a Linux container."
        );
        std::process::exit(1);
    }

    println!("cargo:rerun-if-env-changed=QIAO_GIT_REVISION");
    let revision = std::env::var("QIAO_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=QIAO_GIT_REVISION={revision}");

    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=QIAO_TARGET={target}");

    // One wheel per Python version (the engine uses CPython's internals, not the limited
    // API), so the version is the one it was built against.
    let python = pyo3_build_config::get();
    let version = python.version();
    println!(
        "cargo:rustc-env=QIAO_BUILT_FOR={} {}.{}",
        python.implementation(),
        version.major,
        version.minor
    );
}

/// The short hash of the commit the sources are at, when they are a git checkout (not an
/// sdist, which has no `.git`, even if it is unpacked inside some other repository).
fn git_revision() -> Option<String> {
    let here = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let top = git(&here, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&here).canonicalize().ok()? {
        return None;
    }
    // A new commit or checkout changes HEAD, or the branch it names (loose or packed).
    for file in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&here, &["rev-parse", "--git-path", file]) {
            println!(
                "cargo:rerun-if-changed={}",
                Path::new(&here).join(path).display()
            );
        }
    }
    if let Some(branch) = git(&here, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&here, &["rev-parse", "--git-path", &branch]) {
            println!(
                "cargo:rerun-if-changed={}",
                Path::new(&here).join(path).display()
            );
        }
    }
    git(&here, &["rev-parse", "--short=10", "HEAD"])
}

/// `git ARGS` run in `dir`: its output's first line, or `None` if git is missing or fails.
fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.lines().next()?.trim().to_owned()).filter(|s| !s.is_empty())
}
