//! The HTTP side of `kubectl approve ui`: the router, the gate in front of it, the pages, the
//! event stream and the decision form. Every read and write goes through the person's own
//! client (their kubeconfig's credentials); this process holds no authority of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::Stream;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow, Via};
use tollgate_core::approval::Workflow;

use super::history::{self, Filter};
use super::live::Live;
use super::pages::{Flash, HistoryPage, InboxFragment, InboxPage, MessagePage, PhaseOption, RequestFragment, RequestPage, Shell};
use super::view::{self, Caller, Rows};
use crate::approve::decide;
use crate::approve::errors::{self, Doing};
use tollgate_core::approval::browser::{self as gate, Admission, Facts, Secrets};

/// No script but this server's own file, no inline script or style, no frames, forms only to
/// this server: whatever the agent managed to put in a page, the browser runs none of it.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the one-time link answers: on to the inbox, with no script (a meta refresh).
const ENTER: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Tollgate approvals</title></head><body><a href=\"/\">Continue to your approvals</a></body></html>";

const UI_JS: &str = include_str!("../../../assets/ui.js");
const UI_CSS: &str = include_str!("../../../assets/ui.css");
/// The history's phase filter: (value, label).
const PHASES: [(&str, &str); 6] =
    [("", "any but pending"), ("Approved", "Approved"), ("Denied", "Denied"), ("Expired", "Expired"), ("Cancelled", "Cancelled"), ("Pending", "Pending")];

pub struct Ui {
    pub client: Client,
    pub caller: Caller,
    pub shell: Shell,
    /// Why the person sees no requests at all (listing them was refused), in plain words.
    pub list_error: Option<String>,
    pub live: Option<Live>,
    /// The server's own name, `<random hex>.localhost`: its cookie goes to no other server.
    pub host: String,
    pub port: u16,
    /// The printed URL's one-time secret, until it is used.
    pub token: Mutex<Option<String>>,
    pub session: String,
    pub csrf: String,
    pub flash: Mutex<HashMap<String, Flash>>,
}

type Shared = Arc<Ui>;

