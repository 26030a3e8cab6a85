//! The API key never reaches logs (ours, reqwest's, hyper's, h2's at TRACE) nor any error's
//! Display or Debug output, against wiremock's canned answers and against the emulator (real
//! JSON:API traffic with injected faults, whose server-side logs are captured too).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use klsync::klaviyo::{ClientConfig, KlaviyoClient, ProfileAttributes};
use klsync::settings::Secret;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::util::SubscriberInitExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "pk_live_SUPERSECRET_7f3a9c";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn api_key_never_appears_in_trace_logs_or_errors() {
    let buffer = Buffer::default();
    // The subscriber is this thread's, not the process's: the other tests of the binary run on
    // threads of their own and neither log here nor see this TRACE subscriber. The test runs on a
    // current-thread runtime, so everything it drives (the client, the emulator's server tasks)
    // runs on this thread and is captured. set_default also installs the (process-wide) `log` →
    // tracing bridge, which hands each record to the current thread's subscriber, so reqwest's
    // `log` records land here.
    let _capture = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(FmtSpan::FULL)
        .with_writer(buffer.clone())
        .finish()
        .set_default();

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/lists"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [{"type": "list", "id": "L1", "attributes": {"name": "a"}, "links": {"self": "x"}}],
            "links": {"self": "x", "next": null}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/L2"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/lists/L2"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errors": [{
            "id": "e", "code": "not_authenticated", "title": "Authentication credentials were not provided.",
            "detail": "Missing or invalid private key.", "source": {"pointer": "/data/"}}]})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/profiles"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/profiles"))
        .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
        .mount(&server)
        .await;

    let mut config = ClientConfig::new(server.uri(), Secret::new(KEY));
    config.backoff_base = Duration::from_millis(5);
    config.max_attempts = 2;
    config.rate_limit_factor = Some(1.0);
    let client = KlaviyoClient::new(config).unwrap();

    let lists: Vec<_> = client.list_lists(true).try_collect().await.unwrap();
    assert_eq!(lists.len(), 1);

    let mut errors = Vec::new();
    errors.push(client.get_list("L2").await.unwrap_err());
    let attributes = ProfileAttributes {
        email: Some(Some("a@example.com".into())),
        ..ProfileAttributes::default()
    };
    errors.push(client.create_profile(&attributes).await.unwrap_err());

    // A transport failure: nothing listens on the port of a dropped listener.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut config = ClientConfig::new(closed, Secret::new(KEY));
    config.backoff_base = Duration::from_millis(5);
    config.max_attempts = 2;
    let offline = KlaviyoClient::new(config).unwrap();
    errors.push(offline.get_list("L1").await.unwrap_err());

    assert_eq!(errors[0].status(), Some(401));
    assert!(
        matches!(errors[2], klsync::klaviyo::ApiError::Transport { .. }),
        "{:?}",
        errors[2]
    );
    for error in &errors {
        let mut chain = format!("{error} | {error:?}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            chain.push_str(&format!(" | {cause} | {cause:?}"));
            source = cause.source();
        }
        assert!(!chain.contains(KEY), "key leaked in error: {chain}");
    }
    assert!(!format!("{client:?} {:?}", client.metrics()).contains(KEY));

    let emulated = exercise_the_emulator().await;
    assert!(
        !emulated.contains(KEY),
        "key leaked in an emulator-path error"
    );

    let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    // The capture really saw the traffic (so the absence check below means something).
    assert!(output.contains("klaviyo.request"), "{output}");
    assert!(output.contains("status=401"), "{output}");
    // Only the emulator answers 201, and only its injected faults drop connections.
    assert!(
        output.contains("status=201"),
        "no emulator traffic captured"
    );
    assert!(
        output.contains("reason=\"transport\"") || output.contains("reason=transport"),
        "no retried reset captured"
    );
    assert!(output.contains("retrying Klaviyo request"), "{output}");
    assert!(output.contains("TRACE"), "no TRACE records captured");
    // reqwest logs through `log` (so this proves the bridge), hyper-util through tracing.
    assert!(output.contains("reqwest::"), "no reqwest records captured");
    assert!(output.contains("hyper_util::"), "no hyper records captured");
    assert!(!output.contains(KEY), "key leaked in logs");
    assert!(
        !output.contains("SUPERSECRET"),
        "part of the key leaked in logs"
    );
}

/// Real traffic against the emulator at TRACE: creates, reads, a member add and an upsert, with
/// injected 500s and resets so retry and recovery paths log too. Returns every error seen, as
/// text, for the leak check.
async fn exercise_the_emulator() -> String {
    let handle = klsync::emulator::start(klsync::emulator::EmulatorConfig {
        rate_limits: klsync::emulator::RateLimitMode::Off,
        faults: Some("500=0.2,reset=0.1".into()),
        seed: 7,
        api_keys: vec![KEY.into()],
        ..klsync::emulator::EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut config = ClientConfig::new(handle.base_url.clone(), Secret::new(KEY));
    config.backoff_base = Duration::from_millis(5);
    config.max_attempts = 8;
    let client = KlaviyoClient::new(config).unwrap();
    let mut seen = String::new();
    for i in 0..10 {
        let outcome = async {
            let list = client.create_list(&format!("list {i}"), None).await?;
            client.get_list(&list.id).await?;
            let attributes = ProfileAttributes {
                email: Some(Some(format!("p{i}@example.com"))),
                ..ProfileAttributes::default()
            };
            let profile = client.upsert_profile(&attributes).await?.profile;
            client.add_profiles_to_list(&list.id, &[profile.id]).await?;
            let _: Vec<_> = client.list_lists(true).try_collect().await?;
            Ok::<(), klsync::klaviyo::ApiError>(())
        }
        .await;
        if let Err(error) = outcome {
            seen.push_str(&format!("{error} {error:?}\n"));
        }
    }
    let stats = handle.stats();
    assert!(
        stats.by_status.contains_key("reset") && stats.by_status.contains_key("500"),
        "faults were injected: {:?}",
        stats.by_status
    );
    handle.shutdown().await;
    seen
}
