//! `citadel artifact put|get|ls`: content-addressed, encrypted artifacts.

use super::*;

#[derive(Subcommand, Debug)]
pub(crate) enum ArtifactCmd {
    /// Store a file or directory; prints the artifact id.
    Put {
        path: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// Artifact this one was derived from (repeatable).
        #[arg(long = "parent")]
        parents: Vec<String>,
    },
    /// Restore an artifact byte for byte.
    Get {
        reference: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// List artifacts.
    Ls,
}

pub(crate) async fn run(cli: &Cli, cmd: &ArtifactCmd, out: &Out) -> Result<i32> {
    let (ws, caller) = open(cli).await?;
    match cmd {
        ArtifactCmd::Put { path, name, parents } => {
            let r = ws.artifact_put(&caller, path, name.as_deref(), parents, progress(cli.json, "put", true)).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                if std::io::stdout().is_terminal() {
                    format!(
                        "{}\n  {} in {} file(s), {} chunk(s); newly stored {} in {} chunk(s){}",
                        r.id,
                        human(r.size),
                        r.files,
                        r.chunks,
                        human(r.new_bytes),
                        r.new_chunks,
                        if r.new { "" } else { " (already stored)" }
                    )
                } else {
                    r.id.clone()
                }
            });
        }
        ArtifactCmd::Get { reference, output } => {
            let dest = output.clone().unwrap_or_else(|| PathBuf::from(reference.replace('/', "_")));
            let r = ws.artifact_get(&caller, reference, &dest, progress(cli.json, "get", true)).await;
            ws.close().await?;
            let r = r?;
            out.emit(&r, || {
                format!("restored {} ({}, {} file(s)) to {}", r.id, human(r.bytes), r.files, r.path.display())
            });
        }
        ArtifactCmd::Ls => {
            let list = ws.artifact_list(&caller).await;
            ws.close().await?;
            let list = list?;
            out.emit(&list, || {
                let mut s =
                    format!("{:<16} {:<9} {:>10} {:>6}  {:<27} NAMES\n", "ID", "KIND", "SIZE", "FILES", "CREATED");
                for a in &list {
                    s += &format!(
                        "{:<16} {:<9} {:>10} {:>6}  {:<27} {}\n",
                        &a.id.to_string()[..16],
                        a.kind.as_str(),
                        human(a.size),
                        a.file_count,
                        a.created_at.to_rfc3339(),
                        a.names.join(",")
                    );
                }
                s
            });
        }
    }
    Ok(0)
}
