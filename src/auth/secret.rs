//! The JWT signing secret: `RAGD_JWT_SECRET`, or `<data-dir>/secret.key`
//! generated on first start with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use rand::RngCore;

/// Shortest secret accepted, in bytes (HS256 wants at least its 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Returns the secret bytes: the configured one, or the data dir's own.
pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Vec<u8>, String> {
    if let Some(secret) = configured {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "RAGD_JWT_SECRET is {} bytes; it must be at least {MIN_SECRET_BYTES}",
                secret.len()
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("secret.key");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "{} holds {} bytes; a secret needs at least {MIN_SECRET_BYTES} (delete the file to generate a new one, which signs out everyone)",
                    path.display(),
                    secret.len()
                ));
            }
            if let Ok(meta) = fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "secret.key is readable by other users; run chmod 600 on it");
            }
            Ok(secret.as_bytes().to_vec())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

fn create(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new JWT signing secret");
    Ok(secret.into_bytes())
}
