//! Password hashing: argon2id PHC strings with costs from the config.
//!
//! Verification reads the costs from the stored PHC string, so changing the flags
//! never locks anyone out. For an unknown user, login verifies against a dummy hash
//! made at start-up with the current costs, so both failures take about as long.
//! How many hashes run at once is bounded elsewhere (the worker's hashing gate).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub struct Passwords {
    argon: Argon2<'static>,
    dummy: String,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Passwords, String> {
        let params =
            Params::new(memory_kib, iterations, 1, None).map_err(|e| format!("argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut p = Passwords {
            argon,
            dummy: String::new(),
        };
        p.dummy = p
            .hash("not a real password")
            .map_err(|e| format!("argon2: {e}"))?;
        Ok(p)
    }

    /// A fresh PHC string for `password`, with a random 128-bit salt from the OS.
    pub fn hash(&self, password: &str) -> Result<String, String> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| format!("os rng: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether `password` matches `phc`; with `None`, spends the same effort and fails.
    pub fn verify(&self, password: &str, phc: Option<&str>) -> bool {
        let (phc, real) = match phc {
            Some(p) => (p, true),
            None => (self.dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        self.argon.verify_password(password.as_bytes(), &parsed).is_ok() && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let p = Passwords::new(8, 1).expect("params");
        let a = p.hash("hunter22").expect("hash");
        let b = p.hash("hunter22").expect("hash");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(p.verify("hunter22", Some(&a)));
        assert!(!p.verify("hunter23", Some(&a)));
        assert!(!p.verify("not a real password", None));
    }
}
