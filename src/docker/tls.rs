//! TLS material for `tcp://` hosts: checking the PEM blocks (pure) and the
//! private directory bollard reads them from.
//!
//! bollard's `Docker::connect_with_ssl` takes file paths and reads the client
//! key and certificate again at every TLS handshake, so the files must live
//! as long as the connection. [`PrivateTlsDir`] writes them to a fresh
//! directory of mode 0700 (files 0600) under the temp dir and removes it when
//! dropped; the host's connection owns it. A process killed before it could
//! drop its directory leaves it behind, so creating one first removes those
//! left by processes that no longer run (the pid is part of the name).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::TlsFiles;

/// Prefix of the directories under the temp dir; followed by `<pid>-<random>`.
const DIR_PREFIX: &str = "berth-docker-tls-";

/// Which of the three PEM blocks a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPart {
    /// The CA certificate(s) that signed the daemon's certificate.
    Ca,
    /// The client certificate.
    Cert,
    /// The client private key.
    Key,
}

impl TlsPart {
    /// What the part is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            TlsPart::Ca => "the CA certificate",
            TlsPart::Cert => "the client certificate",
            TlsPart::Key => "the client key",
        }
    }
}

/// Why TLS material cannot be used; never contains the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterialError {
    pub part: TlsPart,
    pub detail: String,
}

impl fmt::Display for TlsMaterialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.part.describe(), self.detail)
    }
}

/// Checks that `ca` and `cert` hold at least one PEM certificate each and
/// `key` a PEM private key (PKCS#8, PKCS#1 or SEC1), so a mistake shows up
/// at configuration time and not as a failed handshake. Pure.
pub fn check_tls_material(tls: &TlsFiles) -> Result<(), TlsMaterialError> {
    check_certificates(TlsPart::Ca, &tls.ca)?;
    check_certificates(TlsPart::Cert, &tls.cert)?;
    let err = |detail: &str| TlsMaterialError {
        part: TlsPart::Key,
        detail: detail.to_owned(),
    };
    match rustls_pemfile::private_key(&mut tls.key.expose().as_bytes()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(err(
            "holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, \
             `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----`)",
        )),
        // rustls-pemfile's message may quote the input: say less.
        Err(_) => Err(err("is not valid PEM")),
    }
}

fn check_certificates(part: TlsPart, pem: &str) -> Result<(), TlsMaterialError> {
    let err = |detail: String| TlsMaterialError { part, detail };
    let mut count = 0;
    for item in rustls_pemfile::certs(&mut pem.as_bytes()) {
        item.map_err(|e| err(format!("is not valid PEM ({e})")))?;
        count += 1;
    }
    if count == 0 {
        return Err(err(
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned(),
        ));
    }
    Ok(())
}

/// A private directory holding `ca.pem`, `cert.pem` and `key.pem`; removed
/// with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct PrivateTlsDir {
    path: PathBuf,
}

impl PrivateTlsDir {
    /// Writes `tls` into a new directory under `parent` (the caller passes
    /// `std::env::temp_dir()`).
    pub(crate) fn create(parent: &Path, tls: &TlsFiles) -> io::Result<PrivateTlsDir> {
        remove_orphans(parent);
        let pid = std::process::id();
        let mut attempt = 0;
        let path = loop {
            let path = parent.join(format!("{DIR_PREFIX}{pid}-{}", random_suffix()?));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        // From here on, dropping `dir` removes what was written.
        let dir = PrivateTlsDir { path };
        write_private(&dir.ca(), tls.ca.as_bytes())?;
        write_private(&dir.cert(), tls.cert.as_bytes())?;
        write_private(&dir.key(), tls.key.expose().as_bytes())?;
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    pub(crate) fn cert(&self) -> PathBuf {
        self.path.join("cert.pem")
    }

    pub(crate) fn key(&self) -> PathBuf {
        self.path.join("key.pem")
    }
}

impl Drop for PrivateTlsDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the TLS files of a Docker host");
            }
        }
    }
}

/// Creates `path` (which must not exist) with mode 0600 and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn random_suffix() -> io::Result<String> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| io::Error::other("no random numbers from the system"))?;
    Ok(hex::encode(bytes))
}

/// Removes directories of ours under `parent` whose process no longer runs
/// (best effort; only where `/proc` tells). Never touches a live process's.
fn remove_orphans(parent: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Only our own directories (not a symlink someone planted).
        let ours = entry
            .file_type()
            .map(|t| t.is_dir() && !t.is_symlink())
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Secret;
    use std::os::unix::fs::PermissionsExt;

    fn material() -> TlsFiles {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client.test".to_owned()]).unwrap();
        TlsFiles {
            ca: ca.cert.pem(),
            cert: client.cert.pem(),
            key: Secret::new(client.signing_key.serialize_pem()),
        }
    }

    #[test]
    fn accepts_real_pem_material() {
        check_tls_material(&material()).unwrap();
    }

    #[test]
    fn names_the_part_that_is_wrong() {
        let good = material();
        let mut tls = good.clone();
        tls.ca = "not pem".into();
        let err = check_tls_material(&tls).unwrap_err();
        assert_eq!(err.part, TlsPart::Ca);
        assert!(err
            .to_string()
            .starts_with("the CA certificate: holds no PEM certificate"));

        let mut tls = good.clone();
        tls.cert = good.key.expose().to_owned();
        assert_eq!(check_tls_material(&tls).unwrap_err().part, TlsPart::Cert);

        let mut tls = good.clone();
        tls.key = Secret::new(good.cert.clone());
        let err = check_tls_material(&tls).unwrap_err();
        assert_eq!(err.part, TlsPart::Key);
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }

    #[test]
    fn key_never_appears_in_an_error() {
        let mut tls = material();
        // A key block whose body is not base64: refused, and the error
        // must not quote it.
        tls.key =
            Secret::new("-----BEGIN PRIVATE KEY-----\nSECRET!SECRET\n-----END PRIVATE KEY-----\n");
        let err = check_tls_material(&tls).expect_err("a broken key is refused");
        assert_eq!(err.part, TlsPart::Key);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("SECRET!SECRET"), "{shown}");
        }
    }

    #[test]
    fn private_dir_is_0700_with_0600_files_and_goes_away() {
        let parent = tempfile::tempdir().unwrap();
        let tls = material();
        let dir = PrivateTlsDir::create(parent.path(), &tls).unwrap();
        let path = dir.path().to_owned();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        for file in [dir.ca(), dir.cert(), dir.key()] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert_eq!(fs::read_to_string(dir.key()).unwrap(), tls.key.expose());
        assert_eq!(fs::read_to_string(dir.ca()).unwrap(), tls.ca);
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn orphans_of_dead_processes_are_removed_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this pid cannot run.
        let dead = parent.path().join(format!("{DIR_PREFIX}4294967295-abc"));
        let live = parent
            .path()
            .join(format!("{DIR_PREFIX}{}-abc", std::process::id()));
        let other = parent.path().join("unrelated-1-abc");
        for d in [&dead, &live, &other] {
            fs::create_dir(d).unwrap();
        }
        let dir = PrivateTlsDir::create(parent.path(), &material()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
        assert!(dir.path().exists());
    }
}
