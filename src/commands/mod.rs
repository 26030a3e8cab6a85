//! One module per subcommand: each turns parsed arguments into work and an exit status.

pub mod apply;
#[cfg(feature = "emulator")]
pub mod demo;
pub mod docs;
pub mod drift;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod history;
pub mod import;
pub mod init;
pub mod plan;
pub mod query;
pub mod schema;
mod session;
pub mod state;
pub mod validate;

use std::io::{self, Write};

use crate::error::{Error, ExitStatus};

/// Write `bytes` to stdout and flush: a reader that went away (`klsync man | head`) is success,
/// any other failure an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<ExitStatus, Error> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitStatus::Success),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(ExitStatus::Success),
        Err(err) => Err(stdout_error(err)),
    }
}

/// Ask `question` on stderr and read the answer from stdin: whether it is exactly `yes`.
pub(crate) fn answered_yes(question: &str) -> Result<bool, Error> {
    use std::io::BufRead as _;
    eprint!("{question} Only 'yes' is accepted: ");
    let mut answer = String::new();
    io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| Error::Io {
            path: "stdin".into(),
            source,
        })?;
    Ok(answer.trim() == "yes")
}

/// A failed write to stdout, as an error naming `<stdout>`.
pub(crate) fn stdout_error(source: io::Error) -> Error {
    Error::Io {
        path: "<stdout>".into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stdout_failure_names_stdout() {
        let err = stdout_error(io::Error::other("disk full"));
        assert!(
            matches!(&err, Error::Io { path, .. } if path.as_os_str() == "<stdout>"),
            "{err:?}"
        );
    }
}
