//! A test PKI made with the `openssl` command: a CA and the certificates it
//! signs, in a directory, for TLS tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Makes a P-256 key in `dir` and, with `extra` arguments, a request (or a
/// self-signed certificate, with `-x509`) for `subject`.
fn new_key(dir: &Path, extra: &[&str], key: &str, out: &str, subject: &str) {
    let mut args = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-keyout", key, "-out", out, "-subj", subject]);
    openssl(dir, &args);
}

/// A test CA and certificates it signs, in a directory.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let pki = Pki { dir: dir.join(name) };
        std::fs::create_dir_all(&pki.dir).expect("pki dir");
        new_key(&pki.dir, &["-x509", "-days", "2"], "ca.key", "ca.pem", &format!("/CN={name}"));
        pki
    }

    /// The CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `name` (`server`: for 127.0.0.1; otherwise a
    /// client certificate with `name` as its common name): cert and key.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        if name == "server" {
            self.sign(name, "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        } else {
            self.sign(name, &format!("/CN={name}"), "extendedKeyUsage=clientAuth\n")
        }
    }

    /// A certificate for a cluster member `name` that serves and calls:
    /// the DNS name `dns`, for server and client use.
    pub fn issue_member(&self, name: &str, dns: &str) -> (PathBuf, PathBuf) {
        let extensions = format!("subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth,clientAuth\n");
        self.sign(name, &format!("/CN={name}"), &extensions)
    }

    fn sign(&self, name: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let (key, csr, cert, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(self.dir.join(&ext), format!("basicConstraints=CA:FALSE\n{extensions}")).expect("ext");
        new_key(&self.dir, &[], &key, &csr, subject);
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}
