//! The token store's behaviour, on SQLite and on the real PostgreSQL.

use std::path::Path;

use ota_auth::sessions::Sessions;
use ota_auth::{AuthError, PrincipalKind, Role, TokenInfo, TokenRequest, TokenStore};
use ota_common::{CodedError, ErrorCode};

fn request(role: &str, name: Option<&str>, principal: Option<&str>) -> TokenRequest {
    TokenRequest {
        role: role.into(),
        name: name.map(Into::into),
        principal: principal.map(Into::into),
        kind: None,
    }
}

/// (actor, entity, entity_id, action, detail) of every audit entry, oldest first.
async fn audit_log(db: &ota_db::Db) -> Vec<(String, String, String, String, serde_json::Value)> {
    let rows: Vec<(String, String, String, String, String)> = ota_db::with_pool!(db, pool => {
        sqlx::query_as("SELECT actor, entity, entity_id, action, detail FROM audit_log ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    rows.into_iter()
        .map(|(a, e, id, act, d)| (a, e, id, act, serde_json::from_str(&d).unwrap()))
        .collect()
}

async fn created_tokens_authenticate_with_their_role(s: TokenStore, _db: ota_db::Db) {
    let t = s.create("alice", Role::Engineer).await.unwrap();
    let who = s.authenticate(&t.token).await.unwrap();
    assert_eq!(who, t.info);
    assert_eq!(who.role, Role::Engineer);
    assert_eq!(
        (who.principal.as_str(), who.principal_kind),
        ("alice", PrincipalKind::Person)
    );
}

async fn wrong_and_revoked_tokens_are_unauthenticated(s: TokenStore, db: ota_db::Db) {
    let admin = s.create("admin", Role::Admin).await.unwrap().info;
    let t = s.create("bob", Role::Viewer).await.unwrap();
    for bad in ["", "Bearer x", "ota_wrong", &format!("{}x", t.token)] {
        let err = s.authenticate(bad).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated, "{bad:?}");
    }
    s.authenticate(&t.token)
        .await
        .expect("valid before revoke (and now cached)");
    let revoked = s.revoke(&admin, &t.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        s.authenticate(&t.token).await,
        Err(AuthError::BadToken)
    ));
    let again = s.revoke(&admin, &t.info.id).await.unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "the first revoke counts"
    );
    let err = s.revoke(&admin, "no-such-id").await.unwrap_err();
    assert_eq!(err.to_string(), "token no-such-id not found");
    let revokes: Vec<_> = audit_log(&db)
        .await
        .into_iter()
        .filter(|e| e.3 == "revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "one revoke, one entry: {revokes:?}");
    let (actor, entity, id, _, detail) = &revokes[0];
    assert_eq!((actor.as_str(), entity.as_str()), ("admin", "token"));
    assert_eq!(id, &t.info.id);
    assert_eq!(detail["principal"], "bob");
    assert_eq!(detail["by_token"], "admin");
}

async fn secrets_are_stored_hashed(s: TokenStore, db: ota_db::Db) {
    let t = s.create("carol", Role::Admin).await.unwrap();
    let stored: Vec<String> = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT token_hash FROM api_tokens").fetch_all(pool).await.unwrap()
    });
    assert_eq!(stored, vec![ota_auth::hash_secret(&t.token)]);
    assert!(!stored[0].contains(&t.token[4..]));
}

async fn bootstrap_happens_once_per_database(s: TokenStore, _db: ota_db::Db) {
    let dir = tempfile::tempdir().unwrap();
    let path = s
        .bootstrap(dir.path())
        .await
        .unwrap()
        .expect("first start writes a token");
    let secret = std::fs::read_to_string(&path).unwrap();
    let who = s.authenticate(secret.trim()).await.unwrap();
    assert_eq!(who.role, Role::Admin);
    assert_eq!(
        (
            who.principal.as_str(),
            who.principal_kind,
            who.name.as_str()
        ),
        ("admin", PrincipalKind::Person, "bootstrap-admin")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let other = tempfile::tempdir().unwrap();
    assert_eq!(
        s.bootstrap(other.path()).await.unwrap(),
        None,
        "second start creates nothing"
    );
    assert_eq!(s.list().await.unwrap().len(), 1);
}

/// The admin secret must not land in a file someone else chose: a symlink
/// at `admin.token` is replaced, its target left as it was.
#[cfg(unix)]
async fn bootstrap_never_writes_through_a_symlink(s: TokenStore, _db: ota_db::Db) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("admin.token");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let written = s.bootstrap(dir.path()).await.unwrap().expect("a token");
    assert_eq!(written, path);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "the link itself was replaced");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        s.authenticate(secret.trim()).await.unwrap().principal,
        "admin"
    );
}

