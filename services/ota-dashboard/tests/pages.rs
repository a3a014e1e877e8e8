//! Every dashboard page and its errors, through the router (`oneshot`)
//! over the in-process platform on SQLite and on the real PostgreSQL.

use axum::body::Body;
use axum::Router;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use ota_auth::{Role, TokenStore};
use ota_campaign_manager::model::ActionState;
use ota_campaign_manager::status::StatusReport;
use ota_common::peer;
use ota_tests::platform::{vin, Platform};
use tower::ServiceExt;

const SPEC: &str = r#"
name: bms-rollout
target: vehicle.model == "ID.4"
rules:
  - install: { package: bms-fw, version: 2.3.1, ecu: BMS }
rollout:
  waves: [100]
  max_per_minute: 100000
  max_retries: 1
  failure_threshold: { percent: 90, min_finished: 100, action: pause }
"#;

struct Ui {
    router: Router,
    p: Platform,
    tokens: TokenStore,
}

/// A browser's session: its cookie and the CSRF token its forms carry.
struct Browser {
    cookie: String,
    csrf: String,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Ui {
    async fn new(db: ota_tests::db::TestDb) -> Self {
        let p = Platform::new(db).await;
        let tokens = TokenStore::new(p.db.db().clone());
        let api = ota_rest::RestState::new(
            tokens.clone(),
            p.vehicle_peer.clone(),
            p.rule_peer.clone(),
            p.campaign_peer.clone(),
            Default::default(),
        )
        .with_staging(peer::in_process(p.staging.clone().into_server()));
        let health = ota_dashboard::Health::new(vec![ota_dashboard::RoleProbe {
            role: "campaign-manager".into(),
            grpc_service: String::new(),
            place: ota_dashboard::Place::Here,
        }]);
        let router = ota_dashboard::routes(ota_dashboard::DashState::new(api, health));
        Self { router, p, tokens }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f.to_owned())
            }
            None => Body::empty(),
        };
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, path: &str, b: &Browser) -> Answer {
        self.call("GET", path, Some(&b.cookie), None).await
    }

    async fn post(&self, path: &str, b: &Browser, form: &str) -> Answer {
        self.call("POST", path, Some(&b.cookie), Some(form)).await
    }

    /// Logs in with a new token of `role` for the person `name`.
    async fn login(&self, name: &str, role: Role) -> Browser {
        let t = self.tokens.create(name, role).await.unwrap();
        let a = self
            .call(
                "POST",
                "/ui/login",
                None,
                Some(&format!("token={}&next=/ui/health", t.token)),
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.location(), "/ui/health");
        let set = a
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = self.call("GET", "/ui/vehicles", Some(&cookie), None).await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("every page carries the csrf token in its logout form")
            .to_owned();
        Browser { cookie, csrf }
    }

    /// A launched campaign over `n` vehicles of the test fleet.
    async fn campaign(&self, n: u32) -> String {
        self.p.fleet(n).await;
        self.p.package("bms-fw", "2.3.1", vec![]).await;
        self.p.launch(SPEC).await
    }

    /// A failure that stays: the first attempt fails and is retried (one
    /// retry allowed), the second fails too.
    async fn fail(&self, campaign: &str, i: u32, message: &str) {
        self.report(campaign, i, ActionState::Failed, message, 1)
            .await;
        self.report(campaign, i, ActionState::Failed, message, 2)
            .await;
    }

    async fn report(&self, campaign: &str, i: u32, state: ActionState, message: &str, seq: u64) {
        let (action_id, _) = self.p.action_of(campaign, &vin(i)).await;
        let r = self
            .p
            .manager
            .report_status(StatusReport {
                vin: vin(i),
                action_id,
                state,
                progress: 0,
                message: message.into(),
                seq,
                protocol: "http".into(),
            })
            .await
            .unwrap();
        assert!(r.applied, "report of {state:?} for vehicle {i}: {r:?}");
    }
}

