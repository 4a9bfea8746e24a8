//! Refuses a platform qiao does not run on, records what `qiao --version` says about the
//! build (the git revision of the sources and the Python the extension is built for), and
//! writes the static files' table of media types.

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

    media_types();

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

/// `$OUT_DIR/media_types.rs`, which `static_files::naming` includes: every extension
/// mime_guess knows, lower-case and sorted, with the essence of the first media type it
/// names (as `mime_guess::from_ext(ext).first()` gives it). Written as one string and a
/// table of offsets into it, where mime_guess's own table is some 3,000 pointers: each
/// would be a relocation, which the loader writes at every start into a page of the
/// engine that each process then holds a copy of.
fn media_types() {
    let mut extensions: Vec<String> = mime_guess::get_extensions("*", "*")
        .expect("mime_guess lists its extensions (its rev-mappings feature)")
        .iter()
        .map(|e| e.to_lowercase())
        .collect();
    extensions.sort();
    extensions.dedup();
    let mut names = String::new();
    let mut types = std::collections::HashMap::new();
    let mut rows = String::new();
    for ext in &extensions {
        let mime = mime_guess::from_ext(ext)
            .first()
            .expect("every extension listed has a media type");
        // The engine adds `charset=utf-8` to text types only when none is given, and
        // mime_guess gives none: that it never does is checked here, not at each request.
        assert!(
            mime.params().next().is_none(),
            "{ext}: {mime} has parameters"
        );
        let essence = mime.essence_str();
        let ext_at = push_name(&mut names, ext);
        let type_at = *types
            .entry(essence.to_owned())
            .or_insert_with(|| push_name(&mut names, essence));
        rows.push_str(&format!(
            "({ext_at}, {}, {type_at}, {}),\n",
            ext.len(),
            essence.len()
        ));
    }
    assert!(
        u16::try_from(names.len()).is_ok(),
        "the names outgrew u16 offsets"
    );
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("media_types.rs");
    let code = format!(
        "/// The extensions and media types, one after the other.\n\
         const NAMES: &str = {names:?};\n\
         /// Per extension, sorted: its offset and length in `NAMES`, and its type's.\n\
         const EXTENSIONS: [(u16, u8, u16, u8); {}] = [\n{rows}];\n",
        extensions.len()
    );
    std::fs::write(out, code).expect("OUT_DIR is writable");
}

/// Appends `name` to `names`; where it starts.
fn push_name(names: &mut String, name: &str) -> usize {
    assert!(name.len() < 256, "{name:?}");
    let at = names.len();
    names.push_str(name);
    at
}
