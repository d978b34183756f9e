//! Key material and frame sealing. The only I/O is reading the key file.
//!
//! The key file's bytes (trailing whitespace trimmed) are stretched with
//! HKDF-SHA256 into a 32-byte master key. Each connection derives two session
//! keys, one per direction, from the master key and both peers' hello nonces.
//! Every sealed frame uses AES-256-GCM with a 96-bit nonce made of four zero
//! bytes and a 64-bit big-endian per-direction counter; the counter also
//! travels in clear in front of the ciphertext so the receiver can tell a
//! replayed frame from a dropped one before it tries to decrypt.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::WireError;

/// Length of a hello nonce.
pub const NONCE_LEN: usize = 32;
/// Length of the GCM tag appended to every sealed frame.
pub const TAG_LEN: usize = 16;
/// Length of the clear counter in front of every sealed frame.
pub const COUNTER_LEN: usize = 8;
/// Key files shorter than this draw a warning.
pub const RECOMMENDED_KEY_LEN: usize = 32;

const MASTER_SALT: &[u8] = b"argon/1 master key";
const INFO_I2R: &[u8] = b"argon/1 initiator to responder";
const INFO_R2I: &[u8] = b"argon/1 responder to initiator";

/// Errors reading a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// Path given.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("key file {path} is empty (create one with `argon keygen PATH`)")]
    Empty {
        /// Path given.
        path: String,
    },
}

/// The shared secret every peer of a cluster holds, after HKDF stretching.
///
/// `Debug` never prints the key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Stretches raw key material (the key file's contents) into a master key.
    pub fn from_material(material: &[u8]) -> MasterKey {
        let hk = Hkdf::<Sha256>::new(Some(MASTER_SALT), material);
        let mut out = [0u8; 32];
        hk.expand(b"master", &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        MasterKey(out)
    }

    /// Reads a key file, trims trailing whitespace, warns when it is short or
    /// other users may read it, and stretches it.
    pub fn load(path: &Path) -> Result<MasterKey, KeyError> {
        let shown = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let material = raw.trim_ascii_end();
        if material.is_empty() {
            return Err(KeyError::Empty { path: shown });
        }
        if material.len() < RECOMMENDED_KEY_LEN {
            log::warn!(
                "key file {shown} holds only {} bytes; HKDF does not strengthen a short secret: \
                 make a strong one with `argon keygen PATH`",
                material.len()
            );
        }
        warn_if_shared(path, &shown);
        Ok(MasterKey::from_material(material))
    }

    /// Derives the two session keys of one connection.
    ///
    /// `initiator` and `responder` are the hello nonces of the side that
    /// connected and the side that accepted. Returns (initiator-to-responder,
    /// responder-to-initiator).
    pub fn session_keys(
        &self,
        initiator: &[u8; NONCE_LEN],
        responder: &[u8; NONCE_LEN],
    ) -> ([u8; 32], [u8; 32]) {
        let mut salt = [0u8; 2 * NONCE_LEN];
        salt[..NONCE_LEN].copy_from_slice(initiator);
        salt[NONCE_LEN..].copy_from_slice(responder);
        let hk = Hkdf::<Sha256>::new(Some(&salt), &self.0);
        let mut i2r = [0u8; 32];
        let mut r2i = [0u8; 32];
        hk.expand(INFO_I2R, &mut i2r).expect("valid length");
        hk.expand(INFO_R2I, &mut r2i).expect("valid length");
        (i2r, r2i)
    }
}

/// Warns when the key file's mode lets its group or other users at it.
#[cfg(unix)]
fn warn_if_shared(path: &Path, shown: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "key file {shown} is open to other users (mode {mode:03o}): anyone who reads it \
             can join the cluster; run `chmod 600 {shown}`"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path, _shown: &str) {}

/// Generates the text of a new key file: 32 random bytes as base64.
pub fn generate_key_text() -> std::io::Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes) + "\n")
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))
}

fn gcm_nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// Seals outgoing frames for one direction of one connection.
pub struct Sealer {
    cipher: Aes256Gcm,
    counter: u64,
}

impl Sealer {
    /// A sealer whose first frame carries counter 0.
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// Encrypts `buf` in place and returns the counter used and the tag.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> (u64, [u8; TAG_LEN]) {
        let counter = self.counter;
        self.counter += 1;
        let tag = self
            .cipher
            .encrypt_inout_detached(&gcm_nonce(counter), &[], buf.into())
            .expect("AES-GCM accepts any frame below 64 GiB");
        (counter, tag.into())
    }
}

