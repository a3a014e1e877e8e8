//! The token store's behaviour, on SQLite and on the real PostgreSQL.

use ota_auth::{AuthError, Role, TokenStore};
use ota_common::{CodedError, ErrorCode};

async fn created_tokens_authenticate_with_their_role(s: TokenStore) {
    let t = s.create("alice", Role::Engineer).await.unwrap();
    let who = s.authenticate(&t.token).await.unwrap();
    assert_eq!(who, t.info);
    assert_eq!(who.role, Role::Engineer);
}

async fn wrong_and_revoked_tokens_are_unauthenticated(s: TokenStore) {
    let t = s.create("bob", Role::Viewer).await.unwrap();
    for bad in ["", "Bearer x", "ota_wrong", &format!("{}x", t.token)] {
        let err = s.authenticate(bad).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated, "{bad:?}");
    }
    s.authenticate(&t.token)
        .await
        .expect("valid before revoke (and now cached)");
    let revoked = s.revoke(&t.info.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        s.authenticate(&t.token).await,
        Err(AuthError::BadToken)
    ));
    let err = s.revoke("no-such-id").await.unwrap_err();
    assert_eq!(err.to_string(), "token no-such-id not found");
}

async fn secrets_are_stored_hashed(s: TokenStore, db: ota_db::Db) {
    let t = s.create("carol", Role::Admin).await.unwrap();
    let stored: Vec<String> = ota_db::with_pool!(&db, pool => {
        sqlx::query_scalar("SELECT token_hash FROM api_tokens").fetch_all(pool).await.unwrap()
    });
    assert_eq!(stored, vec![ota_auth::hash_secret(&t.token)]);
    assert!(!stored[0].contains(&t.token[4..]));
}

async fn bootstrap_happens_once_per_database(s: TokenStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = s
        .bootstrap(dir.path())
        .await
        .unwrap()
        .expect("first start writes a token");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        s.authenticate(secret.trim()).await.unwrap().role,
        Role::Admin
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

async fn invalid_names_are_rejected(s: TokenStore) {
    let err = s.create("  ", Role::Viewer).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(s.list().await.unwrap().is_empty());
}

macro_rules! conformance {
    ($($name:ident),*) => {
        mod sqlite {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let t = ota_tests::db::sqlite().await;
                super::$name(TokenStore::new(t.db.clone())).await;
            })*
            #[tokio::test]
            async fn secrets_are_stored_hashed() {
                let t = ota_tests::db::sqlite().await;
                super::secrets_are_stored_hashed(TokenStore::new(t.db.clone()), t.db.clone()).await;
            }
        }
        mod postgres {
            use super::*;
            $(#[tokio::test]
            async fn $name() {
                let t = ota_tests::db::postgres().await;
                super::$name(TokenStore::new(t.db.clone())).await;
            })*
            #[tokio::test]
            async fn secrets_are_stored_hashed() {
                let t = ota_tests::db::postgres().await;
                super::secrets_are_stored_hashed(TokenStore::new(t.db.clone()), t.db.clone()).await;
            }
        }
    };
}

conformance!(
    created_tokens_authenticate_with_their_role,
    wrong_and_revoked_tokens_are_unauthenticated,
    bootstrap_happens_once_per_database,
    invalid_names_are_rejected
);
