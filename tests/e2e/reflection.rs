//! Server reflection as v1 and as v1alpha: clients that speak only v1alpha
//! (Python's grpcio-reflection, older grpcurl, Postman) see the same services
//! and files as v1 clients, behind the same authentication.

use crate::helpers::*;
use prost::Message;
use prost_types::FileDescriptorProto;
use std::collections::BTreeSet;
use tonic::{Code, Status, transport::Channel};
use tonic_reflection::pb::v1alpha;

/// Every service the gateway serves, reflection itself included.
const SERVED: [&str; 7] = [
    "hurtigspor.v1.ParticipantService",
    "hurtigspor.v1.SyncService",
    "hurtigspor.v1.ReportingService",
    "hurtigspor.v1.AuditService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A channel without credentials.
async fn anonymous(app: &TestApp) -> Channel {
    Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap()
}

/// The same client helpers for each reflection version: their generated
/// types differ, their protocol does not.
macro_rules! reflection_version {
    ($module:ident, $version:ident) => {
        pub(crate) mod $module {
            use std::collections::BTreeSet;
            use tonic::Status;
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            };

            /// One request on a fresh stream over `service`; the first answer.
            pub(crate) async fn ask<S>(service: S, request: MessageRequest) -> Result<MessageResponse, Status>
            where
                S: tonic::client::GrpcService<tonic::body::Body>,
                S::Error: Into<tonic::codegen::StdError>,
                S::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
                <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
            {
                let mut client = ServerReflectionClient::new(service);
                let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
                let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
                let answer = stream.message().await?.expect("an answer");
                Ok(answer.message_response.expect("a message response"))
            }

            /// The services listed over `service`.
            pub(crate) async fn services<S>(service: S) -> Result<BTreeSet<String>, Status>
            where
                S: tonic::client::GrpcService<tonic::body::Body>,
                S::Error: Into<tonic::codegen::StdError>,
                S::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
                <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
            {
                match ask(service, MessageRequest::ListServices(String::new())).await? {
                    MessageResponse::ListServicesResponse(list) => {
                        Ok(list.service.into_iter().map(|s| s.name).collect())
                    }
                    other => panic!("expected a service list over {}, got {other:?}", stringify!($version)),
                }
            }
        }
    };
}

reflection_version!(over_v1, v1);
reflection_version!(over_v1alpha, v1alpha);

async fn services_v1(app: &TestApp) -> BTreeSet<String> {
    over_v1::services(channel(app.addr, &app.token).await).await.expect("served over v1")
}

async fn services_v1alpha(app: &TestApp) -> BTreeSet<String> {
    over_v1alpha::services(channel(app.addr, &app.token).await).await.expect("served over v1alpha")
}

/// The files of a v1alpha descriptor answer, decoded.
fn files(answer: Result<v1alpha::server_reflection_response::MessageResponse, Status>) -> Vec<FileDescriptorProto> {
    match answer {
        Ok(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor"))
            .collect(),
        other => panic!("expected file descriptors over v1alpha, got {other:?}"),
    }
}

#[tokio::test]
async fn both_versions_list_every_service() {
    let app = spawn_app().await;
    let over_v1 = services_v1(&app).await;
    let over_v1alpha = services_v1alpha(&app).await;
    for expected in SERVED {
        assert!(over_v1.contains(expected), "{expected} over v1: {over_v1:?}");
        assert!(over_v1alpha.contains(expected), "{expected} over v1alpha: {over_v1alpha:?}");
    }
    assert_eq!(over_v1, over_v1alpha, "both versions describe the same services");
    assert_eq!(over_v1.len(), SERVED.len(), "nothing but what is served: {over_v1:?}");
}

#[tokio::test]
async fn v1alpha_fetches_a_file_by_symbol_and_its_imports_by_name() {
    let app = spawn_app().await;
    let client = channel(app.addr, &app.token).await;
    use v1alpha::server_reflection_request::MessageRequest;

    let found = files(
        over_v1alpha::ask(
            client.clone(),
            MessageRequest::FileContainingSymbol("hurtigspor.v1.ParticipantService".into()),
        )
        .await,
    );
    let [file] = found.as_slice() else { panic!("one file, got {}", found.len()) };
    assert_eq!(file.name(), "hurtigspor/v1/participant_service.proto");
    assert_eq!(file.package(), "hurtigspor.v1");
    let service = file.service.iter().find(|s| s.name() == "ParticipantService").expect("the service");
    let methods: Vec<_> = service.method.iter().map(|m| m.name()).collect();
    for expected in ["CreateParticipant", "GetParticipant", "ListParticipants", "LookupParticipant"] {
        assert!(methods.contains(&expected), "{expected} in {methods:?}");
    }

    // A client resolves the file's imports by name, the vendored ones included.
    assert!(!file.dependency.is_empty(), "the service file imports the messages");
    for import in &file.dependency {
        let got = files(over_v1alpha::ask(client.clone(), MessageRequest::FileByFilename(import.clone())).await);
        assert_eq!(got.iter().map(|f| f.name()).collect::<Vec<_>>(), [import.as_str()]);
    }
    let date =
        files(over_v1alpha::ask(client.clone(), MessageRequest::FileContainingSymbol("google.type.Date".into())).await);
    assert_eq!(date[0].name(), "google/type/date.proto");

    // A message and a method are symbols too.
    for (symbol, file) in [
        ("hurtigspor.v1.Participant", "hurtigspor/v1/participant.proto"),
        ("hurtigspor.v1.ParticipantService.GetParticipant", "hurtigspor/v1/participant_service.proto"),
    ] {
        let got = files(over_v1alpha::ask(client.clone(), MessageRequest::FileContainingSymbol(symbol.into())).await);
        assert_eq!(got.iter().map(|f| f.name()).collect::<Vec<_>>(), [file], "{symbol}");
    }

    let unknown =
        over_v1alpha::ask(client.clone(), MessageRequest::FileContainingSymbol("hurtigspor.v1.NoSuchService".into()))
            .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
}

/// A ListServices over v1 and over v1alpha, each on a channel of its own
/// from `connect`; the answers reduced to whether they were served.
async fn list_both<C, F>(connect: impl Fn() -> F) -> [Result<(), Status>; 2]
where
    F: std::future::Future<Output = C>,
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    [over_v1::services(connect().await).await.map(|_| ()), over_v1alpha::services(connect().await).await.map(|_| ())]
}

#[tokio::test]
async fn v1alpha_needs_a_valid_token_as_v1_does() {
    let app = spawn_app().await;

    // No token at all.
    for refused in list_both(|| anonymous(&app)).await {
        expect_error(refused, Code::Unauthenticated, "TOKEN_MISSING");
    }

    // The admin's token with its signature's first character changed.
    let (signed, signature) = app.token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    remember_secret(forged.rsplit('.').next().unwrap());
    for refused in list_both(|| channel(app.addr, &forged)).await {
        expect_error(refused, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
    }

    // The token itself gets through on both.
    for served in list_both(|| channel(app.addr, &app.token)).await {
        served.expect("a valid token is served");
    }
}
