//! Master keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests).
//!
//! Keys are AES-256 secret keys generated on the token with
//! `CKA_SENSITIVE = true` and `CKA_EXTRACTABLE = false`: their bytes never
//! leave it. Data keys are wrapped with `CKM_AES_GCM` on the token, with a
//! fresh random IV per wrap stored beside the ciphertext.

use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use citadel_types::Redacted;

use crate::{CryptoError, MasterKeyId, MasterKeyProvider, ProviderKind, Result, random_bytes};

const IV_LEN: usize = 12;
const LABEL_PREFIX: &str = "citadel-mk-";

/// Where to find the token. The PIN is never read from a config file: the
/// caller passes it from the environment (`CITADEL_PKCS11_PIN`) or a prompt.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Redacted<String>,
}

pub struct Pkcs11Provider {
    // Field order matters: the session must close before the context finalizes.
    session: Mutex<Session>,
    _ctx: Pkcs11,
    token_label: String,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider").field("token_label", &self.token_label).finish()
    }
}

fn p11(op: &'static str) -> impl Fn(cryptoki::error::Error) -> CryptoError {
    move |e| CryptoError::Pkcs11 { op, detail: e.to_string() }
}

impl Pkcs11Provider {
    pub fn open(cfg: &Pkcs11Config) -> Result<Self> {
        let ctx = Pkcs11::new(&cfg.module).map_err(p11("loading the PKCS#11 module"))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(p11("C_Initialize"))?;
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(p11("listing slots"))? {
            let info = ctx.get_token_info(slot).map_err(p11("reading token info"))?;
            if info.label().trim_end() == cfg.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| CryptoError::Pkcs11 {
            op: "finding the token",
            detail: format!("no token labelled {:?}", cfg.token_label),
        })?;
        let session = ctx.open_rw_session(slot).map_err(p11("opening a session"))?;
        let pin = AuthPin::new(cfg.pin.expose().clone().into());
        session.login(UserType::User, Some(&pin)).map_err(p11("logging in (check CITADEL_PKCS11_PIN)"))?;
        Ok(Pkcs11Provider { session: Mutex::new(session), _ctx: ctx, token_label: cfg.token_label.clone() })
    }

    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        self.session.lock().map_err(|_| CryptoError::Pkcs11 { op: "locking the session", detail: "poisoned".into() })
    }

    fn find(session: &Session, id: &str) -> Result<ObjectHandle> {
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(format!("{LABEL_PREFIX}{id}").into_bytes()),
            ])
            .map_err(p11("finding the key"))?;
        handles.into_iter().next().ok_or_else(|| CryptoError::UnknownMasterKey { id: id.into(), provider: "pkcs11" })
    }
}

impl MasterKeyProvider for Pkcs11Provider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Pkcs11
    }

    fn generate(&mut self) -> Result<MasterKeyId> {
        let id = citadel_types::random_id("mk-");
        let session = self.session()?;
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(format!("{LABEL_PREFIX}{id}").into_bytes()),
                ],
            )
            .map_err(p11("generating an AES key"))?;
        Ok(id)
    }

    fn wrap(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let session = self.session()?;
        let key = Self::find(&session, id)?;
        let mut iv: [u8; IV_LEN] = random_bytes()?;
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(p11("GCM parameters"))?;
        let ct = session.encrypt(&Mechanism::AesGcm(params), key, plaintext).map_err(p11("C_Encrypt"))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap(&self, id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if wrapped.len() < IV_LEN + 16 {
            return Err(CryptoError::Malformed("wrapped key is too short"));
        }
        let session = self.session()?;
        let key = Self::find(&session, id)?;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&wrapped[..IV_LEN]);
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(p11("GCM parameters"))?;
        session
            .decrypt(&Mechanism::AesGcm(params), key, &wrapped[IV_LEN..])
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt { what: "data key (PKCS#11)".into() })
    }

    fn destroy(&mut self, id: &str) -> Result<()> {
        let session = self.session()?;
        let key = Self::find(&session, id)?;
        session.destroy_object(key).map_err(p11("destroying the key"))
    }

    fn list(&self) -> Result<Vec<MasterKeyId>> {
        let session = self.session()?;
        let handles =
            session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]).map_err(p11("listing keys"))?;
        let mut ids = Vec::new();
        for h in handles {
            let attrs = session
                .get_attributes(h, &[cryptoki::object::AttributeType::Label])
                .map_err(p11("reading key labels"))?;
            for a in attrs {
                if let Attribute::Label(bytes) = a
                    && let Ok(label) = String::from_utf8(bytes)
                    && let Some(id) = label.strip_prefix(LABEL_PREFIX)
                {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }
}