/// A dangling link must not create its target either.
#[cfg(unix)]
async fn bootstrap_does_not_follow_a_dangling_symlink(s: TokenStore, _db: ota_db::Db) {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("planted");
    let path = dir.path().join("admin.token");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    s.bootstrap(dir.path()).await.unwrap().expect("a token");
    assert!(!target.exists(), "nothing was created through the link");
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_file());
}

/// A file left by an earlier database (readable by all) is replaced by a
/// private one holding the new secret.
#[cfg(unix)]
async fn bootstrap_replaces_a_stale_file_with_a_private_one(s: TokenStore, _db: ota_db::Db) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, "ota_stale\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.bootstrap(dir.path()).await.unwrap().expect("a token");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_ne!(secret.trim(), "ota_stale");
    s.authenticate(secret.trim()).await.unwrap();
}

async fn invalid_names_are_rejected(s: TokenStore, _db: ota_db::Db) {
    let err = s.create("  ", Role::Viewer).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(s.list().await.unwrap().is_empty());
}

/// A second token of the same person is the same person: a token is made
/// for the caller's own principal unless another one is named.
async fn tokens_belong_to_the_callers_principal_by_default(s: TokenStore, db: ota_db::Db) {
    let admin = s.create("admin", Role::Admin).await.unwrap().info;
    let second = s
        .issue(&admin, &request("approver", Some("ann"), None))
        .await
        .unwrap();
    assert_eq!(
        (second.info.name.as_str(), second.info.principal.as_str()),
        ("ann", "admin"),
        "the name is only a label"
    );
    assert!(!second.principal_created);
    let who = s.authenticate(&second.token).await.unwrap();
    assert_eq!(who.principal, "admin");
    // No principal "ann" came into being.
    let principals: Vec<String> = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT name FROM principals ORDER BY name").fetch_all(pool).await.unwrap()
    });
    assert_eq!(principals, vec!["admin"]);
    // Unlabelled: labelled after the principal.
    let plain = s
        .issue(&admin, &request("viewer", None, None))
        .await
        .unwrap();
    assert_eq!(plain.info.name, "admin");
}

/// Naming another principal provisions them, and the audit log says who
/// provisioned whom, and with which token.
async fn another_principal_is_provisioned_and_audited(s: TokenStore, db: ota_db::Db) {
    let admin = s.create("admin", Role::Admin).await.unwrap().info;
    let admin_laptop: TokenInfo = s
        .issue(&admin, &request("admin", Some("laptop"), None))
        .await
        .unwrap()
        .info;
    let ann = s
        .issue(&admin_laptop, &request("approver", None, Some("ann")))
        .await
        .unwrap();
    assert!(ann.principal_created);
    assert_eq!(
        (
            ann.info.principal.as_str(),
            ann.info.name.as_str(),
            ann.info.principal_kind
        ),
        ("ann", "ann", PrincipalKind::Person)
    );
    let again = s
        .issue(&admin, &request("viewer", Some("phone"), Some("ann")))
        .await
        .unwrap();
    assert!(!again.principal_created, "ann exists now");
    let mut ci = request("engineer", None, Some("ci"));
    ci.kind = Some("service".into());
    let ci = s.issue(&admin, &ci).await.unwrap();
    assert_eq!(ci.info.principal_kind, PrincipalKind::Service);
    assert_eq!(
        s.authenticate(&ci.token).await.unwrap().principal_kind,
        PrincipalKind::Service
    );

    let log = audit_log(&db).await;
    let made: Vec<_> = log.iter().filter(|e| e.1 == "principal").collect();
    let names: Vec<(&str, &str)> = made.iter().map(|e| (e.0.as_str(), e.2.as_str())).collect();
    assert_eq!(
        names,
        vec![("system", "admin"), ("admin", "ann"), ("admin", "ci")],
        "who provisioned whom"
    );
    assert_eq!(made[1].4["kind"], "person");
    assert_eq!(made[1].4["by_token"], "laptop");
    assert_eq!(made[2].4["kind"], "service");
    let issued = log
        .iter()
        .find(|e| e.1 == "token" && e.2 == ann.info.id)
        .expect("the token's issue is audited");
    assert_eq!((issued.0.as_str(), issued.3.as_str()), ("admin", "create"));
    assert_eq!(issued.4["principal"], "ann");
    assert_eq!(issued.4["role"], "approver");
    assert_eq!(issued.4["by_token"], "laptop");
}

