//! TLS material for the federation listener (and, later, XMPP): the configured PEM files, or a
//! self-signed certificate generated once into `<data_dir>/tls/` and reused after that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use estuary_core::Config;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn server_config(config: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert, key) = if config.tls.cert.is_empty() {
        self_signed(config)?
    } else {
        (PathBuf::from(&config.tls.cert), PathBuf::from(&config.tls.key))
    };
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls.cert: cannot read PEM certificates from {}", cert.display()))?;
    if certs.is_empty() {
        bail!("tls.cert: no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("tls.key: cannot read a PEM private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: certificate and key do not form a usable pair")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn self_signed(config: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = config.data_dir.join("tls");
    let cert = dir.join("self-signed.crt");
    let key = dir.join("self-signed.key");
    if cert.exists() && key.exists() {
        tracing::warn!(cert = %cert.display(), "using a self-signed certificate; peers that verify certificates will refuse it. Set tls.cert and tls.key for production");
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let host = estuary_core::config::host_of(&config.server_name)
        .trim_matches(['[', ']'])
        .to_owned();
    let generated = rcgen::generate_simple_self_signed(vec![host, config.xmpp.domain.clone()])
        .context("cannot generate a self-signed certificate")?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::warn!(cert = %cert.display(), "generated a self-signed certificate; peers that verify certificates will refuse it. Set tls.cert and tls.key for production");
    Ok((cert, key))
}

/// Write a file readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
