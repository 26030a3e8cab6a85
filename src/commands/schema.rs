//! `klsync schema`: print a published JSON Schema (pretty JSON, trailing newline).

use std::io::Write as _;

use crate::cli::{SchemaArgs, SchemaKind};
use crate::error::{Error, ExitStatus};
use crate::manifest;

/// The text `klsync schema <kind>` prints; also what `schemas/*.json` must contain.
pub fn render(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Manifest => manifest::manifest_schema(),
        SchemaKind::Settings => manifest::settings_schema(),
    };
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Run `klsync schema`.
pub fn run(args: &SchemaArgs) -> Result<ExitStatus, Error> {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(render(args.kind).as_bytes());
    let _ = stdout.flush();
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema files must match what the code generates; set
    /// KLSYNC_UPDATE_SCHEMA=1 to rewrite them.
    #[test]
    fn committed_schemas_are_fresh() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let update = std::env::var_os("KLSYNC_UPDATE_SCHEMA").is_some_and(|v| v == "1");
        for (file, kind) in [
            ("klsync.schema.json", SchemaKind::Manifest),
            ("klsync-settings.schema.json", SchemaKind::Settings),
        ] {
            let path = root.join(file);
            let expected = render(kind);
            if update {
                std::fs::write(&path, &expected).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == expected,
                "{} is stale; run `KLSYNC_UPDATE_SCHEMA=1 cargo test --lib committed_schemas_are_fresh`",
                path.display()
            );
        }
    }
}