/// Opens incoming frames for one direction of one connection.
pub struct Opener {
    cipher: Aes256Gcm,
    expected: u64,
}

impl Opener {
    /// An opener that expects counter 0 first.
    pub fn new(key: &[u8; 32]) -> Opener {
        Opener {
            cipher: Aes256Gcm::new(key.into()),
            expected: 0,
        }
    }

    /// Checks `body` (counter, ciphertext, tag) and decrypts it in place.
    /// Returns the range of `body` that now holds the plaintext.
    ///
    /// A failure on the very first frame is [`WireError::BadKey`]: the first
    /// frame is where a peer proves it holds the key.
    pub fn open_in_place(&mut self, body: &mut [u8]) -> Result<std::ops::Range<usize>, WireError> {
        if body.len() < COUNTER_LEN + TAG_LEN {
            return Err(WireError::Truncated { len: body.len() });
        }
        let mut c = [0u8; COUNTER_LEN];
        c.copy_from_slice(&body[..COUNTER_LEN]);
        let got = u64::from_be_bytes(c);
        if got < self.expected {
            return Err(WireError::Replayed {
                got,
                expected: self.expected,
            });
        }
        if got > self.expected {
            return Err(WireError::OutOfOrder {
                got,
                expected: self.expected,
            });
        }
        let end = body.len() - TAG_LEN;
        let tag = Tag::<aes_gcm::aead::consts::U16>::try_from(&body[end..])
            .map_err(|_| WireError::Truncated { len: body.len() })?;
        let first = self.expected == 0;
        self.cipher
            .decrypt_inout_detached(
                &gcm_nonce(got),
                &[],
                (&mut body[COUNTER_LEN..end]).into(),
                &tag,
            )
            .map_err(|_| {
                if first {
                    WireError::BadKey
                } else {
                    WireError::Tampered
                }
            })?;
        self.expected += 1;
        Ok(COUNTER_LEN..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        let k = MasterKey::from_material(b"test key material that is long enough");
        let (i2r, _) = k.session_keys(&[1; 32], &[2; 32]);
        (Sealer::new(&i2r), Opener::new(&i2r))
    }

    fn sealed(s: &mut Sealer, msg: &[u8]) -> Vec<u8> {
        let mut buf = msg.to_vec();
        let (c, tag) = s.seal_in_place(&mut buf);
        let mut out = c.to_be_bytes().to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        out
    }

    #[test]
    fn seal_then_open_round_trips() {
        let (mut s, mut o) = pair();
        for msg in [&b"hello"[..], b"", &[7u8; 5000]] {
            let mut f = sealed(&mut s, msg);
            let r = o.open_in_place(&mut f).unwrap();
            assert_eq!(&f[r], msg);
        }
    }

    #[test]
    fn session_keys_differ_per_direction_and_per_nonce() {
        let k = MasterKey::from_material(b"k");
        let (a, b) = k.session_keys(&[1; 32], &[2; 32]);
        let (c, _) = k.session_keys(&[1; 32], &[3; 32]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn flipped_ciphertext_bit_after_first_frame_is_tampered() {
        let (mut s, mut o) = pair();
        let mut first = sealed(&mut s, b"one");
        o.open_in_place(&mut first).unwrap();
        let mut f = sealed(&mut s, b"two");
        f[COUNTER_LEN] ^= 1;
        assert!(matches!(o.open_in_place(&mut f), Err(WireError::Tampered)));
    }

    #[test]
    fn first_frame_under_another_key_is_bad_key() {
        let (mut s, _) = pair();
        let other = MasterKey::from_material(b"another key");
        let (i2r, _) = other.session_keys(&[1; 32], &[2; 32]);
        let mut o = Opener::new(&i2r);
        let mut f = sealed(&mut s, b"hi");
        assert!(matches!(o.open_in_place(&mut f), Err(WireError::BadKey)));
    }

    #[test]
    fn short_body_is_truncated() {
        let (_, mut o) = pair();
        let mut f = vec![0u8; COUNTER_LEN + TAG_LEN - 1];
        assert!(matches!(
            o.open_in_place(&mut f),
            Err(WireError::Truncated { len: 23 })
        ));
    }

    #[test]
    fn debug_redacts_the_key() {
        let k = MasterKey::from_material(b"secret");
        assert_eq!(format!("{k:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn generated_key_text_is_32_bytes_of_base64() {
        use base64::Engine;
        let t = generate_key_text().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(t, generate_key_text().unwrap());
    }
}
