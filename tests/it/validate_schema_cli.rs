//! `klsync schema` prints exactly the committed schema files.

use std::path::Path;
use std::process::Command;

fn schema(kind: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_klsync"))
        .arg("schema")
        .args(kind)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn schema_command_prints_the_committed_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let manifest = std::fs::read_to_string(root.join("klsync.schema.json")).unwrap();
    let settings = std::fs::read_to_string(root.join("klsync-settings.schema.json")).unwrap();
    assert_eq!(schema(&[]), manifest);
    assert_eq!(schema(&["manifest"]), manifest);
    assert_eq!(schema(&["settings"]), settings);
    assert!(manifest.ends_with("}\n"));
    let parsed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert!(parsed.pointer("/$defs/SegmentDefinition").is_some());
}
