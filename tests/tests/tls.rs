//! TLS on the STOMP and HTTP listeners (docs/security.md): certificates made by openssl in the
//! test, a real TLS handshake from a rustls client, client certificates as the principal, a
//! certificate reload without a restart, and stomp.py plus Python's HTTPS client with a JWT
//! (tests/interop/test_tls_jwt.py).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use postbus_auth::{JwtSettings, KeyMaterial, Policies, Verifier};
use postbus_broker::security::Security;
use postbus_broker::tls::{ClientAuth, Tls, TlsFiles};
use postbus_tests::{TestBroker, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it (`name`.pem/.key), and a client
/// certificate with CN svc-ledger (client.pem/.key).
fn make_pki(dir: &Path, server_name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    if !dir.join("ca.pem").exists() {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=postbus test CA",
        ]);
        openssl(&a, dir);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, ext) in [
        (server_name, "postbus-broker", "server.ext"),
        ("client", "svc-ledger", "client.ext"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&a, dir);
        openssl(
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
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
            dir,
        );
    }
}

struct Setup {
    broker: TestBroker,
    tls: Arc<Tls>,
    dir: tempfile::TempDir,
    token: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path(), "server");
    let tls = Tls::load(TlsFiles {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: Some(dir.path().join("ca.pem")),
        client_auth: ClientAuth::Optional,
    })
    .expect("TLS from openssl's files");
    let (jwt_private, jwt_public) = postbus_tests::ed25519_keys(dir.path(), "jwt");
    let verifier = Verifier::new(JwtSettings::default(), &[KeyMaterial::Pem(jwt_public)]).unwrap();
    let policies = Policies::parse(&[(
        "tls.toml".into(),
        r#"
[[rule]]
name = "producer"
effect = "allow"
roles = ["producer"]
actions = ["send", "create"]
destinations = ["/queue/orders.>"]

[[rule]]
name = "ledger-by-certificate"
effect = "allow"
principals = ["svc-ledger"]
actions = ["consume", "send", "create"]
destinations = ["/queue/orders.>"]
"#
        .into(),
    )])
    .unwrap();
    let security = Arc::new(Security::new(Some(verifier), false, policies));
    let broker = TestBroker::start_tls(test_config(), security, tls.clone()).await;
    let token = encode(
        &Header::new(Algorithm::EdDSA),
        &serde_json::json!({"sub": "svc-orders", "roles": ["producer"], "exp": get_current_timestamp() + 600}),
        &EncodingKey::from_ed_pem(&jwt_private).unwrap(),
    )
    .unwrap();
    Setup {
        broker,
        tls,
        dir,
        token,
    }
}

fn client_config(dir: &Path, with_cert: bool) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = ClientConfig::builder().with_root_certificates(roots);
    if with_cert {
        let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("client.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        b.with_client_auth_cert(certs, key).unwrap()
    } else {
        b.with_no_client_auth()
    }
}

/// Connects over TLS, sends `frames`, and returns what the broker answered until `until`
/// appears (or 10 s pass), with the serial number of the server certificate it showed.
async fn stomp_over_tls(s: &Setup, with_cert: bool, frames: &str, until: &str) -> (String, String) {
    let connector = TlsConnector::from(Arc::new(client_config(s.dir.path(), with_cert)));
    let tcp = tokio::net::TcpStream::connect(&s.broker.addr)
        .await
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let serial = serial_of(&cert);
    tls.write_all(frames.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), serial)
}

/// The certificate's serial number (it tells two certificates with one subject apart).
fn serial_of(cert: &CertificateDer<'_>) -> String {
    let text = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(cert.as_ref())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&text.stdout).trim().to_owned()
}

fn connect_frame(passcode: Option<&str>) -> String {
    let p = passcode
        .map(|t| format!("passcode:{t}\n"))
        .unwrap_or_default();
    format!("CONNECT\naccept-version:1.2\nhost:postbus\n{p}\n\0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_over_tls_with_a_token_or_a_client_certificate() {
    let s = setup().await;
    let (answer, _) = stomp_over_tls(&s, false, &connect_frame(Some(&s.token)), "\0").await;
    assert!(answer.starts_with("CONNECTED"), "{answer}");
    let (answer, _) = stomp_over_tls(&s, false, &connect_frame(None), "\0").await;
    assert!(answer.contains("authentication required"), "{answer}");
    // The certificate's CN is the principal: it may send, and its messages carry it.
    let frames = format!(
        "{}SEND\ndestination:/queue/orders.cert\nreceipt:r\n\nhi\0SUBSCRIBE\ndestination:/queue/orders.cert\nid:s\nack:auto\n\n\0",
        connect_frame(None)
    );
    let (answer, _) = stomp_over_tls(&s, true, &frames, "MESSAGE").await;
    assert!(answer.contains("RECEIPT"), "{answer}");
    let message = answer.split("MESSAGE").nth(1).unwrap_or_default();
    assert!(message.contains("JMSXUserID:svc-ledger"), "{answer}");
    // Plain TCP to a TLS listener gets no STOMP at all.
    let mut tcp = tokio::net::TcpStream::connect(&s.broker.addr)
        .await
        .unwrap();
    tcp.write_all(connect_frame(Some(&s.token)).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("CONNECTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_a_reload_without_a_restart() {
    let s = setup().await;
    let (_, before) = stomp_over_tls(&s, false, &connect_frame(Some(&s.token)), "\0").await;
    // Renew: a new certificate (new serial) in the same files.
    make_pki(s.dir.path(), "renewed");
    std::fs::copy(
        s.dir.path().join("renewed.pem"),
        s.dir.path().join("server.pem"),
    )
    .unwrap();
    std::fs::copy(
        s.dir.path().join("renewed.key"),
        s.dir.path().join("server.key"),
    )
    .unwrap();
    s.tls.reload().expect("reload");
    let (answer, after) = stomp_over_tls(&s, false, &connect_frame(Some(&s.token)), "\0").await;
    assert!(answer.starts_with("CONNECTED"), "{answer}");
    assert_ne!(before, after, "the renewed certificate is served");
    // A broken file is refused and the certificate in force stays.
    std::fs::write(s.dir.path().join("server.pem"), "not a certificate").unwrap();
    assert!(s.tls.reload().is_err());
    let (answer, still) = stomp_over_tls(&s, false, &connect_frame(Some(&s.token)), "\0").await;
    assert!(answer.starts_with("CONNECTED"), "{answer}");
    assert_eq!(after, still);
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("POSTBUS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_py_and_https_clients_with_tls_and_a_jwt() {
    let s = setup().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/test_tls_jwt.py");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(&script)
        .env("STOMP_ADDR", &s.broker.addr)
        .env("HTTPS_URL", &s.broker.http)
        .env("CA_FILE", s.dir.path().join("ca.pem"))
        .env("TOKEN", &s.token)
        .env("CLIENT_CERT", s.dir.path().join("client.pem"))
        .env("CLIENT_KEY", s.dir.path().join("client.key"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the script finishes within 120 s")
        .expect("run python (the README's test command makes tests/.venv with stomp.py)");
    assert!(
        out.status.success(),
        "stomp.py over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
