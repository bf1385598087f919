//! The Arena, NIR and NOKUT mocks for the benches that deliver.

use hurtigspor_gateway::config::{self, Config, Secret};
use hurtigspor_mocks::{
    arena::{Arena, ArenaConfig},
    nir::{Nir, NirConfig, ROLE_INTRO},
    nokut::{Nokut, NokutConfig},
    server::{MockSystem, RunningMock},
};

/// Starts the Arena, NIR and NOKUT mocks (in that order) on free ports and
/// configures them as the gateway's targets, with their default credentials
/// (NOKUT's webhooks to the gateway's own HTTP listener), as `hurtigspor
/// dev` does.
pub async fn start_mocks(config: &mut Config) -> Vec<RunningMock> {
    let at = "127.0.0.1:0";
    let targets = &mut config.targets;
    let arena = ArenaConfig::default();
    let (client_id, secret) = (arena.client_id.clone(), arena.client_secret.clone());
    let arena = Arena::new(arena).spawn(at).await.expect("the Arena mock starts");
    targets.arena = Some(config::ArenaTarget { base_url: arena.url(), client_id, client_secret: Secret::new(secret) });
    let nir = NirConfig::default();
    let user = nir.users.iter().find(|u| u.role == ROLE_INTRO).expect("the NIR mock has an intro user").clone();
    let nir = Nir::new(nir).spawn(at).await.expect("the NIR mock starts");
    targets.nir =
        Some(config::NirTarget { base_url: nir.url(), username: user.username, password: Secret::new(user.password) });
    let nokut = NokutConfig::default();
    let (api_key, webhook_secret) = (nokut.api_key.clone(), nokut.webhook_secret.clone());
    let nokut = Nokut::new(nokut).spawn(at).await.expect("the NOKUT mock starts");
    targets.nokut = Some(config::NokutTarget {
        base_url: nokut.url(),
        api_key: Secret::new(api_key),
        webhook_secret: Some(Secret::new(webhook_secret)),
        webhook_url: None,
    });
    vec![arena, nir, nokut]
}
