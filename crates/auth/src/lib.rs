//! Who a user is and whether their session still stands: access-token (JWT) keys and claims,
//! argon2id password hashing off the async executor, refresh tokens, and the session store
//! (Redis for the cluster, in memory for standalone) with its revocation feed, and the login
//! rate limits.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod limiter;
pub mod password;
pub mod revocation;
pub mod session;
pub mod session_memory;
pub mod session_redis;

pub use jwt::{Claims, JwtKeys, TokenError, TokenRules};
pub use limiter::{Limit, MemoryLimiter, RateLimiter, RedisLimiter};
pub use revocation::{Revocation, RevokedSet};
pub use session::{LoginGrant, SessionError, SessionPolicy, SessionStore};
pub use session_memory::MemorySessions;
pub use session_redis::{RedisSessions, redis_within};
