//! The web console is served by `serve` and by the query role (where the
//! reads it makes are), with its policy; the browser test of the console
//! itself is `deploy/local/console-test.sh` (docs/console.md).

use marketing::startup::Role;
use marketing_e2e::{spawn_app, RunningApp};

#[tokio::test]
async fn the_console_is_served_by_serve_and_the_query_role_only() {
    let app = spawn_app().await;
    let queries = RunningApp::start(&app.db.url, Role::QueryApi).await;
    let commands = RunningApp::start(&app.db.url, Role::CommandApi).await;
    let client = reqwest::Client::new();
    for address in [app.app.address.as_str(), queries.address.as_str()] {
        let page = client.get(format!("{address}/console")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.headers()["content-security-policy"],
            console::CONTENT_SECURITY_POLICY
        );
        assert!(page.text().await.unwrap().contains("/console/assets/app.js"));
        let script = client
            .get(format!("{address}/console/assets/app.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(script.status(), 200);
        assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
        let vocabulary: serde_json::Value = client
            .get(format!("{address}/console/vocabulary.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            vocabulary["campaign_transitions"]["paused"],
            serde_json::json!(["active", "completed", "cancelled"])
        );
    }
    let absent = client
        .get(format!("{}/console", commands.address))
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), 404);
    queries.stop().await;
    commands.stop().await;
}
