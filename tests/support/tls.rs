//! Certificates for a test's TLS Redis, made by `openssl` (Debian's, which
//! `.ci/run` installs if missing): a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a client certificate, and a second CA that
//! signed none of them.

use std::path::PathBuf;
use std::process::Command;

use super::TempDir;

pub struct Certs {
    dir: TempDir,
}

impl Certs {
    pub fn make() -> Certs {
        let certs = Certs {
            dir: TempDir::new(),
        };
        let dir = certs.dir.path().display().to_string();
        let script = r#"
set -e
ca() {
  openssl req -x509 -new -nodes -newkey rsa:2048 -keyout "$1.key" -out "$1.crt" -days 2 \
    -subj "/CN=$1" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() {
  openssl req -new -nodes -newkey rsa:2048 -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
    -days 2 -extfile "$1.ext" 2>/dev/null
}
ca ca
ca other-ca
leaf server "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
leaf client "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
"#;
        let status = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .status()
            .expect("sh runs");
        assert!(
            status.success(),
            "openssl made the certificates (Debian package openssl)"
        );
        certs
    }

    /// `NAME.crt` or `NAME.key` (`ca`, `other-ca`, `server`, `client`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.file(name)
    }

    /// The flags of a Redis TLS port with these certificates; `clients`:
    /// `yes` (a client certificate required), `optional` or `no`.
    pub fn server_flags(&self, clients: &str) -> Vec<String> {
        let path = |name: &str| self.file(name).display().to_string();
        vec![
            "--tls-cert-file".into(),
            path("server.crt"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            clients.into(),
        ]
    }
}