async fn principal_requests_are_checked(s: TokenStore, db: ota_db::Db) {
    let admin = s.create("admin", Role::Admin).await.unwrap().info;
    s.issue(&admin, &request("viewer", None, Some("ann")))
        .await
        .unwrap();
    let before = s.list().await.unwrap().len();
    let mut svc = request("viewer", None, Some("ann"));
    svc.kind = Some("service".into());
    let err = s.issue(&admin, &svc).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(
        err.to_string(),
        "principal \"ann\" is a person, not a service"
    );
    for (req, msg) in [
        (
            request("viewer", None, Some("ann lee")),
            "invalid principal name \"ann lee\"",
        ),
        (
            request("viewer", None, Some("system")),
            "principal name \"system\" is reserved",
        ),
        (request("root", None, Some("bo")), "unknown role \"root\""),
        (
            TokenRequest {
                kind: Some("robot".into()),
                ..request("viewer", None, Some("bo"))
            },
            "unknown principal kind \"robot\"",
        ),
    ] {
        let err = s.issue(&admin, &req).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{req:?}");
        assert!(err.to_string().starts_with(msg), "{err}");
    }
    let long = "x".repeat(100_000);
    let err = s
        .issue(&admin, &request("viewer", None, Some(&long)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().len() < 200,
        "bounded: {}",
        err.to_string().len()
    );
    assert_eq!(s.list().await.unwrap().len(), before, "nothing was created");
    let principals: i64 = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM principals").fetch_one(pool).await.unwrap()
    });
    assert_eq!(principals, 2);
}

/// Brings `db` (empty) to the schema before principals and fills in tokens
/// and a draft as that schema had them.
async fn legacy_schema(db: &ota_db::Db) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(db.backend());
    let mut m = sqlx::migrate::Migrator::new(dir).await.unwrap();
    m.migrations = m
        .migrations
        .iter()
        .filter(|m| m.version <= 3)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    ota_db::with_pool!(db, pool => {
        m.run(pool).await.unwrap();
        for (id, name, role) in LEGACY {
            sqlx::query("INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id).bind(name).bind(role).bind(ota_auth::hash_secret(&legacy_secret(id))).bind(1_000i64)
                .execute(pool).await.unwrap();
        }
        sqlx::query("INSERT INTO campaigns (id, name, state, spec, plan, priority, created_by, created_at, updated_at) \
                     VALUES ('c1', 'old', 'draft', '', '{}', 0, 'bootstrap-admin', 1000, 1000)")
            .execute(pool).await.unwrap();
    });
}

const LEGACY: [(&str, &str, &str); 4] = [
    ("t1", "bootstrap-admin", "admin"),
    ("t2", "carol", "approver"),
    ("t3", "carol", "viewer"),
    ("t4", "team lead", "approver"),
];

fn legacy_secret(id: &str) -> String {
    format!("ota_legacy_{id}")
}

/// An earlier database keeps working: each token name becomes a person,
/// the bootstrap token's is `admin`, and what the bootstrap token created
/// is the admin's (else the admin could approve their own old draft).
async fn a_database_from_before_principals_keeps_working(url: &str) {
    let db = ota_db::Db::connect(url, &Default::default()).await.unwrap();
    let s = TokenStore::new(db.clone());
    let admin = s.authenticate(&legacy_secret("t1")).await.unwrap();
    assert_eq!(
        (
            admin.principal.as_str(),
            admin.name.as_str(),
            admin.principal_kind,
            admin.role
        ),
        (
            "admin",
            "bootstrap-admin",
            PrincipalKind::Person,
            Role::Admin
        )
    );
    let carol = s.authenticate(&legacy_secret("t2")).await.unwrap();
    assert_eq!(carol.principal, "carol");
    let lead = s.authenticate(&legacy_secret("t4")).await.unwrap();
    assert_eq!(lead.principal, "team lead", "old names stay as they were");
    let list = s.list().await.unwrap();
    assert_eq!(
        list.iter().filter(|t| t.principal == "carol").count(),
        2,
        "carol's two tokens are one person"
    );
    // A legacy name can still be named, though new principals need handles.
    s.issue(
        &admin,
        &request("viewer", Some("tablet"), Some("team lead")),
    )
    .await
    .unwrap();
    let created_by: String = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT created_by FROM campaigns WHERE id = 'c1'").fetch_one(pool).await.unwrap()
    });
    assert_eq!(created_by, "admin");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(s.bootstrap(dir.path()).await.unwrap(), None);
}

