//! What the last plan of this configuration asked the registry, so the
//! next plan can ask it all at once.
//!
//! terraform plans `berth_app`s ten at a time, and each plan waits for its
//! image's `HEAD` request: at a registry 50 ms away, 100 apps wait ten
//! round trips one after another. A plan that remembers which images it
//! resolved can send all of those requests when the next plan's first app
//! needs one, and each app then finds its answer waiting.
//!
//! The memory is a small file per configuration ([`PlanHints`]) in the
//! state directory's `plan-hints/`, named by a hash of the working
//! directory, the terraform workspace and the provider's configuration
//! (an alias of the provider is another configuration). It holds image
//! references and credential ids only, in the order the plan asked for
//! them; losing it only costs the next plan its head start. It is read
//! when a plan first needs an image and written when terraform shuts the
//! provider down, and only by a process that planned `berth_app`s: a
//! `plan -refresh-only`, a destroy, an import and the apply step never
//! send the early requests, so they ask the registry no more than before.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Entries kept at most (a configuration with more images than this
/// starts the rest when their apps ask).
const MAX_ENTRIES: usize = 10_000;
/// Hint files larger than this are not ones Berth wrote.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
const FORMAT_VERSION: u32 = 1;

/// One image a plan resolved for a `berth_app`: the reference as
/// configured and the id of the credential used for it (if any).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HintEntry {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct HintFile {
    version: u32,
    images: Vec<HintEntry>,
}

/// The hint file of one provider configuration, what it said when read,
/// and what this process's plans asked for.
#[derive(Default)]
pub struct PlanHints {
    path: Option<PathBuf>,
    state: Mutex<HintState>,
}

#[derive(Default)]
struct HintState {
    /// What the file said, once read (`None`: not read yet).
    loaded: Option<Vec<HintEntry>>,
    asked: Vec<HintEntry>,
    seen: HashSet<HintEntry>,
}

