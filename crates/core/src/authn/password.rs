//! Passwords: argon2id with the crate's recommended parameters (19 MiB, 2
//! passes). Hashing is CPU-bound for tens of milliseconds and each run holds
//! 19 MiB, so every hash and verification goes through one [`Hashing`] pool:
//! a fixed number at a time, the rest waiting briefly or refused.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{
    self, Decimal, Ident, Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, Salt, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::secret::Secret;

/// Longest password accepted: hashing cost must not be the caller's to choose.
pub const MAX_LEN: usize = 1024;

/// The most memory a stored hash may ask for (4x the 19 MiB Gatehouse uses).
const MAX_BLOCKS: usize = 4 * 19 * 1024;

thread_local! {
    /// argon2's working memory, kept for the thread's next run. Allocated
    /// anew for every run (as `Argon2::hash_password` does), 19 MiB blocks
    /// freed by many threads stay resident in the allocator's arenas: a burst
    /// of logins left the process hundreds of MiB larger for good. Kept here,
    /// it is at most one block per thread that hashes: [`Hashing`]'s few.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// argon2 as a [`PasswordHasher`] working in the thread's [`MEMORY`]; the
/// crate's own [`PasswordVerifier`] (parameters from the stored hash,
/// constant-time comparison) comes with it.
struct InMemory<'m> {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    memory: &'m RefCell<Vec<Block>>,
}

impl PasswordHasher for InMemory<'_> {
    type Params = Params;

    fn hash_password<'a>(&self, password: &[u8], salt: impl Into<Salt<'a>>) -> password_hash::Result<PasswordHash<'a>> {
        let salt = salt.into();
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let blocks = self.params.block_count();
        if blocks > MAX_BLOCKS {
            return Err(password_hash::Error::Crypto);
        }
        let mut memory = self.memory.try_borrow_mut().map_err(|_| password_hash::Error::Crypto)?;
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        let argon2 = Argon2::new(self.algorithm, self.version, self.params.clone());
        let output_len = self.params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = Output::init_with(output_len, |out| {
            argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..blocks]).map_err(Into::into)
        })?;
        Ok(PasswordHash {
            algorithm: self.algorithm.ident(),
            version: Some(self.version.into()),
            params: ParamsString::try_from(&self.params)?,
            salt: Some(salt),
            hash: Some(output),
        })
    }

    fn hash_password_customized<'a>(
        &self,
        password: &[u8],
        algorithm: Option<Ident<'a>>,
        version: Option<Decimal>,
        params: Params,
        salt: impl Into<Salt<'a>>,
    ) -> password_hash::Result<PasswordHash<'a>> {
        let algorithm = algorithm.map(Algorithm::try_from).transpose()?.unwrap_or_default();
        let version = version.map(Version::try_from).transpose()?.unwrap_or_default();
        InMemory { algorithm, version, params, memory: self.memory }.hash_password(password, salt)
    }
}

/// Runs `f` with argon2id (default parameters) in this thread's memory.
fn with_argon2<R>(f: impl FnOnce(&InMemory<'_>) -> R) -> R {
    MEMORY.with(|memory| {
        f(&InMemory { algorithm: Algorithm::Argon2id, version: Version::V0x13, params: Params::default(), memory })
    })
}

pub fn hash(password: &Secret) -> String {
    let mut salt = [0u8; 16];
    crate::authn::api_key::fill_random(&mut salt);
    #[expect(clippy::expect_used, reason = "16 random bytes always make a valid salt")]
    let salt = SaltString::encode_b64(&salt).expect("valid salt");
    #[expect(clippy::expect_used, reason = "default argon2id parameters cannot fail")]
    with_argon2(|a| a.hash_password(password.expose().as_bytes(), &salt).expect("argon2id hashing").to_string())
}

/// Verifies `password` against a stored hash. With no hash (unknown user, or a
/// user without a password) a dummy hash is checked, so the answer takes as
/// long either way and timing does not reveal which accounts exist.
pub fn verify(password: &Secret, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash(&Secret::new("gatehouse-dummy-password")));
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    with_argon2(|a| a.verify_password(password.expose().as_bytes(), &parsed).is_ok()) && real
}

/// How much password work runs at once, and how long the rest may wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashes and verifications running at once (each holds 19 MiB).
    pub concurrency: usize,
    /// Callers that may wait for a turn; beyond them, refused at once.
    pub queue: usize,
    /// The longest a caller waits for a turn before it is refused.
    pub max_wait: Duration,
}

