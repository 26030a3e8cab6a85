//! Runs `examples/ci/klsync-pr-comment.py` against a stub of the GitHub REST API.
//!
//! The stub keeps issue comments in memory, paginates them with `Link` headers like GitHub,
//! requires a token and a User-Agent, rejects bodies over 65,536 characters and can inject
//! failures. Each test checks what a reviewer sees on the pull request afterwards.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const TOKEN: &str = "ghs_stubTokenThatMustNeverBePrinted42";
const MARKER: &str = "<!-- klsync-plan -->";
const REPO: &str = "acme/marketing";
const PR: u64 = 7;
/// GitHub's documented maximum comment length.
const GITHUB_BODY_LIMIT: usize = 65_536;

#[derive(Debug, Clone)]
struct Comment {
    id: u64,
    issue: u64,
    body: String,
    login: String,
    user_type: &'static str,
}

#[derive(Debug, Default)]
struct Stub {
    base: String,
    comments: Vec<Comment>,
    next_id: u64,
    /// The login `GET /user` reports; `None` answers 403 like the Actions GITHUB_TOKEN.
    token_login: Option<String>,
    /// The login that new comments are written as.
    writer_login: String,
    /// Statuses returned, in order, before any request is served normally.
    faults: VecDeque<StatusCode>,
    /// Requests answered with GitHub's secondary rate limit 403 before serving normally.
    rate_limited: usize,
    /// Answer POST and PATCH with 403, like a read-only token.
    read_only: bool,
    requests: Vec<(Method, String)>,
}

impl Stub {
    fn actions() -> Self {
        Stub {
            next_id: 1000,
            writer_login: "github-actions[bot]".into(),
            ..Stub::default()
        }
    }

    fn add(&mut self, login: &str, user_type: &'static str, body: &str) -> u64 {
        self.next_id += 1;
        self.comments.push(Comment {
            id: self.next_id,
            issue: PR,
            body: body.into(),
            login: login.into(),
            user_type,
        });
        self.next_id
    }

    fn json(&self, c: &Comment) -> Value {
        json!({
            "id": c.id,
            "body": c.body,
            "user": { "login": c.login, "type": c.user_type },
            "html_url": format!("https://github.com/{REPO}/pull/{}#issuecomment-{}", c.issue, c.id),
        })
    }

    fn count(&self, method: &Method) -> usize {
        self.requests.iter().filter(|(m, _)| m == method).count()
    }
}

type Shared = Arc<Mutex<Stub>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Stub> {
    shared.lock().expect("stub state poisoned")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// The checks GitHub makes before routing: token, User-Agent, then injected faults.
fn gate(stub: &mut Stub, method: &Method, uri: String, headers: &HeaderMap) -> Option<Response> {
    stub.requests.push((method.clone(), uri));
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authorized = matches!(auth, Some(a)
        if a == format!("Bearer {TOKEN}") || a == format!("token {TOKEN}"));
    if !authorized {
        return Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if !headers.contains_key(header::USER_AGENT) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        ));
    }
    if stub.rate_limited > 0 {
        stub.rate_limited -= 1;
        let mut response = error(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "0".parse().expect("header value"));
        return Some(response);
    }
    stub.faults
        .pop_front()
        .map(|status| error(status, "Server Error"))
}

#[derive(Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn user(State(shared): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    let mut stub = lock(&shared);
    if let Some(r) = gate(&mut stub, &method, "/user".into(), &headers) {
        return r;
    }
    match &stub.token_login {
        Some(login) => Json(json!({ "login": login, "type": "User" })).into_response(),
        None => error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ),
    }
}

async fn list(
    State(shared): State<Shared>,
    UrlPath((owner, repo, issue)): UrlPath<(String, String, u64)>,
    Query(q): Query<PageQuery>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let mut stub = lock(&shared);
    let path = format!("/repos/{owner}/{repo}/issues/{issue}/comments");
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    if let Some(r) = gate(&mut stub, &method, format!("{path}?page={page}"), &headers) {
        return r;
    }
    if format!("{owner}/{repo}") != REPO {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let all: Vec<Value> = stub
        .comments
        .iter()
        .filter(|c| c.issue == issue)
        .map(|c| stub.json(c))
        .collect();
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link = |p: usize, rel: &str| {
        format!(
            "<{}{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"",
            stub.base
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
        links.push(link(page - 1, "prev"));
    }
    let mut response = Json(Value::Array(items)).into_response();
    if !links.is_empty() {
        let value = links.join(", ").parse().expect("valid Link header");
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// The JSON body GitHub accepts for a comment: an object with a string `body` within the limit.
fn comment_body(headers: &HeaderMap, raw: &str) -> Result<String, (StatusCode, &'static str)> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type"));
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw) else {
        return Err((StatusCode::BAD_REQUEST, "Problems parsing JSON"));
    };
    let Some(Value::String(body)) = map.get("body") else {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "Invalid request."));
    };
    if body.chars().count() > GITHUB_BODY_LIMIT {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Body is too long (maximum is 65536 characters)",
        ));
    }
    Ok(body.clone())
}

