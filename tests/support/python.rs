//! The Python venv of the examples (`scripts/setup-test-deps.sh` creates it), with Bolt for
//! Python and `slack_sdk`: the real Slack SDK as a client in tests.

use std::path::PathBuf;
use std::process::Command;

/// The venv's python, or a failure that says how to create it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SLACK_GATEWAY_EXAMPLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/example-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python venv for the example at {}: run `bash scripts/setup-test-deps.sh` \
         (needs python3 and PyPI)",
        venv.display()
    );
    let imports = Command::new(&python)
        .args(["-c", "import slack_bolt, slack_sdk"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        imports.status.success(),
        "the venv at {} lacks slack_bolt: run `bash scripts/setup-test-deps.sh`\n{}",
        venv.display(),
        String::from_utf8_lossy(&imports.stderr)
    );
    python
}
