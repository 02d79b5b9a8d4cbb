//! User accounts.

use sqlx::Row;

use crate::{Store, StoreError};

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
}

fn roles_of(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Store {
    /// Creates a user; `UsernameTaken` if the name exists.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let result = match self {
            Self::Postgres(pool) => sqlx::query(
                "INSERT INTO users (id, username, password_hash) VALUES ($1::uuid, $2, $3)",
            )
            .bind(&id)
            .bind(username)
            .bind(password_hash)
            .execute(pool)
            .await
            .map(drop),
            Self::Sqlite(pool) => {
                sqlx::query("INSERT INTO users (id, username, password_hash) VALUES (?, ?, ?)")
                    .bind(&id)
                    .bind(username)
                    .bind(password_hash)
                    .execute(pool)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(_) => Ok(User {
                id,
                username: username.to_owned(),
                password_hash: password_hash.to_owned(),
                roles: Vec::new(),
            }),
            Err(e) if is_unique_violation(&e) => Err(StoreError::UsernameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Looks a user up by name.
    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        const PG: &str =
            "SELECT id::text AS id, username, password_hash, roles FROM users WHERE username = $1";
        const LITE: &str =
            "SELECT id, username, password_hash, roles FROM users WHERE username = ?";
        self.fetch_user(PG, LITE, username).await
    }

    /// Looks a user up by id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        const PG: &str =
            "SELECT id::text AS id, username, password_hash, roles FROM users WHERE id = $1::uuid";
        const LITE: &str = "SELECT id, username, password_hash, roles FROM users WHERE id = ?";
        self.fetch_user(PG, LITE, id).await
    }

    async fn fetch_user(
        &self,
        pg: &'static str,
        lite: &'static str,
        arg: &str,
    ) -> Result<Option<User>, StoreError> {
        fn build(id: String, username: String, password_hash: String, roles: String) -> User {
            User {
                id,
                username,
                password_hash,
                roles: roles_of(&roles),
            }
        }
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query(pg)
                    .bind(arg)
                    .fetch_optional(pool)
                    .await?
                    .map(|row| {
                        build(
                            row.get("id"),
                            row.get("username"),
                            row.get("password_hash"),
                            row.get("roles"),
                        )
                    })
            }
            Self::Sqlite(pool) => {
                sqlx::query(lite)
                    .bind(arg)
                    .fetch_optional(pool)
                    .await?
                    .map(|row| {
                        build(
                            row.get("id"),
                            row.get("username"),
                            row.get("password_hash"),
                            row.get("roles"),
                        )
                    })
            }
        })
    }

    /// Replaces a user's password hash; `NotFound` if there is no such user.
    pub async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<(), StoreError> {
        if uuid::Uuid::parse_str(user_id).is_err() {
            return Err(StoreError::NotFound);
        }
        let changed = match self {
            Self::Postgres(pool) => {
                sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2::uuid")
                    .bind(password_hash)
                    .bind(user_id)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Self::Sqlite(pool) => sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
                .bind(password_hash)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Adds a role to a user (idempotent); `NotFound` if there is no such user.
    pub async fn grant_role(&self, username: &str, role: &str) -> Result<(), StoreError> {
        let user = self
            .user_by_name(username)
            .await?
            .ok_or(StoreError::NotFound)?;
        if user.roles.iter().any(|r| r == role) {
            return Ok(());
        }
        let mut roles = user.roles;
        roles.push(role.to_owned());
        let roles = roles.join(",");
        match self {
            Self::Postgres(pool) => {
                sqlx::query("UPDATE users SET roles = $1 WHERE username = $2")
                    .bind(roles)
                    .bind(username)
                    .execute(pool)
                    .await?;
            }
            Self::Sqlite(pool) => {
                sqlx::query("UPDATE users SET roles = ? WHERE username = ?")
                    .bind(roles)
                    .bind(username)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_are_created_found_and_promoted_on_sqlite() {
        let path = std::env::temp_dir().join(format!("onlychat-store-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("sqlite");
        store.migrate().await.expect("migrate");
        let user = store.create_user("alice", "hash").await.expect("create");
        assert!(matches!(
            store.create_user("alice", "other").await,
            Err(StoreError::UsernameTaken)
        ));
        assert_eq!(
            store.user_by_name("alice").await.expect("query"),
            Some(user.clone())
        );
        assert_eq!(
            store
                .user_by_id(&user.id)
                .await
                .expect("query")
                .map(|u| u.username),
            Some("alice".into())
        );
        store.grant_role("alice", "admin").await.expect("promote");
        store
            .grant_role("alice", "admin")
            .await
            .expect("promote twice");
        assert_eq!(
            store
                .user_by_name("alice")
                .await
                .expect("query")
                .map(|u| u.roles),
            Some(vec!["admin".into()])
        );
        assert!(matches!(
            store.grant_role("nobody", "admin").await,
            Err(StoreError::NotFound)
        ));
        drop(store);
        let _ = std::fs::remove_file(path);
    }
}