async fn create(
    State(shared): State<Shared>,
    UrlPath((owner, repo, issue)): UrlPath<(String, String, u64)>,
    method: Method,
    headers: HeaderMap,
    raw: String,
) -> Response {
    let mut stub = lock(&shared);
    let uri = format!("/repos/{owner}/{repo}/issues/{issue}/comments");
    if let Some(r) = gate(&mut stub, &method, uri, &headers) {
        return r;
    }
    if stub.read_only {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let body = match comment_body(&headers, &raw) {
        Ok(body) => body,
        Err((status, message)) => return error(status, message),
    };
    let writer = stub.writer_login.clone();
    let user_type = if writer.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    let id = stub.add(&writer, user_type, &body);
    let created = stub.comments.last().expect("just added");
    debug_assert_eq!(created.id, id);
    (StatusCode::CREATED, Json(stub.json(created))).into_response()
}

async fn update(
    State(shared): State<Shared>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    method: Method,
    headers: HeaderMap,
    raw: String,
) -> Response {
    let mut stub = lock(&shared);
    let uri = format!("/repos/{owner}/{repo}/issues/comments/{id}");
    if let Some(r) = gate(&mut stub, &method, uri, &headers) {
        return r;
    }
    if stub.read_only {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let body = match comment_body(&headers, &raw) {
        Ok(body) => body,
        Err((status, message)) => return error(status, message),
    };
    let writer = stub.writer_login.clone();
    let Some(index) = stub.comments.iter().position(|c| c.id == id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    // GitHub only lets the author edit through this endpoint with a bot token.
    if stub.comments[index].login != writer {
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    stub.comments[index].body = body;
    let json = stub.json(&stub.comments[index]);
    Json(json).into_response()
}

/// A running stub; dropping it stops the server.
struct Server {
    base: String,
    state: Shared,
    _stop: oneshot::Sender<()>,
}

impl Server {
    fn start(stub: Stub) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stub");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state: Shared = Arc::new(Mutex::new(Stub {
            base: base.clone(),
            ..stub
        }));
        let app = Router::new()
            .route("/user", get(user))
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                get(list).post(create),
            )
            .route("/repos/{owner}/{repo}/issues/comments/{id}", patch(update))
            .with_state(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("stub server");
            });
        });
        Server {
            base,
            state,
            _stop: stop,
        }
    }

    fn stub(&self) -> MutexGuard<'_, Stub> {
        lock(&self.state)
    }

    fn klsync_comments(&self) -> Vec<Comment> {
        self.stub()
            .comments
            .iter()
            .filter(|c| c.body.starts_with(MARKER))
            .cloned()
            .collect()
    }

    /// Runs the script with `plan` as the markdown file and returns its output.
    fn run(&self, plan: &str) -> Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan_file = dir.path().join("plan.md");
        std::fs::write(&plan_file, plan).expect("write plan");
        let output = run_script(
            &[plan_file.as_os_str().to_str().unwrap(), "--pr", "7"],
            |cmd| {
                cmd.env("GITHUB_API_URL", &self.base)
                    .env("GITHUB_TOKEN", TOKEN)
                    .env("GITHUB_REPOSITORY", REPO);
            },
        );
        assert_no_token(&output);
        output
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/klsync-pr-comment.py")
}

