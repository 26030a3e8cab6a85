//! `klsync init` (issue 13): a fresh directory outside this repository becomes a project that
//! validates, whose editor schemas resolve from the files themselves, and that plans against
//! the emulator.

use crate::support::project::{klsync, run};
use klsync::emulator::{self, EmulatorConfig, RateLimitMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_validate_then_plan_from_a_fresh_directory() {
    let outside = tempfile::tempdir().unwrap();
    let project = outside.path().join("marketing").join("klaviyo");

    let init = run(klsync()
        .current_dir(outside.path())
        .args(["init", "marketing/klaviyo"]));
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert!(
        init.stdout.contains("klsync validate -C marketing/klaviyo"),
        "{}",
        init.stdout
    );
    for file in [
        "klsync.yaml",
        "lists.yaml",
        "klsync.schema.json",
        "klsync-settings.schema.json",
    ] {
        assert!(project.join(file).is_file(), "{file} written");
    }
    assert_eq!(
        std::fs::read_to_string(project.join(".gitignore")).unwrap(),
        "# klsync's local state (klsync init)\n.klsync/\n"
    );
    // Every modeline names a schema file that exists relative to the file that names it.
    for file in ["klsync.yaml", "lists.yaml"] {
        let text = std::fs::read_to_string(project.join(file)).unwrap();
        let schema = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{file} starts with a modeline:\n{text}"));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(project.join(schema)).unwrap()).unwrap();
        assert!(schema.get("$schema").is_some(), "{file}: a JSON Schema");
    }

    let validate = run(klsync().current_dir(&project).arg("validate"));
    assert_eq!(validate.code, 0, "{}{}", validate.stdout, validate.stderr);

    let emulator = emulator::start(EmulatorConfig {
        rate_limits: RateLimitMode::Off,
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the emulator");
    let plan = run(klsync()
        .current_dir(&project)
        .args(["plan", "--detailed-exitcode"])
        .env("KLAVIYO_API_KEY", "pk_emulator")
        .env("KLAVIYO_BASE_URL", &emulator.base_url));
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("Newsletter"), "{}", plan.stdout);
    // The default state lives under .klsync/, which init had git ignore.
    assert!(project.join(".klsync").is_dir());
}

#[test]
fn init_refuses_an_existing_project_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("klsync.yaml"), "version: 1\n").unwrap();
    let init = run(klsync().arg("init").arg(dir.path()));
    assert_eq!(init.code, 1, "{}", init.stderr);
    assert!(
        init.stderr.contains("klsync.yaml already exists"),
        "{}",
        init.stderr
    );
    assert!(
        init.stderr.contains("nothing was written"),
        "{}",
        init.stderr
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["klsync.yaml"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("klsync.yaml")).unwrap(),
        "version: 1\n"
    );
}
