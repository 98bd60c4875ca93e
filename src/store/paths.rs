//! Where the state directory is: a pure decision over an injectable
//! environment lookup ([`resolve_state_dir`]), and creating it owner-only
//! ([`ensure_state_dir`]).

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// Environment variable that overrides the default state directory.
pub const STATE_DIR_VAR: &str = "BERTH_STATE_DIR";

/// Picks the state directory: the explicit setting (the provider's
/// `state_dir`), else `BERTH_STATE_DIR`, else `$XDG_DATA_HOME/berth`, else
/// `$HOME/.local/share/berth`. Empty variables count as unset; a relative
/// `XDG_DATA_HOME` is ignored, as the XDG base directory specification says.
/// Pure: `env` is the only source of the environment.
pub fn resolve_state_dir(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, StoreError> {
    if let Some(dir) = explicit.filter(|d| !d.as_os_str().is_empty()) {
        return Ok(dir.to_owned());
    }
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(STATE_DIR_VAR) {
        return Ok(dir);
    }
    if let Some(data_home) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(data_home.join("berth"));
    }
    if let Some(home) = var("HOME") {
        return Ok(home.join(".local").join("share").join("berth"));
    }
    Err(StoreError::NoStateDir)
}

/// Creates the state directory (and missing parents) with mode 0700 when it
/// does not exist yet. An existing directory keeps its mode.
pub fn ensure_state_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::StateDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn env_of(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs = pairs.to_vec();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn resolution_order() {
        static ALL: [(&str, &str); 3] = [
            (STATE_DIR_VAR, "/state"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        // (explicit setting, environment, expected directory or None = error)
        type Case = (
            Option<&'static str>,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
        );
        let table: &[Case] = &[
            (Some("/explicit"), &ALL, Some("/explicit")),
            (None, &ALL, Some("/state")),
            (Some(""), &ALL, Some("/state")),
            (None, &ALL[1..], Some("/xdg/berth")),
            (None, &ALL[2..], Some("/home/u/.local/share/berth")),
            // Empty values count as unset.
            (
                None,
                &[(STATE_DIR_VAR, ""), ("XDG_DATA_HOME", ""), ("HOME", "/h")],
                Some("/h/.local/share/berth"),
            ),
            // A relative XDG_DATA_HOME is ignored.
            (
                None,
                &[("XDG_DATA_HOME", "rel"), ("HOME", "/h")],
                Some("/h/.local/share/berth"),
            ),
            (None, &[], None),
        ];
        for (explicit, pairs, want) in table {
            let got = resolve_state_dir(explicit.map(Path::new), &env_of(pairs));
            match want {
                Some(want) => {
                    assert_eq!(got.unwrap(), PathBuf::from(want), "{explicit:?} {pairs:?}")
                }
                None => assert!(matches!(got, Err(StoreError::NoStateDir))),
            }
        }
    }

    #[test]
    fn created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("berth");
        ensure_state_dir(&dir).unwrap();
        ensure_state_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