fn run_script(args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(script()).args(args);
    // The test may itself run inside GitHub Actions: keep its variables out of the script.
    for var in [
        "GITHUB_TOKEN",
        "GITHUB_REPOSITORY",
        "GITHUB_API_URL",
        "GITHUB_OUTPUT",
        "GITHUB_RUN_ID",
        "GITHUB_SERVER_URL",
        "PR_NUMBER",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("KLSYNC_COMMENT_RETRY_DELAY", "0.05");
    configure(&mut cmd);
    cmd.output()
        .expect("python3 must be installed to run the CI script tests")
}

fn text(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_no_token(output: &Output) {
    let all = text(output);
    assert!(
        !all.contains(TOKEN),
        "the token leaked into the output:\n{all}"
    );
    assert!(
        !all.contains("stubToken"),
        "part of the token leaked:\n{all}"
    );
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "script failed:\n{}", text(output));
}

#[test]
fn first_run_creates_the_comment_and_the_next_run_updates_it() {
    let mut stub = Stub::actions();
    let human = stub.add("alice", "User", "Looks good, but check the VIP segment.");
    let server = Server::start(stub);

    let first = server.run("## klsync plan\n\n+ list `Newsletter`\n");
    assert_success(&first);
    let created = server.klsync_comments();
    assert_eq!(created.len(), 1, "one klsync comment after the first run");
    assert_eq!(
        created[0].body,
        format!("{MARKER}\n## klsync plan\n\n+ list `Newsletter`\n")
    );
    assert_eq!(created[0].login, "github-actions[bot]");
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("created comment"),
        "{}",
        text(&first)
    );

    let second = server.run("## klsync plan\n\n~ segment `VIP`\n");
    assert_success(&second);
    let updated = server.klsync_comments();
    assert_eq!(updated.len(), 1, "still exactly one klsync comment");
    assert_eq!(updated[0].id, created[0].id, "the same comment was edited");
    assert!(updated[0].body.contains("~ segment `VIP`"));
    assert!(!updated[0].body.contains("Newsletter"), "old plan replaced");

    let stub = server.stub();
    assert_eq!(stub.comments.len(), 2);
    let alice = stub.comments.iter().find(|c| c.id == human).unwrap();
    assert_eq!(alice.body, "Looks good, but check the VIP segment.");
    assert_eq!(stub.count(&Method::POST), 1);
    assert_eq!(stub.count(&Method::PATCH), 1);
}

#[test]
fn finds_the_comment_on_the_second_page() {
    let mut stub = Stub::actions();
    for i in 0..150 {
        stub.add(
            &format!("reviewer{}", i % 3),
            "User",
            &format!("comment {i}"),
        );
    }
    let ours = stub.add("github-actions[bot]", "Bot", &format!("{MARKER}\nold plan"));
    let server = Server::start(stub);

    let output = server.run("new plan\n");
    assert_success(&output);
    let stub = server.stub();
    assert_eq!(stub.comments.len(), 151, "no comment added");
    assert_eq!(stub.count(&Method::POST), 0);
    let edited = stub.comments.iter().find(|c| c.id == ours).unwrap();
    assert_eq!(edited.body, format!("{MARKER}\nnew plan\n"));
    let pages: Vec<&str> = stub
        .requests
        .iter()
        .filter(|(m, uri)| m == Method::GET && uri.contains("/comments"))
        .map(|(_, uri)| uri.as_str())
        .collect();
    assert_eq!(
        pages,
        [
            "/repos/acme/marketing/issues/7/comments?page=1",
            "/repos/acme/marketing/issues/7/comments?page=2"
        ]
    );
    for (i, c) in stub.comments.iter().take(150).enumerate() {
        assert_eq!(c.body, format!("comment {i}"), "other comments untouched");
    }
}

#[test]
fn a_person_quoting_the_marker_does_not_get_their_comment_overwritten() {
    let mut stub = Stub::actions();
    let pasted = format!("{MARKER}\nI copied the plan here to discuss it");
    let human = stub.add("bob", "User", &pasted);
    let server = Server::start(stub);

    assert_success(&server.run("plan\n"));
    let stub = server.stub();
    assert_eq!(stub.comments.len(), 2);
    assert_eq!(
        stub.comments.iter().find(|c| c.id == human).unwrap().body,
        pasted
    );
    assert_eq!(stub.count(&Method::PATCH), 0);
}

#[test]
fn a_user_token_updates_only_its_own_comment() {
    let mut stub = Stub::actions();
    stub.token_login = Some("deploy-bot-user".into());
    stub.writer_login = "deploy-bot-user".into();
    // Another automation's marker comment (a Bot) must not be taken for ours.
    stub.add("github-actions[bot]", "Bot", &format!("{MARKER}\nother"));
    let ours = stub.add("deploy-bot-user", "User", &format!("{MARKER}\nold"));
    let server = Server::start(stub);

    assert_success(&server.run("fresh\n"));
    let stub = server.stub();
    assert_eq!(stub.comments.len(), 2);
    assert_eq!(stub.comments[0].body, format!("{MARKER}\nother"));
    let edited = stub.comments.iter().find(|c| c.id == ours).unwrap();
    assert_eq!(edited.body, format!("{MARKER}\nfresh\n"));
}

