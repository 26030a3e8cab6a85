//! Who runs klsync and on which commit, for the audit record.
//!
//! CI systems name the person behind a run in their own variables; outside CI it is the local
//! user. The git commit comes from CI variables or straight from `.git` (no `git` process: it may
//! not be installed in the CI image, and reading two files is enough).

use std::fs;
use std::path::{Path, PathBuf};

/// CI variables naming the person who triggered the run, with the CI system's name, most specific
/// first.
const CI_ACTOR_VARS: &[(&str, &str)] = &[
    ("GITHUB_ACTOR", "GitHub Actions"),
    ("GITLAB_USER_LOGIN", "GitLab CI"),
    ("BUILDKITE_BUILD_CREATOR_EMAIL", "Buildkite"),
    ("BUILDKITE_BUILD_CREATOR", "Buildkite"),
    ("CIRCLE_USERNAME", "CircleCI"),
    ("BUILD_REQUESTEDFOREMAIL", "Azure Pipelines"),
    ("BUILD_USER_ID", "Jenkins"),
    ("BITBUCKET_STEP_TRIGGERER_UUID", "Bitbucket Pipelines"),
];

/// CI variables holding the commit being built.
const CI_COMMIT_VARS: &[&str] = &[
    "GITHUB_SHA",
    "CI_COMMIT_SHA",
    "BUILDKITE_COMMIT",
    "CIRCLE_SHA1",
    "BUILD_SOURCEVERSION",
    "BITBUCKET_COMMIT",
    "GIT_COMMIT",
];

/// Who is running klsync, from the environment: `KLSYNC_ACTOR` if set, else the CI user (e.g.
/// `alice (GitHub Actions)`), else `$USER@hostname`.
pub fn detect_actor() -> String {
    actor_from(|name| std::env::var(name).ok(), &hostname())
}

/// [`detect_actor`] over any variable lookup, so it can be tested without touching the process
/// environment.
fn actor_from(var: impl Fn(&str) -> Option<String>, host: &str) -> String {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(actor) = var("KLSYNC_ACTOR") {
        return actor;
    }
    for (name, system) in CI_ACTOR_VARS {
        if let Some(who) = var(name) {
            return format!("{who} ({system})");
        }
    }
    let user = var("USER")
        .or_else(|| var("USERNAME"))
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| "unknown".to_string());
    if var("CI").is_some() {
        format!("{user}@{host} (CI)")
    } else {
        format!("{user}@{host}")
    }
}

/// This machine's name: `HOSTNAME`, else the kernel's, else "localhost".
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The git commit of the manifests in `dir`: a CI commit variable if set, else read from the
/// repository containing `dir` (worktrees and packed refs included). `None` outside a repository
/// or on an unborn branch.
pub fn detect_git_commit(dir: &Path) -> Option<String> {
    git_commit_from(|name| std::env::var(name).ok(), dir)
}

/// [`detect_git_commit`] over any variable lookup.
fn git_commit_from(var: impl Fn(&str) -> Option<String>, dir: &Path) -> Option<String> {
    CI_COMMIT_VARS
        .iter()
        .filter_map(|name| var(name))
        .map(|v| v.trim().to_string())
        .find(|v| is_object_id(v))
        .or_else(|| commit_from_repository(dir))
}

fn commit_from_repository(dir: &Path) -> Option<String> {
    let git_dir = find_git_dir(dir)?;
    // A linked worktree keeps HEAD in its own git dir and the refs in the common one.
    let common_dir = match fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir.clone(),
    };
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_object_id(head).then(|| head.to_string());
    };
    for base in [&git_dir, &common_dir] {
        if let Ok(id) = fs::read_to_string(base.join(reference)) {
            let id = id.trim();
            if is_object_id(id) {
                return Some(id.to_string());
            }
        }
    }
    let packed = fs::read_to_string(common_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (id, name) = line.split_once(' ')?;
        (name.trim() == reference && is_object_id(id)).then(|| id.to_string())
    })
}

