//! The API before and after its models load, and while draining, called in-process: /health
//! answers 503 while loading (with the status saying so) and while draining, 200 when ready;
//! model routes answer 503 with Retry-After until then; the models cannot be set twice.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use edgecut_server::api::{Api, ApiConfig, ApiModel};
use tower::ServiceExt;

async fn get(api: &Api, path: &str) -> (StatusCode, Option<String>, String) {
    let r = api
        .router()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, retry, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn health_follows_loading_ready_and_draining() {
    let api = Api::new(ApiConfig::default(), None);
    let (s, _, body) = get(&api, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("loading"), "{body}");
    let (s, retry, body) = get(&api, "/v1/models").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(body.contains("loading"), "{body}");

    api.ready(Vec::<ApiModel>::new()).unwrap();
    let (s, _, body) = get(&api, "/health").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = get(&api, "/v1/models").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(api.ready(Vec::new()).is_err(), "the models are set once");

    api.drain();
    let (s, _, body) = get(&api, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting down"), "{body}");
}
