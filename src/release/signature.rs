//! Signed releases: `release create` signs a statement naming the release and its manifest's
//! SHA-256 with a KMS asymmetric key (ECDSA P-256, `kms:Sign`); an instance whose baked config
//! holds the key's public key verifies it offline, with no API call, and applies nothing else.
//! Writing the deploy bucket alone then no longer chooses what runs as root.
//!
//! KMS signs at most 4,096 bytes as a raw message, and a manifest can be larger: what is signed
//! is the short statement [`statement`], which pins the manifest by its digest.

use anyhow::Result;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{sha256_hex, ReleaseId, SCHEMA};
use crate::error::input_error;

/// The KMS signing algorithm (and the key spec it needs: ECC_NIST_P256).
pub const ALGORITHM: &str = "ECDSA_SHA_256";

/// `releases/<id>.sig`, beside the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub schema: u32,
    pub release: ReleaseId,
    /// The key's ARN, as KMS answered.
    pub key: String,
    pub algorithm: String,
    /// The SHA-256 of the manifest's bytes, as signed (hex).
    pub manifest_sha256: String,
    /// The DER signature KMS returned, base64.
    pub signature: String,
}

/// What is signed for release `id` whose manifest is `manifest` (its exact bytes in the store).
pub fn statement(id: &ReleaseId, manifest: &[u8]) -> Vec<u8> {
    format!(
        "kicky-agent release\nschema {SCHEMA}\nid {id}\nmanifest sha256 {}\n",
        sha256_hex(manifest)
    )
    .into_bytes()
}

impl Signature {
    pub fn new(id: &ReleaseId, manifest: &[u8], key: String, der: &[u8]) -> Signature {
        Signature {
            schema: SCHEMA,
            release: id.clone(),
            key,
            algorithm: ALGORITHM.to_string(),
            manifest_sha256: sha256_hex(manifest),
            signature: base64::engine::general_purpose::STANDARD.encode(der),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("a signature serializes");
        text.push(b'\n');
        text
    }
}

/// Checks that `signature` (the bytes of `releases/<id>.sig`, `None` when there is none) signs
/// release `id`'s `manifest` with the key `public_key` (DER SubjectPublicKeyInfo). Every refusal
/// is bad input naming the release: the instance keeps the release it runs.
pub fn verify(
    public_key: &[u8],
    id: &ReleaseId,
    manifest: &[u8],
    signature: Option<&[u8]>,
) -> Result<()> {
    let refuse = |why: &str| {
        input_error(format!(
            "release {id} is refused: {why} (release.public_key requires every release to be signed by its key: `release create` with release.signing_key)"
        ))
    };
    let Some(bytes) = signature else {
        return Err(refuse("it is not signed (no releases/<id>.sig)"));
    };
    let signature: Signature =
        serde_json::from_slice(bytes).map_err(|_| refuse("its signature file does not read"))?;
    if &signature.release != id || signature.schema != SCHEMA || signature.algorithm != ALGORITHM {
        return Err(refuse(
            "its signature file is for another release or algorithm",
        ));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(&signature.signature)
        .map_err(|_| refuse("its signature is not base64"))?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        public_key,
    );
    key.verify(&statement(id, manifest), &der)
        .map_err(|_| refuse("its signature does not verify with release.public_key (another key, or the manifest changed since it was signed)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    #[test]
    fn only_the_manifest_the_key_signed_verifies() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pair = |_| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap()
        };
        let (ours, theirs) = (pair(1), pair(2));
        let public = ours.public_key().as_ref().to_vec();
        let id = ReleaseId::parse("20261207T163000000Z-3f9a1c").unwrap();
        let other = ReleaseId::parse("20261207T163000000Z-000000").unwrap();
        let manifest = b"{\"schema\": 1}\n".as_slice();
        let sign = |key: &EcdsaKeyPair, id: &ReleaseId, manifest: &[u8]| {
            let der = key.sign(&rng, &statement(id, manifest)).unwrap();
            Signature::new(id, manifest, "arn:aws:kms:k".into(), der.as_ref()).to_json()
        };
        let good = sign(&ours, &id, manifest);
        assert!(verify(&public, &id, manifest, Some(&good)).is_ok());
        let refused = [
            (None, "not signed"),
            (Some(sign(&theirs, &id, manifest)), "does not verify"),
            (Some(sign(&ours, &id, b"{}")), "does not verify"),
            (Some(sign(&ours, &other, manifest)), "another release"),
            (Some(b"garbage".to_vec()), "does not read"),
        ];
        for (signature, why) in refused {
            let err = verify(&public, &id, manifest, signature.as_deref()).unwrap_err();
            assert!(format!("{err}").contains(why), "{err}");
            assert_eq!(
                crate::error::exit_status(&err),
                crate::error::EXIT_BAD_INPUT
            );
        }
        // The manifest changed after signing: its digest no longer matches what was signed.
        assert!(verify(&public, &id, b"{\"schema\": 2}\n", Some(&good)).is_err());
    }
}