async fn without_a_session_pages_redirect_to_login(ui: Ui) {
    for (path, to) in [("/", "/ui/"), ("/ui", "/ui/"), ("/ui/", "/ui/campaigns")] {
        let a = ui.call("GET", path, None, None).await;
        assert_eq!(
            (a.status, a.location()),
            (StatusCode::SEE_OTHER, to),
            "{path}"
        );
    }
    for path in [
        "/ui/campaigns",
        "/ui/health",
        "/ui/vehicles/WVWZZZE1ZMP000001",
        "/ui/nothing",
    ] {
        let a = ui.call("GET", path, None, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            a.location().starts_with("/ui/login?next=/ui/"),
            "{path}: {}",
            a.location()
        );
    }
    let a = ui
        .call("GET", "/ui/campaigns", Some("ota_session=forged"), None)
        .await;
    assert_eq!(
        a.status,
        StatusCode::SEE_OTHER,
        "an unknown session is no session"
    );
    let form = ui
        .call("GET", "/ui/login?next=/ui/health", None, None)
        .await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("name=\"token\""), "{}", form.body);
    let css = ui.call("GET", "/ui/assets/dashboard.css", None, None).await;
    assert_eq!(
        css.status,
        StatusCode::OK,
        "the login page's assets need no session"
    );
}

async fn wrong_tokens_get_a_clear_message(ui: Ui) {
    let a = ui
        .call("POST", "/ui/login", None, Some("token=ota_wrong"))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("not valid"), "{}", a.body);
    assert!(a.headers.get(header::SET_COOKIE).is_none());
    let a = ui.call("POST", "/ui/login", None, Some("token=")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("Enter a token"));
    let admin = ui.tokens.create("root", Role::Admin).await.unwrap();
    let t = ui.tokens.create("gone", Role::Viewer).await.unwrap();
    ui.tokens.revoke(&admin.info, &t.info.id).await.unwrap();
    let a = ui
        .call(
            "POST",
            "/ui/login",
            None,
            Some(&format!("token={}", t.token)),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "a revoked token cannot log in"
    );
    let a = ui
        .call(
            "POST",
            "/ui/login",
            None,
            Some(&format!("token={}&next=https://evil.example/", admin.token)),
        )
        .await;
    assert_eq!(
        a.location(),
        "/ui/campaigns",
        "never sent off the dashboard"
    );
}

async fn logout_ends_the_session_and_needs_the_csrf_token(ui: Ui) {
    let b = ui.login("vera", Role::Viewer).await;
    let a = ui.post("/ui/logout", &b, "").await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "a forged logout is refused"
    );
    assert_eq!(ui.get("/ui/health", &b).await.status, StatusCode::OK);
    let a = ui.post("/ui/logout", &b, &format!("csrf={}", b.csrf)).await;
    assert_eq!(
        (a.status, a.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert!(a.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(ui.get("/ui/health", &b).await.status, StatusCode::SEE_OTHER);
}

async fn campaigns_list_shows_progress_and_filters(ui: Ui) {
    let id = ui.campaign(4).await;
    ui.report(&id, 0, ActionState::Succeeded, "", 1).await;
    let b = ui.login("vera", Role::Viewer).await;
    let a = ui.get("/ui/campaigns", &b).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body.contains("bms-rollout") && a.body.contains(&id),
        "{}",
        a.body
    );
    assert!(a.body.contains("class=\"progress\""));
    assert!(a.body.contains("25.0%"), "1 of 4 finished: {}", a.body);
    assert!(
        a.body.contains("data-refresh=\"5\""),
        "a running campaign refreshes"
    );
    let a = ui.get("/ui/campaigns?state=completed", &b).await;
    assert!(!a.body.contains(&id) && a.body.contains("No campaigns"));
    let a = ui.get("/ui/campaigns?state=running", &b).await;
    assert!(a.body.contains(&id));
    let a = ui.get("/ui/campaigns?state=finished", &b).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body
            .contains("unknown campaign state &quot;finished&quot;"),
        "{}",
        a.body
    );
}

