//! The deployment files against the binary, so they cannot drift apart: every
//! role the layouts run is a role of the CLI and every long-running role is
//! run; every setting they give the service is one it reads; every port they
//! probe or route to is the one it listens on; and the gateway sends each
//! operation of the OpenAPI document to a role that serves it (checked against
//! the real roles, in process). Their shape against the Compose and Kubernetes
//! schemas is deploy/local/validate-deploy.sh.

use clap::{CommandFactory, Parser};
use marketing::cli::Cli;
use marketing::config::{Config, EXTERNAL_ENV};
use marketing::startup::{Application, Role};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const IMAGE: &str = "marketing:latest";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("read deploy/{path}: {e}"))
}

/// Every YAML document of a file, with `<<` merge keys applied, as JSON.
fn yaml(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(&read(path))
        .map(|document| {
            let mut value = serde_norway::Value::deserialize(document).expect("valid YAML");
            value.apply_merge().expect("valid merge keys");
            serde_json::to_value(value).expect("YAML that is JSON too")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The CLI's subcommands.
fn commands() -> BTreeSet<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// The long-running roles a split layout must run: every subcommand that is
/// not one-shot, except `serve` (all of them in one process).
fn split_roles() -> BTreeSet<String> {
    commands()
        .into_iter()
        .filter(|name| name != "serve")
        .filter(|name| {
            Cli::try_parse_from(["marketing", name.as_str()]).is_ok_and(|cli| !cli.command.is_one_shot())
        })
        .collect()
}

/// Every environment variable the binary reads.
fn accepted_env() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .chain(EXTERNAL_ENV.iter().map(|s| s.to_string()))
        .collect()
}

/// The port of the image's LISTEN_ADDR (deploy/Dockerfile), which every role
/// listens on.
fn listen_port() -> u16 {
    let dockerfile = read("Dockerfile");
    let addr = dockerfile
        .split_whitespace()
        .find_map(|w| w.strip_prefix("LISTEN_ADDR="))
        .expect("the Dockerfile sets LISTEN_ADDR");
    let addr: std::net::SocketAddr = addr.parse().expect("LISTEN_ADDR is an address");
    addr.port()
}

fn assert_env_accepted(what: &str, names: impl IntoIterator<Item = String>) {
    let accepted = accepted_env();
    let unknown: Vec<String> = names.into_iter().filter(|n| !accepted.contains(n)).collect();
    assert!(
        unknown.is_empty(),
        "{what} sets variables the binary does not read: {unknown:?}"
    );
}

fn keys(map: &Value) -> Vec<String> {
    map.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// `host:port` → (host, port).
fn host_port(value: &str) -> (String, u16) {
    let (host, port) = value.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("a port"))
}

#[test]
fn compose_runs_every_role_with_settings_and_ports_the_binary_has() {
    let compose = &yaml("docker-compose.yml")[0];
    let services = compose["services"].as_object().unwrap();
    let port = listen_port();
    let mut roles: BTreeMap<String, String> = BTreeMap::new(); // role -> service
    for (name, service) in services.iter().filter(|(_, s)| s["image"] == IMAGE) {
        let command = service["command"][0].as_str().unwrap();
        assert!(
            commands().contains(command),
            "service {name} runs `marketing {command}`, which the CLI does not have"
        );
        assert_env_accepted(&format!("service {name}"), keys(&service["environment"]));
        if command == "migrate" {
            continue;
        }
        let probe = service["healthcheck"]["test"].to_string();
        assert!(
            probe.contains(&format!("/{port}")),
            "{name}'s healthcheck probes another port than {port}: {probe}"
        );
        roles.insert(command.to_owned(), name.clone());
        let replicas = service["deploy"]["replicas"].as_u64().unwrap_or(1);
        if ["projector", "publisher"].contains(&command) {
            assert!(
                replicas >= 2,
                "{name} runs {replicas} replica(s): two for fail-over"
            );
        }
    }
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        split_roles(),
        "compose runs exactly the split roles"
    );
    // Media are shared through an object store that every role reaches.
    let env = &services[&roles["command-api"]]["environment"];
    assert!(env["MEDIA_STORE_URL"].as_str().unwrap().starts_with("s3://"));
    let bucket = env["MEDIA_STORE_URL"]
        .as_str()
        .unwrap()
        .trim_start_matches("s3://");
    let created = services["minio-bucket"]["command"].to_string();
    assert!(created.contains(&format!("local/{bucket}")), "{created}");

    // The gateway: one public port, upstreams that are the API roles' services.
    let gateway = &services["gateway"];
    assert_eq!(gateway["ports"].as_array().unwrap().len(), 1);
    for (variable, role) in [("COMMAND_API", "command-api"), ("QUERY_API", "query-api")] {
        let (host, upstream_port) = host_port(gateway["environment"][variable].as_str().unwrap());
        assert_eq!(host, roles[role], "{variable} names the {role} service");
        assert_eq!(upstream_port, port, "{variable} is the roles' LISTEN_ADDR port");
    }
    let published: Vec<_> = services
        .iter()
        .filter(|(name, s)| s.get("ports").is_some() && name.as_str() != "gateway")
        .map(|(name, _)| name.clone())
        .collect();
    assert!(published.is_empty(), "only the gateway is public: {published:?}");

    // The kurrent profile points every role at KurrentDB.
    let kurrent = &yaml("docker-compose.kurrent.yml")[0];
    assert_eq!(services["kurrentdb"]["profiles"][0], "kurrent");
    for (role, service) in &roles {
        let env = &kurrent["services"][service]["environment"];
        assert!(
            env["EVENT_STORE_URL"]
                .as_str()
                .is_some_and(|u| u.starts_with("kurrentdb://")),
            "the kurrent layout sets EVENT_STORE_URL for {role}"
        );
        assert_env_accepted("docker-compose.kurrent.yml", keys(env));
    }
}

/// Every resource of the Kubernetes layout, by kind and name.
fn k8s() -> BTreeMap<(String, String), Value> {
    let kustomization = &yaml("kustomization.yaml")[0];
    let mut files: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    let listed: BTreeSet<_> = files.iter().cloned().collect();
    for entry in std::fs::read_dir(deploy("k8s")).unwrap() {
        let name = format!("k8s/{}", entry.unwrap().file_name().to_string_lossy());
        if !name.ends_with(".example.yaml") {
            assert!(
                listed.contains(&name),
                "{name} is not in deploy/kustomization.yaml"
            );
        }
    }
    files.push("k8s/secret.example.yaml".into());
    files
        .iter()
        .flat_map(|f| yaml(f))
        .map(|r| {
            let key = (
                r["kind"].as_str().unwrap().to_owned(),
                r["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            (key, r)
        })
        .collect()
}

#[test]
fn kubernetes_runs_every_role_with_settings_and_ports_the_binary_has() {
    let resources = k8s();
    let port = listen_port();
    let config_map = &resources[&("ConfigMap".into(), "marketing-config".into())];
    assert_env_accepted("ConfigMap marketing-config", keys(&config_map["data"]));
    // The Secret's keys are the binary's, or Postgres' own.
    let secret = &resources[&("Secret".into(), "marketing".into())];
    assert_env_accepted(
        "Secret marketing",
        keys(&secret["stringData"])
            .into_iter()
            .filter(|k| k != "POSTGRES_PASSWORD"),
    );
    assert!(config_map["data"]["MEDIA_STORE_URL"]
        .as_str()
        .unwrap()
        .starts_with("s3://"));

    let mut roles: BTreeMap<String, String> = BTreeMap::new(); // role -> deployment
    for ((kind, name), resource) in &resources {
        let spec = &resource["spec"]["template"]["spec"];
        let Some(containers) = spec["containers"].as_array() else {
            continue;
        };
        for container in containers.iter().filter(|c| c["image"] == IMAGE) {
            let command = container["args"][0].as_str().unwrap();
            assert!(
                commands().contains(command),
                "{kind} {name} runs `marketing {command}`"
            );
            let sources = container["envFrom"].to_string();
            assert!(
                sources.contains("marketing-config") && sources.contains("\"marketing\""),
                "{name} reads the ConfigMap and the Secret"
            );
            if kind != "Deployment" {
                continue;
            }
            assert_eq!(container["ports"][0]["containerPort"], port, "{name}'s port");
            for probe in ["readinessProbe", "livenessProbe"] {
                if let Some(probe_port) = container[probe]["httpGet"]["port"].as_u64() {
                    assert_eq!(probe_port, u64::from(port), "{name}'s {probe}");
                }
            }
            let role = resource["spec"]["template"]["metadata"]["labels"]["role"]
                .as_str()
                .unwrap();
            assert_eq!(role, command, "{name}'s role label is its role");
            roles.insert(command.to_owned(), name.clone());
            let replicas = resource["spec"]["replicas"].as_u64().unwrap_or(1);
            if ["projector", "publisher"].contains(&command) {
                assert!(
                    replicas >= 2,
                    "{name} runs {replicas} replica(s): two for fail-over"
                );
            }
        }
    }
    assert_eq!(
        roles.keys().cloned().collect::<BTreeSet<_>>(),
        split_roles(),
        "Kubernetes runs exactly the split roles"
    );

    // The gateway's upstreams are the Services of the two API roles, on the roles' port.
    let gateway = &resources[&("Deployment".into(), "marketing-gateway".into())];
    let env: BTreeMap<String, String> = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (variable, role) in [("COMMAND_API", "command-api"), ("QUERY_API", "query-api")] {
        let (host, service_port) = host_port(&env[variable]);
        let service_name = host.split('.').next().unwrap();
        let service = &resources[&("Service".into(), service_name.into())];
        assert_eq!(
            service["spec"]["selector"]["role"], role,
            "{variable} selects {role}"
        );
        let mapping = &service["spec"]["ports"][0];
        assert_eq!(
            mapping["port"], service_port,
            "{variable}'s port is the Service's"
        );
        assert_eq!(
            mapping["targetPort"], port,
            "{service_name} targets the roles' port"
        );
    }
    let generated = &yaml("kustomization.yaml")[0]["configMapGenerator"][0];
    let volume = &gateway["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"];
    assert_eq!(
        &generated["name"], volume,
        "the gateway mounts the generated template"
    );
    assert!(generated["files"][0]
        .as_str()
        .unwrap()
        .ends_with("=gateway/default.conf.template"));
}

/// The gateway's rule, read from its template: the method map, and the path
/// prefixes that go to the command API whatever the method.
struct GatewayRule {
    to_query: BTreeSet<String>,
    command_prefixes: Vec<String>,
}

impl GatewayRule {
    fn read() -> Self {
        let template = read("gateway/default.conf.template");
        let map = template
            .split("map $request_method $marketing_by_method {")
            .nth(1)
            .and_then(|rest| rest.split("\n}").next())
            .expect("the template maps methods to upstreams");
        let mut to_query = BTreeSet::new();
        for line in map.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (method, upstream) = line
                .trim_end_matches(';')
                .split_once(char::is_whitespace)
                .unwrap();
            match (method, upstream.trim()) {
                ("default", upstream) => assert_eq!(upstream, "${COMMAND_API}"),
                (method, "${QUERY_API}") => {
                    to_query.insert(method.to_owned());
                }
                (method, upstream) => assert_eq!(upstream, "${COMMAND_API}", "{method}"),
            }
        }
        let command_prefixes = template
            .split("location ^~ ")
            .skip(1)
            .filter(|block| {
                block
                    .split("\n    }")
                    .next()
                    .unwrap()
                    .contains("$marketing_commands")
            })
            .map(|block| block.split_whitespace().next().unwrap().to_owned())
            .collect();
        Self {
            to_query,
            command_prefixes,
        }
    }

    fn role(&self, method: &str, path: &str) -> Role {
        if self.command_prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            Role::CommandApi
        } else if self.to_query.contains(method) {
            Role::QueryApi
        } else {
            Role::CommandApi
        }
    }
}

#[tokio::test]
async fn the_gateway_sends_every_operation_to_a_role_that_serves_it() {
    let rule = GatewayRule::read();
    assert_eq!(
        rule.to_query,
        BTreeSet::from(["GET".to_owned(), "HEAD".to_owned()])
    );
    let db = test_support::fresh_database().await;
    marketing::startup::ensure_database(&db.url).await.unwrap();
    marketing::startup::migrate(&db.url).await.unwrap();
    let mut bases = BTreeMap::new();
    let mut stops = Vec::new();
    for role in [Role::CommandApi, Role::QueryApi] {
        let app = Application::build(Config::for_database(&db.url), role)
            .await
            .unwrap();
        bases.insert(format!("{role:?}"), format!("http://127.0.0.1:{}", app.port()));
        stops.push(app.shutdown_token());
        tokio::spawn(app.run_until_stopped());
    }
    let client = reqwest::Client::new();
    let document = serde_json::to_value(marketing::openapi::document()).unwrap();
    let mut checked = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        // Any id fills a path parameter: without a key, a served route
        // answers 401 before it looks anything up.
        let path = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "00000000-0000-0000-0000-000000000000"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in keys(operations) {
            let method = method.to_uppercase();
            let role = rule.role(&method, template);
            let url = format!("{}{path}", bases[&format!("{role:?}")]);
            let response = client
                .request(method.parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                401,
                "{method} {template} goes to {role:?}, which does not serve it"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "every operation was checked ({checked})");
    // Outside the API: health, readiness, metrics, the document, on every role.
    for base in bases.values() {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let status = client.get(format!("{base}{path}")).send().await.unwrap().status();
            assert_eq!(status, 200, "GET {path} on {base}");
        }
    }
    for stop in stops {
        stop.cancel();
    }
}
