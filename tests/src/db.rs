use std::time::Duration;

use ota_db::{Db, DbOptions};
use sqlx::Connection;

pub fn admin_url() -> String {
    std::env::var("OTA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin: String, name: String },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl TestDb {
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// A new, migrated PostgreSQL database.
pub async fn postgres() -> TestDb {
    let admin = admin_url();
    let name = format!("ota_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin))
        .await
        .unwrap_or_else(|_| panic!("timed out connecting to PostgreSQL at {admin}"))
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is required for this test but {admin} is not reachable: {e} (run scripts/test.sh, which starts it)")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    conn.close().await.ok();
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("OTA_TEST_DATABASE_URL {admin} has no database path"),
    };
    let db = Db::connect(&url, &DbOptions::default())
        .await
        .expect("connect to test database");
    TestDb {
        db,
        url,
        cleanup: Cleanup::Postgres { admin, name },
    }
}

/// A new, migrated SQLite database in a temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("ota.db").display());
    let db = Db::connect(&url, &DbOptions::default())
        .await
        .expect("open sqlite test database");
    TestDb {
        db,
        url,
        cleanup: Cleanup::Sqlite(dir),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin, name } = &self.cleanup {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop runs inside the test's runtime; a thread with its own
            // runtime can block on the cleanup. The pool is not closed here:
            // its connections belong to the (now blocked) test runtime, and
            // FORCE ends them from the server side.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}