async fn a_campaign_page_shows_waves_triage_and_role_buttons(ui: Ui) {
    let id = ui.campaign(6).await;
    ui.report(&id, 0, ActionState::Succeeded, "", 1).await;
    ui.fail(&id, 1, "E42 checksum mismatch").await;
    ui.fail(&id, 2, "E42 checksum mismatch").await;
    ui.report(&id, 3, ActionState::Rejected, "driver declined", 1)
        .await;
    let viewer = ui.login("vera", Role::Viewer).await;
    let a = ui.get(&format!("/ui/campaigns/{id}"), &viewer).await;
    assert_eq!(a.status, StatusCode::OK);
    for text in [
        "Waves",
        "Failure rate over time",
        "<svg",
        "E42 checksum mismatch",
        "driver declined",
        "By model",
        "ID.4",
        "Audit trail",
        "launch",
    ] {
        assert!(a.body.contains(text), "campaign page lacks {text:?}");
    }
    for button in ["Pause", "Abort", "Retry this group"] {
        assert!(
            !a.body.contains(&format!(">{button}</button>")),
            "a viewer sees no {button} button"
        );
    }
    let a = ui
        .post(
            &format!("/ui/campaigns/{id}/action"),
            &viewer,
            &format!("csrf={}&action=pause", viewer.csrf),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let engineer = ui.login("erin2", Role::Engineer).await;
    let a = ui.get(&format!("/ui/campaigns/{id}"), &engineer).await;
    for button in ["Pause", "Abort", "Retry this group"] {
        assert!(
            a.body.contains(&format!(">{button}</button>")),
            "an engineer sees {button}"
        );
    }
    assert!(
        !a.body.contains(">Approve</button>"),
        "nothing to approve while running"
    );
    // A forged POST: no CSRF token, then a wrong one. The campaign stays.
    for form in [
        "action=pause".to_owned(),
        "action=pause&csrf=nope".to_owned(),
    ] {
        let a = ui
            .post(&format!("/ui/campaigns/{id}/action"), &engineer, &form)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form}");
        assert!(a.body.contains("csrf"), "{}", a.body);
    }
    assert_eq!(
        ui.p.manager.campaign(&id).await.unwrap().state.as_str(),
        "running"
    );
    let a = ui
        .post(
            &format!("/ui/campaigns/{id}/action"),
            &engineer,
            &format!("csrf={}&action=pause&reason=look+at+E42", engineer.csrf),
        )
        .await;
    assert_eq!(
        (a.status, a.location()),
        (StatusCode::SEE_OTHER, &*format!("/ui/campaigns/{id}"))
    );
    assert_eq!(
        ui.p.manager.campaign(&id).await.unwrap().state.as_str(),
        "paused"
    );
    let a = ui.get(&format!("/ui/campaigns/{id}"), &engineer).await;
    assert!(
        a.body.contains(">Resume</button>") && a.body.contains("look at E42"),
        "{}",
        a.body
    );
    let a = ui
        .post(
            &format!("/ui/campaigns/{id}/action"),
            &engineer,
            &format!("csrf={}&action=explode", engineer.csrf),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body
            .contains("unknown campaign action &quot;explode&quot;"),
        "{}",
        a.body
    );
}