/// The git dir of the repository containing `dir`: `.git` as a directory, or as a file holding
/// `gitdir: <path>` (worktrees, submodules).
fn find_git_dir(dir: &Path) -> Option<PathBuf> {
    let start = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for candidate in start.ancestors() {
        let dot_git = candidate.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if let Ok(text) = fs::read_to_string(&dot_git) {
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            return Some(candidate.join(target));
        }
    }
    None
}

/// A full SHA-1 or SHA-256 object id.
fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SHA_A: &str = "0123456789abcdef0123456789abcdef01234567";
    const SHA_B: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn actor_prefers_override_then_ci_user_then_local_user() {
        let host = "box";
        assert_eq!(
            actor_from(
                env(&[("KLSYNC_ACTOR", "bot"), ("GITHUB_ACTOR", "al")]),
                host
            ),
            "bot"
        );
        assert_eq!(
            actor_from(env(&[("GITHUB_ACTOR", "al"), ("USER", "runner")]), host),
            "al (GitHub Actions)"
        );
        assert_eq!(
            actor_from(env(&[("GITLAB_USER_LOGIN", "bo")]), host),
            "bo (GitLab CI)"
        );
        assert_eq!(
            actor_from(env(&[("BUILDKITE_BUILD_CREATOR", "cy")]), host),
            "cy (Buildkite)"
        );
        assert_eq!(
            actor_from(env(&[("USER", "dee"), ("GITHUB_ACTOR", " ")]), host),
            "dee@box"
        );
        assert_eq!(
            actor_from(env(&[("USER", "ci"), ("CI", "true")]), host),
            "ci@box (CI)"
        );
        assert_eq!(actor_from(env(&[]), host), "unknown@box");
    }

    #[test]
    fn commit_from_ci_variable_wins_when_it_is_an_object_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            git_commit_from(env(&[("GITHUB_SHA", SHA_A)]), dir.path()).as_deref(),
            Some(SHA_A)
        );
        assert_eq!(
            git_commit_from(env(&[("CI_COMMIT_SHA", "garbage")]), dir.path()),
            None
        );
    }

    #[test]
    fn commit_is_read_from_loose_ref_packed_ref_and_detached_head() {
        let repo = tempfile::tempdir().unwrap();
        let git = repo.path().join(".git");
        let nested = repo.path().join("manifests/lists");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::create_dir_all(&nested).unwrap();

        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(git_commit_from(env(&[]), &nested), None, "unborn branch");

        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs with: peeled\n{SHA_B} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(git_commit_from(env(&[]), &nested).as_deref(), Some(SHA_B));

        fs::write(git.join("refs/heads/main"), format!("{SHA_A}\n")).unwrap();
        assert_eq!(git_commit_from(env(&[]), &nested).as_deref(), Some(SHA_A));

        fs::write(git.join("HEAD"), format!("{SHA_B}\n")).unwrap();
        assert_eq!(git_commit_from(env(&[]), &nested).as_deref(), Some(SHA_B));
    }

    #[test]
    fn commit_is_read_through_a_worktree_gitdir_file() {
        let root = tempfile::tempdir().unwrap();
        let main_git = root.path().join("main/.git");
        let wt_git = main_git.join("worktrees/feature");
        let checkout = root.path().join("feature");
        fs::create_dir_all(main_git.join("refs/heads")).unwrap();
        fs::create_dir_all(&wt_git).unwrap();
        fs::create_dir_all(&checkout).unwrap();
        fs::write(
            checkout.join(".git"),
            format!("gitdir: {}\n", wt_git.display()),
        )
        .unwrap();
        fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        fs::write(wt_git.join("HEAD"), "ref: refs/heads/feature\n").unwrap();
        fs::write(main_git.join("refs/heads/feature"), SHA_A).unwrap();
        assert_eq!(git_commit_from(env(&[]), &checkout).as_deref(), Some(SHA_A));
    }

    #[test]
    fn no_repository_means_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        // The temp dir is not inside a repository on any sane machine; guard anyway.
        if find_git_dir(dir.path()).is_none() {
            assert_eq!(git_commit_from(env(&[]), dir.path()), None);
        }
    }
}