async fn a_session_lasts_until_logout_and_knows_its_token(s: TokenStore, db: ota_db::Db) {
    let t = s.create("ada", Role::Engineer).await.unwrap();
    let sessions = Sessions::new(s.clone());
    let (secret, opened) = sessions.login(&t.token).await.unwrap();
    assert_eq!(opened.token.principal, "ada");
    assert_ne!(secret, t.token, "the cookie never carries the token");
    let stored: Vec<String> = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT id_hash FROM ui_sessions").fetch_all(pool).await.unwrap()
    });
    assert_eq!(
        stored,
        vec![ota_auth::hash_secret(&secret)],
        "only the digest is stored"
    );
    let again = sessions.get(&secret).await.unwrap();
    assert_eq!(again.csrf, opened.csrf);
    assert_eq!(again.token.role, Role::Engineer);
    sessions.logout(&secret).await.unwrap();
    assert!(matches!(
        sessions.get(&secret).await,
        Err(AuthError::BadToken)
    ));
}

async fn wrong_tokens_and_revoked_tokens_end_sessions(s: TokenStore, _db: ota_db::Db) {
    let admin = s.create("root", Role::Admin).await.unwrap();
    let t = s.create("bob", Role::Viewer).await.unwrap();
    let sessions = Sessions::new(s.clone());
    assert!(matches!(
        sessions.login("ota_not-a-token").await,
        Err(AuthError::BadToken)
    ));
    assert!(matches!(
        sessions.get("no-such-session").await,
        Err(AuthError::BadToken)
    ));
    let (secret, _) = sessions.login(&t.token).await.unwrap();
    let (other, _) = sessions.login(&admin.token).await.unwrap();
    s.revoke(&admin.info, &t.info.id).await.unwrap();
    assert!(matches!(
        sessions.get(&secret).await,
        Err(AuthError::BadToken)
    ));
    assert!(sessions.get(&other).await.is_ok(), "other sessions go on");
}

async fn sessions_expire(s: TokenStore, _db: ota_db::Db) {
    let t = s.create("eve", Role::Viewer).await.unwrap();
    let sessions = Sessions::new(s).with_ttl(std::time::Duration::ZERO);
    let (secret, _) = sessions.login(&t.token).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(matches!(
        sessions.get(&secret).await,
        Err(AuthError::BadToken)
    ));
}

macro_rules! conformance {
    ($($(#[$attr:meta])* $name:ident),*) => {
        mod sqlite {
            use super::*;
            $($(#[$attr])*
            #[tokio::test]
            async fn $name() {
                let t = ota_tests::db::sqlite().await;
                super::$name(TokenStore::new(t.db.clone()), t.db.clone()).await;
            })*

            #[tokio::test]
            async fn a_database_from_before_principals_keeps_working() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("ota.db").display());
                let opts = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
                    .unwrap()
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                let db = ota_db::Db::Sqlite(pool);
                legacy_schema(&db).await;
                db.close().await;
                super::a_database_from_before_principals_keeps_working(&url).await;
            }
        }
        mod postgres {
            use super::*;
            $($(#[$attr])*
            #[tokio::test]
            async fn $name() {
                let t = ota_tests::db::postgres().await;
                super::$name(TokenStore::new(t.db.clone()), t.db.clone()).await;
            })*

            #[tokio::test]
            async fn a_database_from_before_principals_keeps_working() {
                // A fresh database, emptied of the current schema.
                let t = ota_tests::db::postgres().await;
                ota_db::with_pool!(&t.db, pool => {
                    sqlx::query("DROP SCHEMA public CASCADE").execute(pool).await.unwrap();
                    sqlx::query("CREATE SCHEMA public").execute(pool).await.unwrap();
                });
                legacy_schema(&t.db).await;
                super::a_database_from_before_principals_keeps_working(&t.url).await;
            }
        }
    };
}

conformance!(
    created_tokens_authenticate_with_their_role,
    wrong_and_revoked_tokens_are_unauthenticated,
    secrets_are_stored_hashed,
    bootstrap_happens_once_per_database,
    #[cfg(unix)]
    bootstrap_never_writes_through_a_symlink,
    #[cfg(unix)]
    bootstrap_does_not_follow_a_dangling_symlink,
    #[cfg(unix)]
    bootstrap_replaces_a_stale_file_with_a_private_one,
    invalid_names_are_rejected,
    tokens_belong_to_the_callers_principal_by_default,
    another_principal_is_provisioned_and_audited,
    principal_requests_are_checked,
    a_session_lasts_until_logout_and_knows_its_token,
    wrong_tokens_and_revoked_tokens_end_sessions,
    sessions_expire
);