#[test]
fn an_over_long_plan_is_truncated_under_the_limit_with_a_note() {
    let server = Server::start(Stub::actions());
    // Multi-byte and astral characters make code points, UTF-16 units and bytes all differ.
    let mut plan = String::from("## klsync plan\n\n```diff\n");
    for i in 0..6_000 {
        plan.push_str(&format!(
            "+ profile {i:05} ✉ 🎉 subscribed to list Newsletter\n"
        ));
    }
    plan.push_str("```\n");
    let output = server.run(&plan);
    assert_success(&output);

    let comments = server.klsync_comments();
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(body.starts_with(&format!("{MARKER}\n## klsync plan")));
    assert!(body.chars().count() <= GITHUB_BODY_LIMIT);
    assert!(body.encode_utf16().count() <= GITHUB_BODY_LIMIT);
    assert!(body.contains("Plan truncated"), "note missing");
    assert!(body.contains("+ profile 00000"), "start of the plan kept");
    assert!(!body.contains("+ profile 05999"), "end of the plan cut");
    let fences = body.lines().filter(|l| l.starts_with("```")).count();
    assert_eq!(fences % 2, 0, "the cut code block is closed");
    let last_plan_line = body.lines().rfind(|l| l.starts_with("+ profile")).unwrap();
    assert!(
        last_plan_line.ends_with("Newsletter"),
        "cut at a line boundary: {last_plan_line:?}"
    );
}

#[test]
fn a_forbidden_write_fails_with_a_clear_message() {
    let mut stub = Stub::actions();
    stub.read_only = true;
    let server = Server::start(stub);

    let output = server.run("plan\n");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert!(
        stderr.contains("Resource not accessible by integration"),
        "{stderr}"
    );
    assert!(stderr.contains("pull-requests: write"), "{stderr}");
    assert!(server.stub().comments.is_empty());
    // A 403 that is not a rate limit is final: exactly one attempt.
    assert_eq!(server.stub().count(&Method::POST), 1);
}

#[test]
fn server_errors_are_retried() {
    let mut stub = Stub::actions();
    stub.faults = VecDeque::from([StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]);
    let server = Server::start(stub);

    let output = server.run("plan\n");
    assert_success(&output);
    assert_eq!(server.klsync_comments().len(), 1);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("retrying"),
        "{}",
        text(&output)
    );
}

#[test]
fn secondary_rate_limits_are_waited_out() {
    let mut stub = Stub::actions();
    // Both hit the /user probe, where a plain 403 is an expected answer; a rate limit is not.
    stub.rate_limited = 2;
    let server = Server::start(stub);

    let output = server.run("plan\n");
    assert_success(&output);
    assert_eq!(server.klsync_comments().len(), 1);
    let stub = server.stub();
    let user_calls = stub
        .requests
        .iter()
        .filter(|(_, uri)| uri == "/user")
        .count();
    assert_eq!(user_calls, 3, "the rate-limited /user probe was retried");
}

#[test]
fn persistent_server_errors_give_up_with_an_error() {
    let mut stub = Stub::actions();
    stub.faults = std::iter::repeat_n(StatusCode::INTERNAL_SERVER_ERROR, 20).collect();
    let server = Server::start(stub);

    let output = server.run("plan\n");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 500"));
    assert!(server.stub().comments.is_empty());
}

#[test]
fn a_wrong_token_is_reported_without_echoing_it() {
    let server = Server::start(Stub::actions());
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.md");
    std::fs::write(&plan, "plan\n").unwrap();
    let wrong = "ghp_wrongTokenValue999";
    let output = run_script(&[plan.to_str().unwrap(), "--pr", "7"], |cmd| {
        cmd.env("GITHUB_API_URL", &server.base)
            .env("GITHUB_TOKEN", wrong)
            .env("GITHUB_REPOSITORY", REPO);
    });
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains("HTTP 401") && all.contains("Bad credentials"),
        "{all}"
    );
    assert!(!all.contains(wrong), "token echoed:\n{all}");
}

