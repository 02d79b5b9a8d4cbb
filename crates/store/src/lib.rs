//! Durable state: user accounts and message history (`history.rs`) on PostgreSQL (cluster) or SQLite (standalone), with embedded
//! migrations. Plain `query`/`query_as` keep the build free of a live database.
#![forbid(unsafe_code)]

mod history;
mod users;

use std::str::FromStr;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use history::{LoggedMessage, Page};
pub use users::User;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("that username is taken")]
    UsernameTaken,
    #[error("not found")]
    NotFound,
    #[error("the database URL is not supported: {0} (use postgres:// or sqlite://)")]
    BadUrl(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A connection pool to one of the supported databases.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Store {
    /// Connects lazily-checked pools; `postgres://` or `sqlite://` (created if missing).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect(url)
                .await?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(StoreError::BadUrl(
                url.split(':').next().unwrap_or_default().to_owned(),
            ))
        }
    }

    /// Applies the embedded migrations of this database kind.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
            Self::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }
}
