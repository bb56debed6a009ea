//! `citadel-bench sign`: model signing and verification throughput next to
//! the OpenSSF `model_signing` CLI and `openssl dgst -sha256` (the machine's
//! single-core SHA-256 limit), on the same data in one run.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use base64::Engine;
use serde::Serialize;

use crate::bench::{Cleanup, Noise, find_tool, mb_s, say, timed};

#[derive(Debug, Serialize)]
pub struct SignBench {
    pub workloads: Vec<SignWorkload>,
    pub model_signing: Option<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SignWorkload {
    pub name: String,
    pub bytes: u64,
    pub openssl_sha256_mb_s: f64,
    pub citadel_sign_mb_s: f64,
    pub citadel_verify_mb_s: f64,
    /// Shards of 64 MiB: parallel hashing within one file.
    pub citadel_sign_sharded_mb_s: f64,
    pub citadel_verify_sharded_mb_s: f64,
    pub model_signing_sign_mb_s: Option<f64>,
    pub model_signing_verify_mb_s: Option<f64>,
}

pub fn run(dir: &Path, size_mib: u64, files: u64, file_mib: u64, quiet: bool) -> Result<SignBench> {
    let root = dir.join(format!("citadel-bench-sign-{}", citadel_types::random_id("")));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _cleanup = Cleanup(root.clone(), false);
    let exe = crate::citadel_exe()?;
    let mut noise = Noise(0x0123_4567_89AB_CDEF);
    let mut notes = Vec::new();

    // A throwaway P-256 key, PKCS#8 PEM (what model_signing reads).
    let (key, der) = citadel_signing::SigningKey::generate()?;
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in base64::engine::general_purpose::STANDARD.encode(&der).as_bytes().chunks(64) {
        pem += std::str::from_utf8(line).unwrap_or_default();
        pem += "\n";
    }
    pem += "-----END PRIVATE KEY-----\n";
    let private = root.join("key.pem");
    let public = root.join("key.pub.pem");
    std::fs::write(&private, pem)?;
    std::fs::write(&public, key.public_key_pem())?;

    let big = root.join("big");
    std::fs::create_dir_all(&big)?;
    say(quiet, &format!("writing a {size_mib} MiB file and {files} files of {file_mib} MiB"));
    write_random(&big.join("model.bin"), size_mib, &mut noise)?;
    let many = root.join("many");
    std::fs::create_dir_all(&many)?;
    for i in 0..files {
        write_random(&many.join(format!("shard-{i:04}.bin")), file_mib, &mut noise)?;
    }
    let ms = find_tool("model_signing");
    if ms.is_none() {
        notes.push("model_signing CLI not found (scripts/services.sh installs it): no peer comparison".into());
    }

    let mut workloads = Vec::new();
    for (name, model, bytes) in [
        (format!("one {size_mib} MiB file"), big.join("model.bin"), size_mib << 20),
        (format!("{files} files of {file_mib} MiB"), many.clone(), files * (file_mib << 20)),
    ] {
        say(quiet, &format!("{name}: openssl dgst -sha256"));
        let mut c = Command::new("openssl");
        c.args(["dgst", "-sha256"]);
        if model.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&model)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            c.args(entries);
        } else {
            c.arg(&model);
        }
        let openssl = mb_s(bytes, timed(&mut c, "openssl dgst")?.0);
        let sig = root.join("citadel.sig");
        let run_sign = |extra: &[&str]| -> Result<f64> {
            let mut c = Command::new(&exe);
            c.arg("sign").arg(&model).arg("--key").arg(&private).arg("--signature").arg(&sig).args(extra);
            Ok(mb_s(bytes, timed(&mut c, "citadel sign")?.0))
        };
        let run_verify = || -> Result<f64> {
            let mut c = Command::new(&exe);
            c.arg("verify").arg(&model).arg("--signature").arg(&sig).arg("--public-key").arg(&public);
            Ok(mb_s(bytes, timed(&mut c, "citadel verify")?.0))
        };
        say(quiet, &format!("{name}: citadel sign and verify"));
        let sign = run_sign(&[])?;
        let verify = run_verify()?;
        let sign_sh = run_sign(&["--shard-size", "67108864"])?;
        let verify_sh = run_verify()?;
        let (mut ms_sign, mut ms_verify) = (None, None);
        if let Some(cli) = &ms {
            say(quiet, &format!("{name}: model_signing sign and verify"));
            let msig = root.join("ms.sig");
            let mut c = Command::new(cli);
            c.args(["sign", "key"]).arg(&model).arg("--private_key").arg(&private).arg("--signature").arg(&msig);
            ms_sign = Some(mb_s(bytes, timed(&mut c, "model_signing sign")?.0));
            let mut c = Command::new(cli);
            c.args(["verify", "key"]).arg(&model).arg("--public_key").arg(&public).arg("--signature").arg(&msig);
            ms_verify = Some(mb_s(bytes, timed(&mut c, "model_signing verify")?.0));
        }
        workloads.push(SignWorkload {
            name,
            bytes,
            openssl_sha256_mb_s: openssl,
            citadel_sign_mb_s: sign,
            citadel_verify_mb_s: verify,
            citadel_sign_sharded_mb_s: sign_sh,
            citadel_verify_sharded_mb_s: verify_sh,
            model_signing_sign_mb_s: ms_sign,
            model_signing_verify_mb_s: ms_verify,
        });
    }
    notes.push("all tools read from the page cache (the data was just written); files method = what the model_signing CLI verifies".into());
    Ok(SignBench { workloads, model_signing: ms.map(|p| p.display().to_string()), notes })
}

fn write_random(path: &Path, mib: u64, noise: &mut Noise) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        noise.fill(&mut buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

pub fn render(r: &SignBench) -> String {
    let mut s = String::from("citadel-bench sign\n");
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", a / b));
    for w in &r.workloads {
        s += &format!("\n{} ({:.0} MB)\n", w.name, w.bytes as f64 / 1e6);
        s += &format!("  openssl dgst -sha256 (1 core)   {:>8.0} MB/s\n", w.openssl_sha256_mb_s);
        let ms = |v: Option<f64>| v.map_or("       -".to_string(), |v| format!("{v:>8.0}"));
        for (op, plain, sharded, peer) in [
            ("sign", w.citadel_sign_mb_s, w.citadel_sign_sharded_mb_s, w.model_signing_sign_mb_s),
            ("verify", w.citadel_verify_mb_s, w.citadel_verify_sharded_mb_s, w.model_signing_verify_mb_s),
        ] {
            s += &format!(
                "  {op:<7} citadel {plain:>8.0}  sharded {sharded:>8.0}  model_signing {} MB/s   vs model_signing {}  vs openssl {:.2}x (sharded {:.2}x)\n",
                ms(peer),
                ratio(plain, peer),
                plain / w.openssl_sha256_mb_s,
                sharded / w.openssl_sha256_mb_s,
            );
        }
    }
    s += "\ntargets: sign and verify >= 3x model_signing and >= 1.5x openssl dgst -sha256 on both workloads\n";
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}
