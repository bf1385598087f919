//! Health checking and server reflection.

use crate::helpers::*;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// A channel without credentials: health needs none.
async fn plain(app: &TestApp) -> Channel {
    Channel::from_shared(format!("http://{}", app.addr)).unwrap().connect().await.unwrap()
}

#[tokio::test]
async fn health_reports_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(plain(&app).await);
    for service in ["", "hurtigspor.v1.ParticipantService"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn reflect(client: &mut ServerReflectionClient<Authed>, request: MessageRequest) -> MessageResponse {
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut stream = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap().message_response.unwrap()
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let app = spawn_app().await;
    let anonymous = ServerReflectionClient::new(plain(&app).await)
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated, "reflection needs a token");
    let mut client = ServerReflectionClient::new(channel(app.addr, &app.token).await);
    let MessageResponse::ListServicesResponse(list) =
        reflect(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["hurtigspor.v1.ParticipantService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let MessageResponse::FileDescriptorResponse(files) =
        reflect(&mut client, MessageRequest::FileContainingSymbol("hurtigspor.v1.ParticipantService".into())).await
    else {
        panic!("expected descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}
