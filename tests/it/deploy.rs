//! The container files, read as Docker and Compose would read them (no container runtime runs
//! here): pinned base images, a health check everywhere, replicas that keep their endpoint, a
//! config that works inside the stack, and secrets kept out of the build context.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use acquire_digest::config::{self, StateStore};
use acquire_digest::simulator::{self, SimulatorOptions};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{run_beside, stdout};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `host:port` of the `--listen` in a command, and of the `--url` of a health check.
fn flag(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn port(address: &str) -> String {
    address
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned()
}

fn pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(_, digest)| {
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[test]
fn the_image_is_pinned_by_digest_and_checks_its_own_health() {
    let dockerfile = read("Dockerfile");
    let froms: Vec<&str> = (dockerfile.lines())
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{dockerfile}");
    for from in froms {
        let image = from.split_whitespace().next().unwrap();
        assert!(pinned(image), "{image} is not pinned by digest");
    }
    let instruction = |name: &str| -> Vec<String> {
        let start = dockerfile
            .find(&format!("\n{name} "))
            .unwrap_or_else(|| panic!("no {name}"));
        let text = dockerfile[start..].replace("\\\n", " ");
        let line = text.lines().nth(1).unwrap();
        let json = &line[line.find('[').unwrap()..=line.rfind(']').unwrap()];
        serde_json::from_str(json).unwrap()
    };
    let command = instruction("CMD");
    let health = instruction("HEALTHCHECK");
    assert_eq!(health[..2], ["/usr/local/bin/acquire-digest", "health"]);
    let listen = flag(&command, "--listen").expect("the image's command listens");
    let url = flag(&health, "--url").unwrap();
    assert_eq!(
        port(&url),
        port(&listen),
        "the health check asks where the daemon listens"
    );
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}

#[test]
fn compose_replicas_keep_their_endpoint_and_every_service_has_a_health_check() {
    let docs = YamlLoader::load_from_str(&read("deploy/compose.yaml")).unwrap();
    let services = docs[0]["services"].as_hash().unwrap();
    assert!(services.len() >= 3);
    let mut replicas = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let test = strings(&service["healthcheck"]["test"]);
        assert!(!test.is_empty(), "{name} has no health check");
        if let Some(image) = service["image"].as_str() {
            assert!(pinned(image), "{name}: {image} is not pinned by digest");
        }
        let command = strings(&service["command"]);
        if command.first().map(String::as_str) == Some("run") {
            replicas += 1;
            let listen =
                flag(&command, "--listen").unwrap_or_else(|| panic!("{name} lost --listen"));
            assert_eq!(
                test[1..3],
                ["/usr/local/bin/acquire-digest", "health"],
                "{name}"
            );
            assert_eq!(
                port(&flag(&test, "--url").unwrap()),
                port(&listen),
                "{name}"
            );
            let volumes = strings(&service["volumes"]);
            assert!(
                volumes
                    .iter()
                    .any(|v| v.starts_with("./config.compose.toml:")),
                "{name}: {volumes:?}"
            );
            let database = &service["environment"]["ACQUIRE_DIGEST_DATABASE_URL"];
            assert!(
                database.as_str().unwrap().starts_with("postgres://"),
                "{name}"
            );
        }
    }
    assert_eq!(replicas, 2);
}

/// The compose config loads inside the stack: its database from the variable compose sets, its
/// API at a service compose runs, its secrets from the variables deploy/.env.example names.
#[test]
fn the_compose_config_works_with_what_compose_and_the_env_example_provide() {
    let compose = &YamlLoader::load_from_str(&read("deploy/compose.yaml")).unwrap()[0];
    let replica = &compose["services"]["replica-a"];
    let mut env: HashMap<String, String> = replica["environment"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for line in read("deploy/.env.example").lines() {
        if let Some((key, value)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            env.insert(key.to_owned(), value.to_owned());
        }
    }
    let text = read("deploy/config.compose.toml");
    let loaded = config::parse(&text, &repo("deploy"), &|name| env.get(name).cloned())
        .unwrap_or_else(|problems| panic!("{problems:?}"));
    assert!(
        matches!(loaded.state, StateStore::Postgres(_)),
        "one shared ledger"
    );
    let host = loaded.teams[0].api_base.host_str().unwrap().to_owned();
    assert!(
        compose["services"][host.as_str()].as_hash().is_some(),
        "the API at {host}, which compose doesn't run"
    );
}

#[test]
fn secrets_stay_out_of_the_build_context_and_of_git() {
    let ignored = read(".dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "deploy/.env"),
        "{ignored}"
    );
    let git = read(".gitignore");
    assert!(git.lines().any(|l| l.trim() == ".env"), "{git}");
}

/// The simulator service's health check is the daemon's own probe.
#[tokio::test]
async fn health_probes_a_simulator_too() {
    let sim = simulator::spawn(SimulatorOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}", sim.addr());
    let output = run_beside(dir.path(), &["health", "--url", &url], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}
