//! Test certificates made with `openssl` at run time (never committed): a CA, a server
//! certificate for the loopback addresses and `localhost`, and a client certificate for
//! mutual TLS, all signed by that CA; and the ACL rules kvq documents, read from the chart.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::which;

/// A CA and the certificates it signed, in a temporary directory.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    /// A fresh CA with a server certificate valid for `localhost` and 127.0.0.1 to 127.0.0.9,
    /// and a client certificate.
    pub fn generate() -> Self {
        let certs = Self { dir: tempfile::tempdir().unwrap() };
        certs.openssl(&[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kvq test CA",
        ]);
        let sans: Vec<String> = (1..10).map(|i| format!("IP:127.0.0.{i}")).collect();
        certs.sign("server", &format!("subjectAltName=DNS:localhost,{}", sans.join(",")));
        certs.sign("client", "subjectAltName=DNS:kvq");
        certs
    }

    fn sign(&self, name: &str, ext: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let subj = format!("/CN={name}");
        self.openssl(&[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ]);
        std::fs::write(self.dir.path().join(format!("{name}.ext")), ext).unwrap();
        let extfile = format!("{name}.ext");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new(which("openssl")).args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

/// The ACL rules of `binary` (`kvq-server`, `kvq-worker`) for `prefix`, as the chart and the
/// README give them: the chart's `files/acl/<binary>.acl`, comments dropped, lines joined.
pub fn acl_rules(binary: &str, prefix: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("helm/kvq/files/acl/{binary}.acl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("{prefix}", prefix)
}