impl Default for HashingLimits {
    /// Near the core count (more would only queue on the CPU), but at most 4:
    /// a container often sees every core of its node, and 4 runs already hold
    /// 76 MiB.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        HashingLimits { concurrency: cores.clamp(1, 4), queue: 32, max_wait: Duration::from_secs(2) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every turn is taken and the queue is full, or the wait ran out.
    #[error("password hashing is at capacity; retry in {0:?}")]
    Busy(Duration),
    #[error("password hashing failed")]
    Failed,
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs argon2id for the whole process: at most `concurrency` runs at once
/// (a semaphore), up to `queue` callers waiting at most `max_wait` for a turn,
/// and every other caller refused at once. Unbounded, each parallel
/// registration or login took 19 MiB more, so a burst of them could take the
/// process past any memory limit; bounded, the work costs at most
/// `concurrency` x 19 MiB.
///
/// A refused caller gets 503 with `Retry-After` ([`HashingError::Busy`]), not
/// 429: the server is at capacity for everyone, not this client over its own
/// budget (that is what the per-address limits on registration and login
/// answer with 429), and 503 tells a load balancer to try another replica.
///
/// The runs happen on `concurrency` threads of their own, not on tokio's
/// blocking pool, each keeping its 19 MiB of argon2 memory for the next run
/// (see [`MEMORY`]): spread over a pool of many threads, that would still be
/// one block per thread. A turn ends when the run ends, even if the caller
/// has gone.
#[derive(Clone)]
pub struct Hashing {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    limits: HashingLimits,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Hashing {
    pub fn new(limits: HashingLimits) -> Hashing {
        let concurrency = limits.concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..concurrency {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("gatehouse-argon2-{i}")).spawn(move || {
                loop {
                    // Ends when every `Hashing` handle is gone.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    // A panicking run must not take the thread with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Hashing { permits: Arc::new(Semaphore::new(concurrency)), waiting: Arc::default(), limits, jobs }
    }

    pub fn limits(&self) -> &HashingLimits {
        &self.limits
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: Secret) -> Result<String, HashingError> {
        self.run(move || hash(&password)).await
    }

    /// [`verify`], in turn.
    pub async fn verify(&self, password: Secret, stored: Option<String>) -> Result<bool, HashingError> {
        self.run(move || verify(&password, stored.as_deref())).await
    }

    /// Runs `work` in turn on a hashing thread.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashingError> {
        let permit = self.turn().await?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = work();
            drop(permit);
            let _ = done.send(out);
        });
        self.jobs.send(job).map_err(|_| HashingError::Failed)?;
        result.await.map_err(|_| HashingError::Failed)
    }

    /// A turn: at once when one is free, else after a bounded wait in a
    /// bounded queue (first come, first served).
    async fn turn(&self) -> Result<OwnedSemaphorePermit, HashingError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = || {
            metrics::counter!("gatehouse_password_hashing_refused_total").increment(1);
            HashingError::Busy(self.limits.max_wait.max(Duration::from_secs(1)))
        };
        let Some(_waiting) = Waiting::enter(&self.waiting, self.limits.queue) else { return Err(busy()) };
        match tokio::time::timeout(self.limits.max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }
}

/// One caller in the queue, counted until it leaves (also when its request
/// is dropped).
struct Waiting<'a> {
    count: &'a AtomicUsize,
}

impl<'a> Waiting<'a> {
    /// `None` when `max` callers are already waiting.
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Waiting<'a>> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Waiting { count })
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let pw = Secret::new("correct horse battery staple");
        let a = hash(&pw);
        let b = hash(&pw);
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify(&pw, Some(&a)));
        assert!(!verify(&Secret::new("wrong"), Some(&a)));
        assert!(!verify(&pw, None));
        assert!(!verify(&pw, Some("not a hash")));
    }

    #[test]
    fn hashes_match_the_crate_and_verify_either_way() {
        let pw = Secret::new("correct horse battery staple");
        let ours = hash(&pw);
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(pw.expose().as_bytes(), &parsed).is_ok());
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default().hash_password(pw.expose().as_bytes(), &salt).unwrap().to_string();
        let same_salt = with_argon2(|a| a.hash_password(pw.expose().as_bytes(), &salt).unwrap().to_string());
        assert_eq!(theirs, same_salt);
        // Other stored parameters (argon2i, less memory) verify too.
        let params = Params::new(8192, 3, 1, Some(24)).unwrap();
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x10, params);
        let other = other.hash_password(pw.expose().as_bytes(), &salt).unwrap().to_string();
        assert!(verify(&pw, Some(&other)));
        assert!(!verify(&Secret::new("wrong"), Some(&other)));
        // A stored hash may not ask for unbounded memory.
        let huge =
            "$argon2id$v=19$m=4000000,t=1,p=1$BwcHBwcHBwcHBwcHBwcHBw$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(PasswordHash::new(huge).is_ok());
        assert!(!verify(&pw, Some(huge)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_concurrency_runs_at_once_and_a_bounded_queue_waits() {
        use std::sync::atomic::AtomicUsize;
        let limits = HashingLimits { concurrency: 2, queue: 3, max_wait: Duration::from_secs(30) };
        let hashing = Hashing::new(limits);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let barrier = Arc::new(tokio::sync::Barrier::new(10));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (hashing, running, peak, gate, barrier) =
                    (hashing.clone(), running.clone(), peak.clone(), gate.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    hashing
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            let _ = gate.lock().unwrap().recv();
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        // Two run and three wait; the other five are refused at once.
        while hashing.waiting.load(Ordering::SeqCst) < 3 || running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            let _ = release.send(());
        }
        let mut refused = 0;
        for t in tasks {
            refused += usize::from(matches!(t.await.unwrap(), Err(HashingError::Busy(_))));
        }
        assert_eq!(refused, 5);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_caller_waits_no_longer_than_max_wait() {
        let limits = HashingLimits { concurrency: 1, queue: 8, max_wait: Duration::from_millis(50) };
        let hashing = Hashing::new(limits);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let busy = hashing.clone();
        let first = tokio::spawn(async move { busy.run(move || gate.recv().is_ok()).await });
        while hashing.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let second = hashing.run(|| true).await;
        assert!(matches!(second, Err(HashingError::Busy(d)) if d >= Duration::from_secs(1)), "{second:?}");
        release.send(()).unwrap();
        assert!(first.await.unwrap().unwrap());
        assert!(hashing.verify(Secret::new("x"), None).await.is_ok_and(|ok| !ok));
    }
}