async fn a_failure_group_downloads_and_retries(ui: Ui) {
    let id = ui.campaign(5).await;
    // Declined by two drivers (one attempt of two used), and a failure out
    // of retries.
    for i in [1, 3] {
        ui.report(&id, i, ActionState::Rejected, "driver declined", 1)
            .await;
    }
    ui.fail(&id, 4, "disk full").await;
    let b = ui.login("erin2", Role::Engineer).await;
    let csv = ui
        .get(
            &format!("/ui/campaigns/{id}/failures.csv?reason=driver%20declined"),
            &b,
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines,
        vec![
            "vin,reason",
            &format!("{},driver declined", vin(1)),
            &format!("{},driver declined", vin(3)),
        ]
    );
    let a = ui
        .post(
            &format!("/ui/campaigns/{id}/retry"),
            &b,
            "reason=driver+declined",
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "no csrf, no retry");
    let a = ui
        .post(
            &format!("/ui/campaigns/{id}/retry"),
            &b,
            &format!("csrf={}&reason=driver+declined", b.csrf),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(a.location().contains("retried=2"), "{}", a.location());
    for i in [1, 3] {
        let (_, state) = ui.p.action_of(&id, &vin(i)).await;
        assert_ne!(state, "rejected", "vehicle {i} is offered the update again");
    }
    assert_eq!(
        ui.p.action_of(&id, &vin(4)).await.1,
        "failed",
        "the other group stays"
    );
    let page = ui.get(a.location(), &b).await;
    assert_eq!(
        page.body.matches(">Retry this group</button>").count(),
        0,
        "no group is left with retries: {}",
        page.body
    );
    assert!(
        page.body.contains("2 vehicles offered the update again"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("retry-group"),
        "the retry is in the audit trail"
    );
}

async fn a_vehicle_page_explains_and_escapes(ui: Ui) {
    let id = ui.campaign(2).await;
    let patch: ota_common::vehicle::VehiclePatch = serde_json::from_value(serde_json::json!({
        "vin": vin(0), "attributes": {"nickname": "<script>alert('x')</script>"}
    }))
    .unwrap();
    ui.p.vehicles.upsert("dealer", patch).await.unwrap();
    ui.report(&id, 0, ActionState::Downloading, "fetching <b>bold</b>", 1)
        .await;
    let b = ui.login("sam", Role::Viewer).await;
    let a = ui.get(&format!("/ui/vehicles/{}", vin(0)), &b).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(!a.body.contains("<script>alert"), "vehicle data is escaped");
    assert!(a.body.contains("&lt;script&gt;alert"), "and shown as text");
    assert!(a.body.contains("fetching &lt;b&gt;bold&lt;/b&gt;"));
    for text in [
        "Inventory",
        "manufacturing",
        "dealer",
        "Staged document",
        "bms-fw",
        "downloading",
        "vehicle.model == &quot;ID.4&quot;",
        "won",
    ] {
        assert!(a.body.contains(text), "vehicle page lacks {text:?}");
    }
    let a = ui.get("/ui/vehicles/WVWZZZE1ZMP999999", &b).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.body.contains("no vehicle WVWZZZE1ZMP999999"),
        "{}",
        a.body
    );
    let a = ui.get("/ui/vehicles/not-a-vin", &b).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("invalid vin"), "{}", a.body);
    let a = ui
        .get(&format!("/ui/vehicles?vin={}", vin(1).to_lowercase()), &b)
        .await;
    assert_eq!(
        (a.status, a.location()),
        (StatusCode::SEE_OTHER, &*format!("/ui/vehicles/{}", vin(1)))
    );
    let a = ui.get("/ui/campaigns/no-such-campaign", &b).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(!a.body.contains("panicked"));
    let a = ui.get("/ui/no/such/page", &b).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

async fn the_health_page_lists_roles_and_staging(ui: Ui) {
    let b = ui.login("ops", Role::Viewer).await;
    let a = ui.get("/ui/health", &b).await;
    assert_eq!(a.status, StatusCode::OK);
    for text in [
        "campaign-manager",
        "here",
        "Staged vehicles",
        "Queue depth",
        "Metrics are not recorded",
    ] {
        assert!(
            a.body.contains(text),
            "health page lacks {text:?}: {}",
            a.body
        );
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Ui::new(ota_tests::db::sqlite().await).await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Ui::new(ota_tests::db::postgres().await).await).await;
            })*
        }
    };
}

on_both!(
    without_a_session_pages_redirect_to_login,
    wrong_tokens_get_a_clear_message,
    logout_ends_the_session_and_needs_the_csrf_token,
    campaigns_list_shows_progress_and_filters,
    a_campaign_page_shows_waves_triage_and_role_buttons,
    a_failure_group_downloads_and_retries,
    a_vehicle_page_explains_and_escapes,
    the_health_page_lists_roles_and_staging,
);
