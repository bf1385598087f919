//! TLS and mutual TLS on the gRPC port, with certificates made here: a test
//! CA, the gateway's certificate, and client certificates that name an
//! organisation the way Norwegian enterprise certificates do.

use crate::helpers::*;
use clap::Parser;
use hurtigspor_gateway::config::{Config, Mode, TlsConfig};
use hurtigspor_proto::v1::{
    ListFailedDeliveriesRequest, ListParticipantsRequest, participant_service_client::ParticipantServiceClient,
    sync_service_client::SyncServiceClient,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// The dev organisations' numbers (see `auth::dev::organisations`).
const ADMIN: &str = "900000049";
const OSLO: &str = "900000014";
const BERGEN: &str = "900000022";
/// The dev vendor acting for both dev kommuner.
const VENDOR: &str = "900000103";

/// How a certificate names its organisation.
#[derive(Clone, Copy)]
enum Names {
    /// `serialNumber` (2.5.4.5) = the organisation number (SEID 1).
    SerialNumber(&'static str),
    /// `organizationIdentifier` (2.5.4.97) = `NTRNO-<orgnr>` (SEID 2).
    OrganizationIdentifier(&'static str),
    Nothing,
}

/// A test CA and the certificates it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, in PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    fn sign(&self, mut params: CertificateParams) -> Issued {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        let key = key.serialize_pem();
        // The key's body is secret: the log scan looks for it.
        remember_secret(key.lines().nth(1).expect("a PEM body"));
        Issued { cert, key }
    }

    /// The gateway's certificate, for 127.0.0.1 and localhost.
    fn server(&self) -> Issued {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "hurtigspor gateway (test)");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate. Its common name is one the log scan looks
    /// for, so that a log line carrying the subject fails the test.
    fn client(&self, names: Names) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, fresh_given_name());
        params.distinguished_name.push(DnType::OrganizationName, "TESTVIRKSOMHET AS");
        match names {
            Names::SerialNumber(org) => params.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 5]), org),
            Names::OrganizationIdentifier(org) => {
                params.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 97]), format!("NTRNO-{org}"))
            }
            Names::Nothing => {}
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client's TLS settings: trusts this CA, presents `identity` if any.
    fn trusted_by(&self, identity: Option<&Issued>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.pem));
        match identity {
            Some(i) => tls.identity(Identity::from_pem(&i.cert, &i.key)),
            None => tls,
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A gateway with the test issuer's `[auth]` and `[tls]` from `ca`; with
/// `client_ca` it requires client certificates from the same CA. Dev mode,
/// so that the tests' synthetic national ids are accepted.
fn tls_config(dir: &Path, ca: &Ca, client_ca: bool) -> Config {
    let mut config = production_config(dir);
    config.mode = Mode::Dev;
    let server = ca.server();
    config.tls = Some(TlsConfig {
        cert_file: write(dir, "server.crt", &server.cert),
        key_file: write(dir, "server.key", &server.key),
        client_ca_file: client_ca.then(|| write(dir, "client-ca.crt", &ca.pem)),
    });
    config
}

/// The gateway with mutual TLS; its client is the administrator, with a
/// certificate naming the administrator's organisation.
async fn mutual_tls_app(ca: &Ca) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), ca, true);
    let admin = ca.client(Names::SerialNumber(ADMIN));
    spawn_over_tls(dir, config, ca.trusted_by(Some(&admin))).await
}

/// A token of a dev organisation for the test issuer, with every scope.
fn token(app: &TestApp, who: &str) -> String {
    let token = token_for(app.dir.path(), TEST_ISSUER, who, &ALL_SCOPES);
    remember_secret(token.rsplit('.').next().unwrap());
    token
}

async fn participants(app: &TestApp, tls: ClientTlsConfig, token: &str) -> Client {
    ParticipantServiceClient::new(tls_channel(app.addr, tls, token).await.expect("the handshake succeeds"))
}

async fn health(app: &TestApp, tls: ClientTlsConfig) -> ServingStatus {
    let channel = Channel::from_shared(format!("https://{}", app.addr)).unwrap().tls_config(tls).unwrap();
    let mut health = HealthClient::new(channel.connect().await.expect("the handshake succeeds"));
    let answer = health.check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
    answer.into_inner().status()
}

async fn count(app: &TestApp) -> usize {
    let list = app.client.clone().list_participants(ListParticipantsRequest::default()).await.unwrap();
    list.into_inner().participants.len()
}