pub fn router(ui: Shared) -> Router {
    Router::new()
        .route("/", get(inbox))
        .route("/fragment/inbox", get(inbox_fragment))
        .route("/r/{ns}/{name}", get(request_page))
        .route("/fragment/r/{ns}/{name}", get(request_fragment))
        .route("/r/{ns}/{name}/decide", post(decide_form))
        .route("/history", get(history))
        .route("/events", get(events))
        .route("/static/ui.js", get(|| async { asset("text/javascript; charset=utf-8", UI_JS) }))
        .route("/static/ui.css", get(|| async { asset("text/css; charset=utf-8", UI_CSS) }))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .layer(middleware::from_fn(secure_headers))
        .with_state(ui)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn html(status: StatusCode, page: Result<String, askama::Error>) -> Response {
    match page {
        Ok(body) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the page could not be rendered: {e}")).into_response(),
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    html(status, MessagePage { text }.render())
}

async fn secure_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        // Not `no-referrer`: with it, browsers send `Origin: null` on the page's own form posts,
        // which the gate must refuse. The page links nowhere else anyway.
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

fn cookie_name(port: u16) -> String {
    // The host name already keeps it from other servers; the port in the name keeps it apart
    // from an earlier run's in the same browser.
    format!("tollgate-ui-{port}")
}

fn cookies<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter_map(|(k, v)| (k == name).then_some(v))
        .collect()
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

/// The gate's answer for `req`; a one-time secret it accepts is spent here, under the lock, so
/// two requests racing with it cannot both win.
fn admission(ui: &Ui, req: &Request, cookie_name: &str) -> Admission {
    let headers = req.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let cookies = cookies(headers, cookie_name);
    let facts = Facts {
        method_is_safe: req.method() == Method::GET || req.method() == Method::HEAD,
        host: text(header::HOST),
        origin: text(header::ORIGIN),
        sec_fetch_site: headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        cookies: &cookies,
        token: query_token(req.uri().query()),
    };
    let mut token = ui.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let answer = gate::admit(&facts, &Secrets { host: &ui.host, port: ui.port, token: token.as_deref(), session: &ui.session });
    if answer == Admission::Exchange {
        *token = None;
    }
    answer
}

async fn guard(State(ui): State<Shared>, req: Request, next: Next) -> Response {
    let name = cookie_name(ui.port);
    match admission(&ui, &req, &name) {
        Admission::Allow => next.run(req).await,
        Admission::Exchange => {
            // A page that goes on to the inbox itself, not a redirect: the link may have been
            // reached through a cross-site navigation (the launcher file), and a redirect in that
            // chain would not carry a SameSite=Strict cookie; this page's own navigation does.
            // Always to the inbox: a path of the link's choosing would be an open redirect.
            let set = format!("{name}={}; HttpOnly; SameSite=Strict; Path=/", ui.session);
            let mut res = html(StatusCode::OK, Ok(ENTER.to_owned()));
            if let Ok(v) = HeaderValue::from_str(&set) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Admission::Refuse(r) => message(StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN), &r.to_string()),
    }
}

fn workflow_of(ui: &Ui, ar: &ApprovalRequest) -> Option<Workflow> {
    let store = ui.live.as_ref()?.workflows.as_ref()?;
    let ns = ar.metadata.namespace.as_deref()?;
    let wf: Arc<ApprovalWorkflow> = store.get(&ObjectRef::new(&ar.spec.workflow).within(ns))?;
    Some(Workflow::from_spec(&ar.spec.workflow, &wf.spec))
}

fn rows(ui: &Ui) -> Rows {
    let Some(live) = &ui.live else {
        return Rows { error: ui.list_error.clone(), ..Rows::default() };
    };
    let items: Vec<ApprovalRequest> = live.requests.state().iter().map(|a| (**a).clone()).collect();
    view::inbox(&items, &ui.caller, |ar| workflow_of(ui, ar), jiff::Timestamp::now())
}

async fn inbox(State(ui): State<Shared>) -> Response {
    let rows = rows(&ui);
    html(StatusCode::OK, InboxPage { shell: &ui.shell, rows: &rows }.render())
}

async fn inbox_fragment(State(ui): State<Shared>) -> Response {
    let rows = rows(&ui);
    html(StatusCode::OK, InboxFragment { rows: &rows }.render())
}

/// The request as the API server has it now, read as the person.
async fn fetch(ui: &Ui, ns: &str, name: &str) -> Result<ApprovalRequest, String> {
    // A decoded path segment could hold `/` or `..`: only object names go on to the API server.
    if !view::is_object_name(ns) || !view::is_object_name(name) {
        return Err(format!("no approval request {ns:?}/{name:?}: not a Kubernetes object name"));
    }
    let api: Api<ApprovalRequest> = Api::namespaced(ui.client.clone(), ns);
    let cx = errors::Context { namespace: ns, user: Some(&ui.caller.user), doing: Doing::Read { name } };
    api.get(name).await.map_err(|e| errors::explain(&e, &cx))
}

/// The request's view as of now, or the page that says why there is none.
async fn request_view(ui: &Ui, ns: &str, name: &str) -> Result<view::RequestView, Response> {
    let ar = fetch(ui, ns, name).await.map_err(|e| message(StatusCode::NOT_FOUND, &e))?;
    Ok(view::request(&ar, &ui.caller, workflow_of(ui, &ar).as_ref(), jiff::Timestamp::now()))
}

async fn request_page(State(ui): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let v = match request_view(&ui, &ns, &name).await {
        Ok(v) => v,
        Err(page) => return page,
    };
    let flash = ui.flash.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&format!("{ns}/{name}"));
    html(StatusCode::OK, RequestPage { shell: &ui.shell, r: &v, flash, csrf: &ui.csrf }.render())
}

async fn request_fragment(State(ui): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match request_view(&ui, &ns, &name).await {
        Ok(v) => html(StatusCode::OK, RequestFragment { r: &v }.render()),
        Err(page) => page,
    }
}

#[derive(Debug, serde::Deserialize)]
struct DecideForm {
    verdict: String,
    #[serde(default)]
    reason: String,
    csrf: String,
    /// The request the page showed; a form without it is refused (after the token check).
    #[serde(default)]
    uid: String,
}

async fn decide_form(State(ui): State<Shared>, Path((ns, name)): Path<(String, String)>, Form(form): Form<DecideForm>) -> Response {
    if !gate::same_secret(&form.csrf, &ui.csrf) {
        return message(StatusCode::FORBIDDEN, "refused: the form did not come from this page");
    }
    // Before the names go into a `Location` (one with a line break would not be a header).
    if !view::is_object_name(&ns) || !view::is_object_name(&name) {
        return message(StatusCode::NOT_FOUND, "no such approval request");
    }
    let Some(verdict) = view::verdict(&form.verdict) else {
        return message(StatusCode::BAD_REQUEST, "the decision must be approve or deny");
    };
    let flash = match decide_as(&ui, &ns, &name, &form.uid, verdict, &form.reason).await {
        Ok(line) => Flash { kind: "ok", text: line },
        Err(e) => Flash { kind: "error", text: e },
    };
    ui.flash.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(format!("{ns}/{name}"), flash);
    Redirect::to(&format!("/r/{ns}/{name}")).into_response()
}

/// Appends the person's decision, as `kubectl approve` does; the line to show, or why not.
async fn decide_as(ui: &Ui, ns: &str, name: &str, uid: &str, verdict: tollgate_api::Verdict, reason: &str) -> Result<String, String> {
    let ar = fetch(ui, ns, name).await?;
    let requires = workflow_of(ui, &ar).is_some_and(|w| w.require_reason);
    let reason = Some(reason).filter(|r| !r.trim().is_empty());
    let decision =
        tollgate_core::approval::decision::person_decision(&ui.caller.user, verdict, reason, Via::Browser, jiff::Timestamp::now(), &ar.spec.workflow, requires)
            .map_err(|e| e.to_string())?;
    let api: Api<ApprovalRequest> = Api::namespaced(ui.client.clone(), ns);
    let cx = errors::Context { namespace: ns, user: Some(&ui.caller.user), doing: Doing::Decide { name } };
    let fresh = decide::append(&api, name, Some(uid), &ui.caller.user, &decision, &cx, |_| {}).await.map_err(|e| e.to_string())?;
    Ok(crate::approve::format::decided_line(verdict, &fresh))
}

async fn history(State(ui): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let items = ui.live.as_ref().map(|live| live.requests.state()).unwrap_or_default();
    let page = history::page(&items, &filter);
    let phases: Vec<PhaseOption> = PHASES.iter().map(|&(value, label)| PhaseOption { value, label, selected: filter.phase == value }).collect();
    html(StatusCode::OK, HistoryPage { shell: &ui.shell, filter: &filter, phases: &phases, page: &page, error: ui.list_error.clone() }.render())
}

async fn events(State(ui): State<Shared>) -> Response {
    let Some(live) = &ui.live else {
        return message(StatusCode::NOT_FOUND, "nothing to watch");
    };
    Sse::new(changes(live.changes.clone())).keep_alive(KeepAlive::default()).into_response()
}

fn changes(rx: tokio::sync::watch::Receiver<u64>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let n = *rx.borrow_and_update();
        Some((Ok(Event::default().event("changed").data(n.to_string())), rx))
    })
}
