//! `klsync completions` and `klsync man`: shell completions and man pages, generated from the
//! same clap definitions as the parser, so they cannot drift from the real command line.

use clap::CommandFactory;

use super::{stdout_error, write_stdout};
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Error, ExitStatus};
use crate::run::Output;

/// Print the completion script for `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs) -> Result<ExitStatus, Error> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "klsync", &mut script);
    write_stdout(&script)
}

/// Print `klsync.1` on stdout, or write every page (`klsync.1`, `klsync-query-run.1`, ...)
/// into `--out`.
pub fn man(args: &ManArgs, output: &Output) -> Result<ExitStatus, Error> {
    let Some(dir) = &args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .map_err(stdout_error)?;
        return write_stdout(&page);
    };
    let io_error = |source| Error::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io_error)?;
    if !output.quiet {
        eprintln!("wrote man pages to {}", dir.display());
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
    /// spaces as `-`.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    fn anchors(text: &str) -> Vec<String> {
        let mut fenced = false;
        text.lines()
            .filter(|line| {
                if line.starts_with("```") {
                    fenced = !fenced;
                }
                !fenced && line.starts_with('#')
            })
            .map(|line| slug(line.trim_start_matches('#')))
            .collect()
    }

    /// `](target)` links of a markdown text, outside code blocks and spans.
    fn links(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            let outside_code: String = line
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, part)| part)
                .collect();
            let mut rest = outside_code.as_str();
            while let Some(start) = rest.find("](") {
                let after = &rest[start + 2..];
                let Some(end) = after.find(')') else { break };
                found.push(after[..end].to_owned());
                rest = &after[end..];
            }
        }
        found
    }

    /// The README stays a first read, and every relative link of it and of docs/ leads to a
    /// file that exists (and to a heading there, for `#anchor` links).
    #[test]
    fn the_readme_is_short_and_every_doc_link_resolves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(
            readme.lines().count() <= 250,
            "README.md is {} lines",
            readme.lines().count()
        );
        let mut pages: Vec<PathBuf> = vec![root.join("README.md")];
        for entry in std::fs::read_dir(root.join("docs")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "md") {
                pages.push(path);
            }
        }
        let mut broken = Vec::new();
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            for link in links(&text) {
                if link.contains("://") || link.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = link.split_once('#').unwrap_or((link.as_str(), ""));
                let target = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                if !target.exists() {
                    broken.push(format!("{}: {link} (no such file)", page.display()));
                    continue;
                }
                if !anchor.is_empty() && target.extension().is_some_and(|ext| ext == "md") {
                    let text = std::fs::read_to_string(&target).unwrap();
                    if !anchors(&text).contains(&anchor.to_owned()) {
                        broken.push(format!("{}: {link} (no such heading)", page.display()));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    }
}