#[tokio::test]
async fn a_client_whose_certificate_names_its_tokens_organisation_gets_through() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    // The administrator's certificate carries the number as serialNumber.
    let p = app.create(minimal_participant()).await;
    assert_eq!(app.get(&p.name).await, p);

    // Oslo's carries it as organizationIdentifier NTRNO-<orgnr>.
    let oslo_cert = ca.client(Names::OrganizationIdentifier(OSLO));
    let mut oslo = participants(&app, ca.trusted_by(Some(&oslo_cert)), &token(&app, "kommune_0301")).await;
    let listed = oslo.list_participants(ListParticipantsRequest::default()).await.expect("Oslo gets through");
    assert_eq!(listed.into_inner().participants, vec![p]);
    assert_eq!(health(&app, ca.trusted_by(Some(&oslo_cert))).await, ServingStatus::Serving);
}

#[tokio::test]
async fn without_a_client_certificate_every_call_but_health_is_refused() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    let mut anonymous = participants(&app, ca.trusted_by(None), &app.token).await;
    let status = expect_error(
        anonymous.create_participant(create_request(minimal_participant())).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISSING",
    );
    assert!(status.message().contains("client certificate"), "{status:?}");
    expect_error(
        anonymous.list_participants(ListParticipantsRequest::default()).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISSING",
    );
    let mut sync = SyncServiceClient::new(tls_channel(app.addr, ca.trusted_by(None), &app.token).await.unwrap());
    expect_error(
        sync.list_failed_deliveries(ListFailedDeliveriesRequest::default()).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISSING",
    );
    // Reflection too, in both versions.
    let without_certificate = || async { tls_channel(app.addr, ca.trusted_by(None), &app.token).await.unwrap() };
    expect_error(
        crate::reflection::over_v1::services(without_certificate().await).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISSING",
    );
    expect_error(
        crate::reflection::over_v1alpha::services(without_certificate().await).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISSING",
    );
    // Load balancers probe health over TLS without a certificate.
    assert_eq!(health(&app, ca.trusted_by(None)).await, ServingStatus::Serving);

    // Plaintext gets nowhere on a TLS port.
    let plain = async {
        let channel = Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await?;
        HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
        anyhow::Ok(())
    };
    assert!(plain.await.is_err(), "a plaintext client must not be served");
    assert_eq!(count(&app).await, 0, "nothing was created");
}

#[tokio::test]
async fn a_certificate_of_another_organisation_is_refused_and_changes_nothing() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    let p = app.create(minimal_participant()).await;
    let bergen_cert = ca.client(Names::OrganizationIdentifier(BERGEN));
    let admin_token = app.token.clone();
    // Bergen's certificate with the administrator's token, and Oslo's
    // token: neither is Bergen's.
    for token in [admin_token, token(&app, "kommune_0301")] {
        let mut client = participants(&app, ca.trusted_by(Some(&bergen_cert)), &token).await;
        let mut changed = minimal_participant();
        changed.kommunenummer = "4601".into();
        let status = expect_error(
            client.create_participant(create_request(changed)).await,
            Code::Unauthenticated,
            "CLIENT_CERTIFICATE_MISMATCH",
        );
        let shown = format!("{status:?}");
        for secret in [ADMIN, OSLO, BERGEN, token.as_str(), bergen_cert.cert.as_str()] {
            assert!(!shown.contains(secret), "the refusal echoes the token or the certificate: {shown}");
        }
        expect_error(
            client.get_participant(hurtigspor_proto::v1::GetParticipantRequest { name: p.name.clone() }).await,
            Code::Unauthenticated,
            "CLIENT_CERTIFICATE_MISMATCH",
        );
    }
    // Bergen itself, with its own certificate, gets through.
    let mut bergen = participants(&app, ca.trusted_by(Some(&bergen_cert)), &token(&app, "kommune_4601")).await;
    bergen.list_participants(ListParticipantsRequest::default()).await.expect("Bergen with its own token");
    // So does the vendor acting for Oslo, with its own certificate and a
    // token naming it as supplier; not with a token that does not name it.
    let vendor_cert = ca.client(Names::SerialNumber(VENDOR));
    let mut vendor = participants(&app, ca.trusted_by(Some(&vendor_cert)), &token(&app, "kommune_0301")).await;
    vendor.list_participants(ListParticipantsRequest::default()).await.expect("the vendor for Oslo");
    let mut not_for_admin = participants(&app, ca.trusted_by(Some(&vendor_cert)), &app.token).await;
    expect_error(
        not_for_admin.list_participants(ListParticipantsRequest::default()).await,
        Code::Unauthenticated,
        "CLIENT_CERTIFICATE_MISMATCH",
    );
    assert_eq!(app.get(&p.name).await, p, "nothing changed");
    assert_eq!(count(&app).await, 1, "nothing was created");
}

