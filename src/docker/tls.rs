//! TLS material for `tcp://` hosts: checking the PEM blocks (pure) and the
//! client configuration made from them. The material stays in memory: the
//! key is never written to a file (bollard's own TLS client reads files at
//! every handshake; Berth's keeps its connections and its key itself).

use std::fmt;
use std::sync::Arc;

use super::TlsFiles;

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

/// The rustls client configuration for a daemon with `--tlsverify`: only
/// `tls.ca` is trusted (as the docker CLI does), and the client presents
/// `tls.cert` with `tls.key`. The material was checked with
/// [`check_tls_material`] when the host was set up.
pub(crate) fn client_config(tls: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut tls.ca.as_bytes()) {
        let cert = cert.map_err(|e| format!("ca_pem is not valid PEM ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_pem holds a certificate rustls refuses: {e}"))?;
    }
    let chain = rustls_pemfile::certs(&mut tls.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_pem is not valid PEM ({e})"))?;
    let key = rustls_pemfile::private_key(&mut tls.key.expose().as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| "key_pem holds no usable private key".to_owned())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        // Not rustls's message: it may describe the key.
        .map_err(|_| "cert_pem and key_pem do not make a usable client certificate (does the key belong to the certificate?)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Secret;

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
    fn the_client_configuration_takes_the_material_as_given() {
        let good = material();
        assert!(client_config(&good).is_ok());
        // A certificate whose key is another one: refused without rustls's
        // words about the key.
        let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).expect("cert");
        let mut tls = good.clone();
        tls.key = Secret::new(other.signing_key.serialize_pem());
        let err = client_config(&tls).expect_err("a mismatched key is refused");
        assert!(err.contains("does the key belong"), "{err}");
    }
}
