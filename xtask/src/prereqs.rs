//! System prerequisites: what the workspace needs outside cargo, how to check it, and how
//! to install it on Debian/Ubuntu.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One system prerequisite.
struct Prereq {
    /// What it is for, for messages.
    what: &'static str,
    /// The Debian package that provides it.
    package: &'static str,
    /// How to tell whether it is present.
    check: fn() -> bool,
}

const PREREQS: &[Prereq] = &[
    Prereq { what: "pkg-config (finds C libraries)", package: "pkg-config", check: has_pkg_config },
    Prereq {
        what: "HDF5 C library and headers (results files)",
        package: "libhdf5-dev",
        check: || pkg_config_exists("hdf5"),
    },
    Prereq {
        what: "fontconfig headers (plotters text)",
        package: "libfontconfig1-dev",
        check: || pkg_config_exists("fontconfig"),
    },
    Prereq {
        what: "FreeType headers (plotters text)",
        package: "libfreetype-dev",
        check: || pkg_config_exists("freetype2"),
    },
    Prereq {
        what: "a TrueType font (figure labels)",
        package: "fonts-dejavu-core",
        check: || Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists(),
    },
];

/// Whether `program` runs (`program --version` succeeds).
pub fn has_program(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn has_pkg_config() -> bool {
    Command::new("pkg-config").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn pkg_config_exists(name: &str) -> bool {
    Command::new("pkg-config").args(["--exists", name]).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_apt() -> bool {
    Path::new("/usr/bin/apt-get").exists()
}

/// Checks every prerequisite; installs the missing ones with apt-get when running as root on
/// a Debian-like system (unless `check_only`), otherwise fails with the exact command to run.
pub fn ensure(check_only: bool) -> Result<()> {
    let missing: Vec<&Prereq> = PREREQS.iter().filter(|p| !(p.check)()).collect();
    if missing.is_empty() {
        eprintln!("xtask: system prerequisites present");
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
    let command = format!("apt-get update && apt-get install -y {}", packages.join(" "));
    for p in &missing {
        eprintln!("xtask: missing {} (Debian package {})", p.what, p.package);
    }
    if check_only || !has_apt() || !is_root() {
        let sudo = if is_root() { "" } else { "sudo " };
        bail!(
            "missing system prerequisites: {}. Install them with:\n    {sudo}{command}\n\
             (other systems: the HDF5 1.10+ C library, pkg-config, fontconfig and FreeType \
             development files, and the DejaVu fonts)",
            packages.join(", ")
        );
    }
    eprintln!("xtask: installing {}", packages.join(" "));
    let status = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not run apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed ({status}); run by hand: {command}");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not run apt-get install")?;
    if !status.success() {
        bail!("apt-get install failed ({status}); run by hand: {command}");
    }
    let still: Vec<&str> = PREREQS.iter().filter(|p| !(p.check)()).map(|p| p.package).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}
