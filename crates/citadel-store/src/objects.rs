//! Object backends through the `object_store` crate: a local directory
//! (default) or any S3-compatible service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{Result, StoreError};

/// Where objects live, parsed from `storage.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl StorageUrl {
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(StoreError::StorageUrl(url.into()));
            }
            return Ok(StorageUrl::Local(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                return Err(StoreError::StorageUrl(url.into()));
            }
            return Ok(StorageUrl::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        Err(StoreError::StorageUrl(url.chars().take(80).collect()))
    }
}

/// S3 settings that are not part of the URL. Credentials come from the
/// standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment
/// variables, never from the config file.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    /// PEM certificates trusted for the endpoint besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    local_root: Option<PathBuf>,
    description: String,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ObjectBackend {
    pub fn open(url: &StorageUrl, s3: &S3Options) -> Result<Self> {
        match url {
            StorageUrl::Local(root) => {
                std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
                let root = root.canonicalize().map_err(|e| StoreError::io(root, e))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| StoreError::object("the local object directory", e))?;
                Ok(ObjectBackend {
                    store: Arc::new(store),
                    prefix: String::new(),
                    description: format!("local directory {}", root.display()),
                    local_root: Some(root),
                })
            }
            StorageUrl::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                b = b.with_allow_http(s3.allow_http);
                if let Some(ca) = &s3.ca_file {
                    // Client options replace the builder's: carry over what the
                    // environment set (AWS_PROXY_URL, AWS_TIMEOUT, …), then add the roots.
                    use object_store::ClientConfigKey as K;
                    let mut client = object_store::ClientOptions::new();
                    for k in [
                        K::AllowHttp,
                        K::AllowInvalidCertificates,
                        K::NoSystemCertificates,
                        K::ConnectTimeout,
                        K::DefaultContentType,
                        K::Http1Only,
                        K::Http2Only,
                        K::Http2KeepAliveInterval,
                        K::Http2KeepAliveTimeout,
                        K::Http2KeepAliveWhileIdle,
                        K::Http2MaxFrameSize,
                        K::PoolIdleTimeout,
                        K::PoolMaxIdlePerHost,
                        K::ProxyUrl,
                        K::ProxyCaCertificate,
                        K::ProxyExcludes,
                        K::RandomizeAddresses,
                        K::ReadTimeout,
                        K::Timeout,
                        K::UserAgent,
                    ] {
                        if let Some(v) = b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Client(k)) {
                            client = client.with_config(k, v);
                        }
                    }
                    let pem = std::fs::read(ca).map_err(|e| StoreError::io(ca, e))?;
                    let certs = object_store::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| StoreError::object(format!("the S3 CA file {}", ca.display()), e))?;
                    if certs.is_empty() {
                        return Err(StoreError::object(
                            format!("the S3 CA file {}", ca.display()),
                            object_store::Error::Generic { store: "S3", source: "no PEM certificate in it".into() },
                        ));
                    }
                    for c in certs {
                        client = client.with_root_certificate(c);
                    }
                    b = b.with_client_options(client);
                }
                b = b.with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
                let store = b.build().map_err(|e| StoreError::object(format!("S3 bucket {bucket}"), e))?;
                Ok(ObjectBackend {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                    description: format!("s3 bucket {bucket}"),
                    local_root: None,
                })
            }
        }
    }

    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() { ObjPath::from(key) } else { ObjPath::from(format!("{}/{key}", self.prefix)) }
    }

    pub async fn put(&self, key: &str, data: Vec<u8>) -> Result<()> {
        self.store.put(&self.path(key), PutPayload::from(data)).await.map_err(|e| StoreError::object(key, e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let r = self.store.get(&self.path(key)).await.map_err(|e| StoreError::object(key, e))?;
        Ok(r.bytes().await.map_err(|e| StoreError::object(key, e))?.to_vec())
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::object(key, e)),
        }
    }

    /// Keys under `dir` (without the backend prefix) with their last-modified time.
    pub async fn list(&self, dir: &str) -> Result<Vec<(String, i64)>> {
        let base = self.path(dir);
        let metas: Vec<_> = self.store.list(Some(&base)).try_collect().await.map_err(|e| StoreError::object(dir, e))?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                (full.strip_prefix(&strip).unwrap_or(&full).to_string(), m.last_modified.timestamp_micros())
            })
            .collect())
    }

    /// Removes the local backend's staging files (`<object>#<n>`) under `dir`
    /// last modified at or before `cutoff_micros`. `object_store` writes an
    /// object to such a file and renames it into place; a process killed in
    /// between leaves the staging file behind, and `list` never shows it.
    /// Returns how many were removed. S3 has no such leftovers.
    pub fn remove_stale_staging(&self, dir: &str, cutoff_micros: i64) -> Result<u64> {
        let Some(root) = &self.local_root else { return Ok(0) };
        let mut removed = 0;
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&d, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&d, e))?;
                let path = entry.path();
                let meta = entry.metadata().map_err(|e| StoreError::io(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name();
                let is_staging = name
                    .to_str()
                    .and_then(|n| n.rsplit_once('#'))
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i64::MAX, |d| d.as_micros() as i64);
                if is_staging && meta.is_file() && modified <= cutoff_micros {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(&path, e)),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Makes every completed put durable before metadata refers to it.
    ///
    /// The local backend writes objects without fsync (one fsync per chunk
    /// would dominate the put); a single `syncfs` of the object directory's
    /// filesystem then flushes them all at once. S3 acknowledges a put only
    /// once it is durable, so there is nothing to do.
    pub fn sync(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            let dir = std::fs::File::open(root).map_err(|e| StoreError::io(root, e))?;
            nix::unistd::syncfs(&dir).map_err(|e| StoreError::io(root, std::io::Error::from(e)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(StorageUrl::parse("file:///tmp/x").unwrap(), StorageUrl::Local("/tmp/x".into()));
        assert_eq!(
            StorageUrl::parse("s3://bucket/a/b/").unwrap(),
            StorageUrl::S3 { bucket: "bucket".into(), prefix: "a/b".into() }
        );
        assert!(StorageUrl::parse("ftp://x").is_err());
        assert!(StorageUrl::parse("s3://").is_err());
    }
}
