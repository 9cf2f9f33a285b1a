//! eric-sse's own Python client: python3 and eric-sse in a throwaway virtualenv under
//! the target directory, made once. Shared by the socket crate's tests and the root's.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The eric-sse release whose client (and server) the tests run.
pub const ERIC_SSE: &str = "eric-sse==2.1.1.2";

/// The virtualenv's python with eric-sse installed; `None`, with the reason printed,
/// only where python3 is absent.
pub fn venv() -> Option<PathBuf> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: python3 is not installed, so eric-sse's Python client cannot run");
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-eric-sse");
    let python = dir.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import eric_sse.clients"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                ERIC_SSE,
            ])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install {ERIC_SSE} failed");
    }
    Some(python)
}