impl PlanHints {
    /// Hints kept at `path` (`None`: nowhere; nothing is read or written).
    pub fn at(path: Option<PathBuf>) -> PlanHints {
        PlanHints {
            path,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HintState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a plan of this process resolves `entry`. The first call
    /// returns what the last plan asked for (to send early); later calls
    /// return nothing.
    pub fn note(&self, entry: HintEntry) -> Vec<HintEntry> {
        let mut state = self.state();
        if state.seen.len() < MAX_ENTRIES && state.seen.insert(entry.clone()) {
            state.asked.push(entry);
        }
        if state.loaded.is_some() {
            return Vec::new();
        }
        let loaded = self.path.as_deref().map(read).unwrap_or_default();
        state.loaded = Some(loaded.clone());
        loaded
    }

    /// Writes what this process's plans asked for, when they asked for
    /// anything and it differs from what the file said. Best effort: a
    /// failure is logged and costs only the next plan's head start.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let state = self.state();
        // The same images in another order need no write: terraform's
        // order varies from run to run.
        let same = state.loaded.as_ref().is_some_and(|loaded| {
            loaded.len() == state.asked.len() && loaded.iter().all(|e| state.seen.contains(e))
        });
        if state.asked.is_empty() || same {
            return;
        }
        match write(path, &state.asked) {
            Ok(()) => tracing::debug!(
                path = %path.display(),
                images = state.asked.len(),
                "remembered the images this plan resolved"
            ),
            Err(error) => tracing::debug!(
                path = %path.display(),
                %error,
                "could not remember the images this plan resolved"
            ),
        }
    }
}

/// The hint file for the provider configuration `config_fingerprint` of
/// the terraform working directory `cwd` in `workspace`, under the state
/// directory. Pure.
pub fn hint_path(
    state_dir: &Path,
    cwd: &Path,
    workspace: &str,
    config_fingerprint: &str,
) -> PathBuf {
    let mut hash = Sha256::new();
    for part in [
        cwd.as_os_str().as_encoded_bytes(),
        workspace.as_bytes(),
        config_fingerprint.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let name = hex::encode(&hash.finalize()[..16]);
    state_dir.join("plan-hints").join(format!("{name}.json"))
}

/// The terraform workspace a command in `cwd` runs in: `TF_WORKSPACE`,
/// else the one `terraform workspace select` wrote into the data
/// directory (`TF_DATA_DIR`, default `.terraform`), else `default`.
pub fn workspace(cwd: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> String {
    if let Some(name) = env("TF_WORKSPACE").filter(|v| !v.is_empty()) {
        return name.to_string_lossy().into_owned();
    }
    let data_dir = env("TF_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| cwd.join(".terraform"), |d| cwd.join(d));
    std::fs::read_to_string(data_dir.join("environment"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn read(path: &Path) -> Vec<HintEntry> {
    let small = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_FILE_BYTES);
    if !small {
        return Vec::new();
    }
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<HintFile>(&bytes).ok())
        .filter(|file| file.version == FORMAT_VERSION)
        .map(|file| file.images.into_iter().take(MAX_ENTRIES).collect())
        .unwrap_or_default()
}

/// Writes `entries` whole (a temporary file renamed over the old one), in
/// an owner-only directory.
fn write(path: &Path, entries: &[HintEntry]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let body = serde_json::to_vec(&HintFile {
        version: FORMAT_VERSION,
        images: entries.to_vec(),
    })?;
    let temporary = path.with_extension(format!("json.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&body)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(image: &str, credential: Option<&str>) -> HintEntry {
        HintEntry {
            image: image.into(),
            credential: credential.map(str::to_owned),
        }
    }

    #[test]
    fn the_hint_file_depends_on_directory_workspace_and_configuration() {
        let state = Path::new("/state");
        let base = hint_path(state, Path::new("/w/a"), "default", "c1");
        assert!(base.starts_with("/state/plan-hints"), "{}", base.display());
        assert_eq!(base, hint_path(state, Path::new("/w/a"), "default", "c1"));
        for other in [
            hint_path(state, Path::new("/w/b"), "default", "c1"),
            hint_path(state, Path::new("/w/a"), "staging", "c1"),
            hint_path(state, Path::new("/w/a"), "default", "c2"),
            // Parts are length-prefixed: moving a boundary is another key.
            hint_path(state, Path::new("/w/ad"), "efault", "c1"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_workspace_comes_from_the_environment_else_the_data_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = |_: &str| None;
        assert_eq!(workspace(dir.path(), &none), "default");
        std::fs::create_dir_all(dir.path().join(".terraform")).expect("mkdir");
        std::fs::write(dir.path().join(".terraform/environment"), "staging").expect("write");
        assert_eq!(workspace(dir.path(), &none), "staging");
        let data_dir = |name: &str| (name == "TF_DATA_DIR").then(|| OsString::from("elsewhere"));
        assert_eq!(workspace(dir.path(), &data_dir), "default");
        let set = |name: &str| (name == "TF_WORKSPACE").then(|| OsString::from("prod"));
        assert_eq!(workspace(dir.path(), &set), "prod");
    }

    #[test]
    fn a_plan_gets_the_last_plans_images_once_and_leaves_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan-hints/x.json");
        let (a, b) = (entry("r/a:1", None), entry("r/b:1", Some("cred-1")));

        let first = PlanHints::at(Some(path.clone()));
        assert!(first.note(a.clone()).is_empty(), "no hints yet");
        assert!(first.note(b.clone()).is_empty());
        assert!(first.note(a.clone()).is_empty(), "asked twice, kept once");
        first.save();

        let second = PlanHints::at(Some(path.clone()));
        assert_eq!(second.note(b.clone()), vec![a.clone(), b.clone()]);
        assert!(second.note(a.clone()).is_empty(), "only the first call");
        // The same images in another order: nothing to write.
        second.save();
        let third = PlanHints::at(Some(path.clone()));
        assert_eq!(third.note(a.clone()), vec![a.clone(), b.clone()]);
        // Fewer images: the file says what this plan asked for.
        third.save();
        let fourth = PlanHints::at(Some(path.clone()));
        assert_eq!(fourth.note(b.clone()), vec![a.clone()]);
        fourth.note(a.clone());
        fourth.save();

        // A process that planned nothing leaves the file as it is.
        PlanHints::at(Some(path.clone())).save();
        assert_eq!(read(&path), vec![b, a]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_file_berth_did_not_write_is_no_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.json");
        for body in ["not json", r#"{"version":99,"images":[{"image":"a"}]}"#] {
            std::fs::write(&path, body).expect("write");
            assert!(PlanHints::at(Some(path.clone()))
                .note(entry("x", None))
                .is_empty());
        }
    }
}