#[test]
fn missing_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.md");
    std::fs::write(&plan, "plan\n").unwrap();
    let no_token = run_script(&[plan.to_str().unwrap(), "--pr", "7"], |cmd| {
        cmd.env("GITHUB_REPOSITORY", REPO);
    });
    assert_eq!(no_token.status.code(), Some(2), "{}", text(&no_token));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("GITHUB_TOKEN"));

    let no_pr = run_script(&[plan.to_str().unwrap()], |cmd| {
        cmd.env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_TOKEN", TOKEN);
    });
    assert_eq!(no_pr.status.code(), Some(2), "{}", text(&no_pr));
    assert!(String::from_utf8_lossy(&no_pr.stderr).contains("PR_NUMBER"));
    assert_no_token(&no_pr);
}

#[test]
fn the_pull_request_number_can_come_from_the_environment() {
    let server = Server::start(Stub::actions());
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.md");
    std::fs::write(&plan, "plan from env\n").unwrap();
    let outputs = dir.path().join("github_output");
    let output = run_script(&[plan.to_str().unwrap()], |cmd| {
        cmd.env("GITHUB_API_URL", &server.base)
            .env("GITHUB_TOKEN", TOKEN)
            .env("GITHUB_REPOSITORY", REPO)
            .env("PR_NUMBER", PR.to_string())
            .env("GITHUB_OUTPUT", &outputs);
    });
    assert_success(&output);
    assert_no_token(&output);
    let comments = server.klsync_comments();
    assert_eq!(comments.len(), 1);
    let written = std::fs::read_to_string(&outputs).unwrap();
    assert!(
        written.contains(&format!("comment-id={}\n", comments[0].id)),
        "{written}"
    );
}

/// Runs the plan workflow's own comment step (its `run:` script and `env:`) in a workspace laid
/// out as the CI guide (docs/ci.md) says, so the step, the script path and the script work together.
fn run_workflow_comment_step(server: &Server, workspace: &Path) -> Output {
    let workflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/klsync-plan.yml");
    let wf: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(workflow).unwrap()).unwrap();
    let step = wf["jobs"]["plan"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str() == Some("Comment the plan on the pull request"))
        .expect("comment step");
    let expressions = [
        ("${{ github.token }}", TOKEN.to_string()),
        ("${{ github.event.pull_request.number }}", PR.to_string()),
        ("${{ github.server_url }}", "https://github.com".to_string()),
        ("${{ github.repository }}", REPO.to_string()),
        ("${{ github.run_id }}", "4242".to_string()),
    ];
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c"])
        .arg(step["run"].as_str().unwrap())
        .current_dir(workspace)
        .env("GITHUB_API_URL", &server.base)
        .env("GITHUB_REPOSITORY", REPO)
        .env("PLAN_SHA", "1111111111111111111111111111111111111111")
        .env("KLSYNC_COMMENT_RETRY_DELAY", "0.05")
        .env_remove("GITHUB_OUTPUT");
    for (key, value) in step["env"].as_mapping().unwrap() {
        let mut value = value.as_str().unwrap().to_string();
        for (expr, resolved) in &expressions {
            value = value.replace(expr, resolved);
        }
        assert!(!value.contains("${{"), "unresolved expression in {value}");
        cmd.env(key.as_str().unwrap(), value);
    }
    let output = cmd.output().expect("bash");
    assert_no_token(&output);
    output
}

#[test]
fn the_plan_workflows_comment_step_creates_then_updates_one_comment() {
    let mut stub = Stub::actions();
    stub.add("alice", "User", "please check");
    let server = Server::start(stub);
    let workspace = tempfile::tempdir().unwrap();
    let scripts = workspace.path().join(".github/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(script(), scripts.join("klsync-pr-comment.py")).unwrap();

    // The job failed before planning: the step still replaces the comment.
    let first = run_workflow_comment_step(&server, workspace.path());
    assert_success(&first);
    let comments = server.klsync_comments();
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("klsync plan did not run"));

    std::fs::write(
        workspace.path().join("comment.md"),
        "## klsync plan\n\n+ list\n",
    )
    .unwrap();
    let second = run_workflow_comment_step(&server, workspace.path());
    assert_success(&second);
    let updated = server.klsync_comments();
    assert_eq!(updated.len(), 1, "one klsync comment");
    assert_eq!(updated[0].id, comments[0].id);
    assert_eq!(
        updated[0].body,
        format!("{MARKER}\n## klsync plan\n\n+ list\n")
    );
    assert_eq!(server.stub().comments.len(), 2);
}