#[tokio::test]
async fn a_certificate_without_a_valid_organisation_number_is_refused() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    for names in [Names::Nothing, Names::SerialNumber("900000015"), Names::OrganizationIdentifier("12345678")] {
        let cert = ca.client(names);
        let mut client = participants(&app, ca.trusted_by(Some(&cert)), &app.token).await;
        expect_error(
            client.list_participants(ListParticipantsRequest::default()).await,
            Code::Unauthenticated,
            "CLIENT_CERTIFICATE_INVALID",
        );
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    let stranger = Ca::new("some other CA");
    // The right organisation, signed by a CA the gateway does not trust.
    let forged = stranger.client(Names::SerialNumber(ADMIN));
    let attempt = async {
        let channel = tls_channel(app.addr, ca.trusted_by(Some(&forged)), &app.token).await?;
        ParticipantServiceClient::new(channel).create_participant(create_request(minimal_participant())).await?;
        anyhow::Ok(())
    };
    let err = attempt.await.expect_err("a certificate from another CA must not get through");
    if let Some(status) = err.downcast_ref::<tonic::Status>() {
        assert!(
            !matches!(status.code(), Code::Ok | Code::InvalidArgument | Code::AlreadyExists),
            "refused before the service: {status:?}"
        );
    }
    assert_eq!(count(&app).await, 0, "nothing was created");
}

#[tokio::test]
async fn tls_without_client_certificates_serves_any_client_with_a_token() {
    let ca = Ca::new("hurtigspor test CA");
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), &ca, false);
    let app = spawn_over_tls(dir, config, ca.trusted_by(None)).await;
    let p = app.create(minimal_participant()).await;
    assert_eq!(app.get(&p.name).await, p);
    assert_eq!(health(&app, ca.trusted_by(None)).await, ServingStatus::Serving);
    // The token is still required.
    let channel = Channel::from_shared(format!("https://{}", app.addr)).unwrap().tls_config(ca.trusted_by(None));
    let mut anonymous = ParticipantServiceClient::with_interceptor(
        channel.unwrap().connect().await.unwrap(),
        hurtigspor_gateway::auth::BearerToken::none(),
    );
    expect_error(
        anonymous.list_participants(ListParticipantsRequest::default()).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    // A client that does not trust the gateway's CA stops in the handshake.
    let stranger = Ca::new("some other CA");
    let untrusting = tls_channel(app.addr, stranger.trusted_by(None), &app.token).await;
    let refused = match untrusting {
        Err(_) => true,
        Ok(channel) => {
            ParticipantServiceClient::new(channel).list_participants(ListParticipantsRequest::default()).await.is_err()
        }
    };
    assert!(refused, "the client must not accept a certificate from a CA it does not trust");
}

#[tokio::test]
async fn the_cli_client_talks_to_a_mutual_tls_gateway() {
    let ca = Ca::new("hurtigspor test CA");
    let app = mutual_tls_app(&ca).await;
    let dir = app.dir.path();
    let admin = ca.client(Names::SerialNumber(ADMIN));
    let (ca_file, cert, key) =
        (write(dir, "cli-ca.crt", &ca.pem), write(dir, "cli.crt", &admin.cert), write(dir, "cli.key", &admin.key));
    let server = format!("https://{}", app.addr);
    let run = |extra: &[&Path]| {
        let mut args: Vec<String> = vec!["hurtigspor".into(), "participants".into(), "--server".into(), server.clone()];
        args.extend(["--token".into(), app.token.clone(), "--purpose".into(), PURPOSE.into()]);
        for (flag, path) in ["--ca-file", "--cert", "--key"].iter().zip(extra) {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
        args.push("list".into());
        hurtigspor_cli::run(hurtigspor_cli::Cli::try_parse_from(args).unwrap())
    };
    run(&[&ca_file, &cert, &key]).await.expect("the CLI lists over mutual TLS");
    let without_cert = format!("{:#}", run(&[&ca_file]).await.expect_err("no client certificate"));
    assert!(without_cert.contains("client certificate"), "{without_cert}");
    let without_ca = format!("{:#}", run(&[]).await.expect_err("no CA"));
    assert!(without_ca.contains("--ca-file"), "{without_ca}");
}
